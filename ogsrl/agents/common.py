"""Pieces every agent shares: seeded MLPs, input normalisation, the action density family, observation and action
checks, the checkpoint directory format and the trajectory-table reader.

Action density convention (shared with the simulator's clinician): each action dimension is a mixture of a point mass
at 0 and a continuous density on (0, max]; log-densities are w.r.t. (δ0 + Lebesgue) per dimension, in physical units.

Our policies use a *hurdle* (zero-inflated) Gaussian per dimension on a log-scaled, physically bounded action,
optionally a mixture of K such components shared by both dimensions (K = 1: one hurdle per dimension):

    P(a = 0)             = p0(s)                                           (a logistic head)
    y = log(1 + a/c) / log(1 + max/c) ∈ (0, 1]                              (c = recording resolution)
    y | a > 0            ~ N(μ(s), σ(s)²) truncated to (0, 1]
    log p(a), a > 0      = log(1 − p0) + log N(y; μ, σ²) − log Z − log((c + a)·log(1 + max/c))
    Z                    = Φ((1 − μ)/σ) − Φ(−μ/σ)
    p(a | s)             = Σ_k w_k(s) Π_j p_k(a_j | s)                      (mixture over components k)

Why not a censored (Tobit) Gaussian: clinicians either give nothing or an amount far from zero (500 mL, not 5 mL),
and amounts are multiplicative (log-normal-like); a Tobit ties the mass at 0 to the mean amount through μ/σ and
cannot fit both, which inflates importance-weight variance. Truncating at the physical maximum (instead of clipping)
keeps the distribution free of a second atom at max, so it stays exactly within the (δ0 + Lebesgue) convention.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from scipy import special, stats
from torch import nn

from ogsrl import features
from ogsrl.data.schema import load_table_schema
from ogsrl.errors import DataError
from ogsrl.io import atomic_path

FloatArray = npt.NDArray[np.floating]

FORMAT_VERSION = 2
"""Checkpoint format version written to config.json; loaders refuse other versions (1: the policy owned its
optimiser and there was no seed dimension; retrain with `ogsrl train-policies`)."""
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "weights.pt"

ACTION_MAX = np.array([features.ACTION_BOUNDS[a][1] for a in features.ACTIONS], dtype=np.float64)
"""Physical upper bound per action dimension, shape (A,); the lower bound is 0 for both."""
ACTION_RESOLUTION = np.array([10.0, 0.001])
"""c per action dimension: the recording resolution (10 mL, 0.001 µg/kg/min); the log scale is linear below it"""
LOG_SPAN = np.log1p(ACTION_MAX / ACTION_RESOLUTION)
"""log(1 + max/c) per dimension: maps the scaled action onto (0, 1]"""
LOG_STD_MIN = -6.0
"""lowest log σ of the scaled non-zero action"""
LOG_STD_MAX = 1.0
"""highest log σ of the scaled non-zero action"""
MU_MIN, MU_MAX = -0.5, 1.5
"""range of μ on the scaled axis (keeps the truncation normaliser Z well away from underflow)"""


@dataclass(frozen=True, slots=True)
class ActionSpace:
    """The continuous action space a hurdle density lives on: per column a physical range [0, max] and the
    recording resolution c of the log scale."""

    columns: tuple[str, ...]
    """action columns, in order (A)"""
    max: tuple[float, ...]
    """physical upper bound per column"""
    resolution: tuple[float, ...]
    """c per column: the log scale is linear below it"""
    units: tuple[str, ...]
    """unit per column"""

    @property
    def max_arr(self) -> FloatArray:
        return np.asarray(self.max, dtype=np.float64)

    @property
    def res_arr(self) -> FloatArray:
        return np.asarray(self.resolution, dtype=np.float64)

    @property
    def span_arr(self) -> FloatArray:
        """log(1 + max/c) per column"""
        return np.log1p(self.max_arr / self.res_arr)

    def subset(self, idx: Sequence[int]) -> ActionSpace:
        """The space of the columns ``idx`` (in that order)."""
        return ActionSpace(tuple(self.columns[i] for i in idx), tuple(self.max[i] for i in idx),
                           tuple(self.resolution[i] for i in idx), tuple(self.units[i] for i in idx))


CANONICAL_SPACE = ActionSpace(tuple(features.ACTIONS), tuple(ACTION_MAX.tolist()), tuple(ACTION_RESOLUTION.tolist()),
                              tuple(features.ACTION_UNITS[a] for a in features.ACTIONS))
"""IV fluid and NE-equivalent dose of the canonical (MIMIC-IV / demo) table"""
RESOLUTION_SHARE = 1e-3
"""a bring-your-own continuous action's resolution c: this share of its declared maximum"""


@dataclass(frozen=True, slots=True)
class DiscreteSpace:
    """A discrete action column with ``n`` labelled ids (:mod:`ogsrl.agents.categorical`)."""

    column: str
    """the action-id column"""
    n: int
    """number of actions"""
    labels: tuple[str, ...]
    """one label per id"""

    @property
    def columns(self) -> tuple[str, ...]:
        return (self.column,)


def action_space_of(schema: Any, who: str = "hurdle policy") -> ActionSpace | DiscreteSpace:
    """The action space of a table schema (:class:`ogsrl.data.schema.Schema`): the canonical space, the declared
    continuous columns (which must start at 0, the zero-dose atom, and be bounded), or a discrete id column."""
    if schema is None or schema.is_canonical:
        return CANONICAL_SPACE
    act = schema.action
    if act.type == "discrete":
        return DiscreteSpace(act.column, int(act.n), tuple(act.labels))
    bad = [c for c, lo, hi in zip(act.columns, act.low, act.high) if lo != 0 or not math.isfinite(hi)]
    if bad:
        raise ValueError(f"{who}: action column(s) {bad} must be declared on [0, finite high] (a dose with a "
                         "zero-dose atom)")
    return ActionSpace(tuple(act.columns), tuple(float(h) for h in act.high),
                       tuple(float(h) * RESOLUTION_SHARE for h in act.high), tuple(act.units))


# ---- networks ------------------------------------------------------------------------------------------------


def mlp(in_dim: int, hidden: Sequence[int], out_dim: int, generator: torch.Generator) -> nn.Sequential:
    """ReLU MLP whose weights are drawn from ``generator`` (never from torch's global RNG).

    Init: U(−1/√fan_in, 1/√fan_in) for weights and biases, the classic LeCun-uniform scheme of ``nn.Linear``.
    """
    dims = [in_dim, *hidden, out_dim]
    layers: list[nn.Module] = []
    for i, (d_in, d_out) in enumerate(zip(dims[:-1], dims[1:])):
        lin = nn.Linear(d_in, d_out)
        bound = 1.0 / math.sqrt(d_in)
        with torch.no_grad():
            nn.init.uniform_(lin.weight, -bound, bound, generator=generator)
            nn.init.uniform_(lin.bias, -bound, bound, generator=generator)
        layers.append(lin)
        if i < len(dims) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def mlp_forward(net: nn.Sequential, x: torch.Tensor, hidden_dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """An :func:`mlp`'s output for ``x``, its hidden layers' matmuls in ``hidden_dtype`` (weights cast from their
    float32 masters, gradients flow back to them) and its output layer in float32. bfloat16 is ~4× faster than float32
    on a CPU with AMX tiles for a 256-wide layer on 256 rows."""
    if hidden_dtype == torch.float32:
        return net(x)
    linears = [m for m in net if isinstance(m, nn.Linear)]
    if [type(m) for m in net] != [nn.Linear, nn.ReLU] * (len(linears) - 1) + [nn.Linear]:
        raise ValueError(f"mlp_forward runs networks built by mlp() (Linear and ReLU layers), got {net}")
    h = x.to(hidden_dtype)
    for lin in linears[:-1]:
        h = nn.functional.linear(h, lin.weight.to(hidden_dtype), lin.bias.to(hidden_dtype)).relu()
    return nn.functional.linear(h.float(), linears[-1].weight, linears[-1].bias)


def soft_clamp(x: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """Smoothly map ℝ → (low, high) (tanh), so a parameter stays bounded without killing gradients."""
    return low + 0.5 * (high - low) * (torch.tanh(x) + 1.0)


def soft_update(target: nn.Module, source: nn.Module, tau: float) -> None:
    """Polyak averaging of target networks: θ̄ ← (1 − τ)·θ̄ + τ·θ, in place."""
    with torch.no_grad():
        for t, s in zip(target.parameters(), source.parameters()):
            t.lerp_(s, tau)


# ---- the hurdle Gaussian action density ------------------------------------------------------------------------


def scale_actions(actions: FloatArray, space: ActionSpace = CANONICAL_SPACE) -> FloatArray:
    """Physical actions ``(B, A)`` → scaled y = log(1 + a/c) / log(1 + max/c) ∈ [0, 1]."""
    return np.log1p(actions / space.res_arr) / space.span_arr


def unscale_actions(y: FloatArray, space: ActionSpace = CANONICAL_SPACE) -> FloatArray:
    """Inverse of :func:`scale_actions`."""
    return space.res_arr * np.expm1(y * space.span_arr)


def _log_z_torch(mu: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """log(Φ(b) − Φ(a)), a = −μ/σ, b = (1−μ)/σ, computed in whichever tail keeps it accurate."""
    a, b = -mu / std, (1.0 - mu) / std
    lo, hi = torch.where(a > 0, -b, a), torch.where(a > 0, -a, b)  # mirror when both sit in the right tail
    log_hi, log_lo = torch.special.log_ndtr(hi), torch.special.log_ndtr(lo)
    return log_hi + torch.log1p(-torch.exp(log_lo - log_hi))


def _log_z(mu: FloatArray, std: FloatArray) -> FloatArray:
    a, b = -mu / std, (1.0 - mu) / std
    lo, hi = np.where(a > 0, -b, a), np.where(a > 0, -a, b)
    log_hi, log_lo = special.log_ndtr(hi), special.log_ndtr(lo)
    return log_hi + np.log1p(-np.exp(log_lo - log_hi))


def hurdle_nll(
    logit_w: torch.Tensor, logit0: torch.Tensor, mu: torch.Tensor, log_std: torch.Tensor, y: torch.Tensor
) -> torch.Tensor:
    """Negative log-likelihood per row of scaled actions under the K-component mixture, in float64.

        p(y|s) = Σ_k w_k(s) Π_j hurdle(y_j; p0_kj, μ_kj, σ_kj)

    Args:
        logit_w: mixture logits ``(B, K)``.
        logit0, mu, log_std: per component and dimension, ``(B, K, A)``: logit of P(a=0), μ and log σ.
        y: scaled actions in [0, 1], ``(B, A)``; exact zeros hit the atom.
    Returns:
        ``(B,)`` = −log p(y) w.r.t. (δ0 + Lebesgue on the scaled axis); the Jacobian to physical units is a
        constant of the data and left out.

    Leading dimensions broadcast: parameters ``(B, 1, K[, A])`` with ``y (B, n, A)`` score n actions per state
    (each state's normaliser computed once) → ``(B, n)``.
    """
    logit_w, logit0, mu, log_std = logit_w.double(), logit0.double(), mu.double(), log_std.double()
    y = y.double()[..., None, :]  # (…, A) → (…, 1, A)
    std = log_std.exp()
    zsc = (y - mu) / std
    log_cont = (
        torch.nn.functional.logsigmoid(-logit0)
        - 0.5 * zsc**2 - 0.5 * math.log(2.0 * math.pi) - log_std - _log_z_torch(mu, std)
    )
    per_dim = torch.where(y <= 0.0, torch.nn.functional.logsigmoid(logit0), log_cont)  # (B, K, A)
    log_w = torch.log_softmax(logit_w, dim=-1)
    return -torch.logsumexp(log_w + per_dim.sum(dim=-1), dim=-1)


def _far_left_quantile(log_p: torch.Tensor) -> torch.Tensor:
    """z with log Φ(z) = ``log_p`` where p underflows float64 (log p < −700): Newton steps on log Φ from −√(−2 log p),
    without gradient, then one implicit step z − (log Φ(z) − log p)/(φ/Φ)(z) that carries the exact derivative
    dz = d log p / (φ/Φ)(z)."""
    def inverse_mills(z: torch.Tensor) -> torch.Tensor:
        return torch.exp(-0.5 * z**2 - 0.5 * math.log(2.0 * math.pi) - torch.special.log_ndtr(z))

    with torch.no_grad():
        z = -torch.sqrt(-2.0 * log_p)
        for _ in range(4):
            z = z - (torch.special.log_ndtr(z) - log_p) / inverse_mills(z)
        ratio, log_cdf = inverse_mills(z), torch.special.log_ndtr(z)
    return z - (log_cdf - log_p) / ratio


def _left_quantile(log_p: torch.Tensor) -> torch.Tensor:
    """z ≤ 0 with log Φ(z) = ``log_p`` (p ≤ ½), accurate however small p is, differentiable in ``log_p``."""
    z = torch.special.ndtri(log_p.clamp(min=-700.0).exp())
    far = log_p < -700.0  # p below float64's normal range: rare (μ beyond a bound by > 37 σ)
    if bool(far.any()):
        z = z.index_put(far.nonzero(as_tuple=True), _far_left_quantile(log_p[far]))
    return z


def truncnorm_rsample(mu: torch.Tensor, std: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Reparameterised draw of y ~ N(μ, σ²) truncated to (0, 1] by the inverse CDF, float64, differentiable in μ, σ:

        y = μ + σ·Φ⁻¹(p),   p = Φ(lo) + u·(Φ(hi) − Φ(lo)),   lo = −μ/σ, hi = (1 − μ)/σ,   u ~ U(0, 1)

    p and 1 − p are both formed in log space (``log_ndtr``), and Φ⁻¹ is taken in whichever tail holds the draw, so the
    draw is exact wherever the bounds sit: μ far outside [0, 1] against σ (where Φ(lo) and Φ(hi) underflow, or
    1 + erf cancels) puts it at the near bound, as it should. Kept inside [1e-9, 1], so a draw is never the zero-dose
    atom. ``mu``, ``std`` and ``u`` broadcast.
    """
    mu, std = mu.double(), std.double()
    return _truncnorm_quantile(mu, std, truncnorm_bounds(mu, std), u)


def truncnorm_bounds(mu: torch.Tensor, std: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """(log Φ(lo), log Φ(hi), log Φ̄(lo), log Φ̄(hi)), lo = −μ/σ, hi = (1 − μ)/σ: what :func:`truncnorm_rsample`
    needs of the bounds, computed once per distribution (then gathered per draw)."""
    lo, hi = -mu / std, (1.0 - mu) / std
    return (torch.special.log_ndtr(lo), torch.special.log_ndtr(hi), torch.special.log_ndtr(-lo),
            torch.special.log_ndtr(-hi))


def _truncnorm_quantile(mu: torch.Tensor, std: torch.Tensor, bounds: tuple[torch.Tensor, ...],
                        u: torch.Tensor) -> torch.Tensor:
    """The draw of :func:`truncnorm_rsample` at ``u`` from float64 ``mu``, ``std`` and their :func:`truncnorm_bounds`."""
    log_lo, log_hi, log_nlo, log_nhi = bounds  # log Φ(lo) ≤ log Φ(hi); log(1 − Φ(·)), Φ̄(hi) ≤ Φ̄(lo)
    u = u.double()
    log_p = log_hi + torch.log(u + (1.0 - u) * torch.exp(log_lo - log_hi))  # p = u·Φ(hi) + (1 − u)·Φ(lo)
    log_q = log_nlo + torch.log(1.0 - u + u * torch.exp(log_nhi - log_nlo))  # 1 − p = u·Φ̄(hi) + (1 − u)·Φ̄(lo)
    left = log_p <= log_q
    z = _left_quantile(torch.where(left, log_p, log_q))
    return (mu + std * torch.where(left, z, -z)).clamp(1e-9, 1.0)


def hurdle_rsample(
    logit_w: torch.Tensor, logit0: torch.Tensor, mu: torch.Tensor, log_std: torch.Tensor, n: int,
    generator: torch.Generator,
) -> torch.Tensor:
    """``n`` draws per row of scaled actions ``(B, n, A)`` from the K-component hurdle mixture (no gradient through
    the component or zero choice; the non-zero amounts are :func:`truncnorm_rsample` draws). Parameters as
    :func:`hurdle_nll`; every draw comes from ``generator``."""
    bsz, k, a_dim = mu.shape
    comp = torch.multinomial(torch.softmax(logit_w.double(), dim=-1), n, replacement=True, generator=generator)
    idx = comp[..., None].expand(bsz, n, a_dim)  # (B, n) → (B, n, A)

    def pick(t: torch.Tensor) -> torch.Tensor:
        return torch.gather(t, 1, idx)  # (B, K, A) → (B, n, A)

    u0 = torch.rand(bsz, n, a_dim, generator=generator, dtype=torch.float64)
    u = torch.rand(bsz, n, a_dim, generator=generator, dtype=torch.float64)
    mu, std = mu.double(), log_std.double().exp()
    y = _truncnorm_quantile(pick(mu), pick(std), tuple(pick(b) for b in truncnorm_bounds(mu, std)), u)
    return torch.where(u0 < torch.sigmoid(pick(logit0).double()), torch.zeros_like(y), y)


def hurdle_log_prob(
    logit_w: FloatArray, logit0: FloatArray, mu: FloatArray, log_std: FloatArray, actions: FloatArray,
    space: ActionSpace = CANONICAL_SPACE,
) -> FloatArray:
    """log π(a|s) per row for physical actions ``(B, A)``, w.r.t. (δ0 + Lebesgue) in physical units → ``(B,)``.

    Parameters as :func:`hurdle_nll` (``(B, K)`` and ``(B, K, A)`` arrays).
    """
    std = np.exp(log_std)
    acts = actions[:, None, :]  # (B, A) → (B, 1, A)
    y = scale_actions(acts, space)
    zsc = (y - mu) / std
    log_jac = -np.log((space.res_arr + acts) * space.span_arr)  # dy/da
    log_cont = (
        -np.logaddexp(0.0, logit0)  # log(1 − p0)
        - 0.5 * zsc**2 - 0.5 * math.log(2.0 * math.pi) - log_std - _log_z(mu, std) + log_jac
    )
    per_dim = np.where(acts <= 0.0, -np.logaddexp(0.0, -logit0), log_cont)  # (B, K, A)
    log_w = logit_w - special.logsumexp(logit_w, axis=-1, keepdims=True)
    return special.logsumexp(log_w + per_dim.sum(axis=-1), axis=-1)


def _pick(logit_w: FloatArray, params: tuple[FloatArray, ...], u: FloatArray) -> tuple[FloatArray, ...]:
    """Per row, the component whose cumulative weight first exceeds ``u`` (B,): ``(B, K, A)`` → ``(B, A)`` each."""
    w = special.softmax(logit_w, axis=-1)
    k = np.minimum((u[:, None] > np.cumsum(w, axis=-1)).sum(axis=-1), w.shape[-1] - 1)  # (B,)
    rows = np.arange(len(k))
    return tuple(p[rows, k] for p in params)


def hurdle_sample(
    logit_w: FloatArray, logit0: FloatArray, mu: FloatArray, log_std: FloatArray, rng: np.random.Generator,
    space: ActionSpace = CANONICAL_SPACE,
) -> FloatArray:
    """Draw physical actions ``(B, A)``: a component k ~ w(s); per dimension zero with probability p0_k, else y
    from component k's truncated normal, mapped back to physical units."""
    logit0, mu, log_std = _pick(logit_w, (logit0, mu, log_std), rng.uniform(size=logit_w.shape[0]))
    std = np.exp(log_std)
    zero = rng.uniform(size=mu.shape) < special.expit(logit0)
    u = rng.uniform(size=mu.shape)
    y = stats.truncnorm.ppf(u, -mu / std, (1.0 - mu) / std, loc=mu, scale=std)
    return np.where(zero, 0.0, np.clip(unscale_actions(y, space), 0.0, space.max_arr))


def hurdle_mode(logit_w: FloatArray, logit0: FloatArray, mu: FloatArray, log_std: FloatArray,
                space: ActionSpace = CANONICAL_SPACE) -> FloatArray:
    """Deterministic action ``(B, A)``: in the heaviest component, 0 where P(a=0) ≥ ½, else the median amount."""
    k = logit_w.argmax(axis=-1)
    rows = np.arange(len(k))
    logit0, mu, std = logit0[rows, k], mu[rows, k], np.exp(log_std[rows, k])
    y = stats.truncnorm.ppf(0.5, -mu / std, (1.0 - mu) / std, loc=mu, scale=std)
    return np.where(logit0 >= 0.0, 0.0, np.clip(unscale_actions(y, space), 0.0, space.max_arr))


# ---- input checks and normalisation --------------------------------------------------------------------------


def check_obs(obs: Any, feature_names: Sequence[str], who: str) -> np.ndarray:
    """Validate an observation batch ``(B, S)``: 2-D, S = len(feature_names), finite. Returns float64."""
    arr = np.asarray(obs, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != len(feature_names):
        raise ValueError(
            f"{who}: obs must have shape (B, {len(feature_names)}) with columns {list(feature_names)}, "
            f"got {arr.shape}"
        )
    bad = ~np.isfinite(arr)
    if bad.any():
        rows, cols = np.nonzero(bad)
        raise DataError(
            f"{who}: non-finite observation values", column=feature_names[int(cols[0])], rows=sorted(set(rows.tolist()))
        )
    return arr


def training_units(schema: Any, state_features: Sequence[str]) -> dict[str, Any]:
    """What a checkpoint records of the table it was trained on: ``{"state_units": {feature: unit}}`` for the
    policy's state columns (the schema's declared units; :func:`check_units` compares them later)."""
    units = {f.name: f.unit for f in schema.state}
    return {"state_units": {c: units[c] for c in state_features if c in units}}


def check_units(policy: Any, schema: Any, where: str) -> None:
    """DataError naming the column when the table's declared unit of a state feature or action differs from the
    one ``policy`` was trained with (its provenance ``state_units``; its action space's units). Checkpoints saved
    before units were recorded carry none and pass."""
    inner = getattr(policy, "policy", policy)  # a GuardedPolicy's learned policy
    declared = {f.name: f.unit for f in schema.state}
    trained = dict((getattr(inner, "provenance", None) or {}).get("state_units", {}))
    space = getattr(getattr(inner, "actor", None), "space", None)
    if isinstance(space, ActionSpace) and schema.action_type == "continuous":
        trained.update(zip(space.columns, space.units))
        declared.update(zip(schema.action_columns, schema.action.units))
    for column, unit in trained.items():
        if column in declared and declared[column] != unit:
            raise DataError(f"unit mismatch: the policy was trained with {column} in {unit!r}, the table declares "
                            f"{declared[column]!r}", table=where, column=column)


def check_actions(actions: Any, n_rows: int, who: str, space: ActionSpace = CANONICAL_SPACE) -> np.ndarray:
    """Validate physical actions ``(B, A)``: finite and inside [0, max] per dimension. Returns float64."""
    arr = np.asarray(actions, dtype=np.float64)
    if arr.shape != (n_rows, len(space.columns)):
        raise ValueError(f"{who}: actions must have shape ({n_rows}, {len(space.columns)}), got {arr.shape}")
    for j, name in enumerate(space.columns):
        col = arr[:, j]
        bad = np.nonzero(~np.isfinite(col) | (col < 0.0) | (col > space.max[j]))[0]
        if bad.size:
            raise DataError(
                f"{who}: actions outside [0, {space.max[j]:g}] or not finite", column=name, rows=bad.tolist()
            )
    return arr


def fit_normaliser(x: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Per-column mean and std of ``x (N, S)``; constant columns get std 1 so they map to 0."""
    mean = x.mean(axis=0)
    std = x.std(axis=0)
    return mean, np.where(std > 1e-8, std, 1.0)


# ---- checkpoints ---------------------------------------------------------------------------------------------


def write_checkpoint_config(directory: Path, config: Mapping[str, Any]) -> None:
    """Write ``config.json`` (with ``format_version``) into an existing directory being assembled."""
    if "kind" not in config:
        raise ValueError("checkpoint config needs a 'kind' for load_policy dispatch")
    doc = {**config, "format_version": FORMAT_VERSION}
    (directory / CONFIG_FILE).write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def save_checkpoint(path: str | Path, config: Mapping[str, Any], tensors: Mapping[str, Any]) -> None:
    """Write a checkpoint directory atomically: ``config.json`` (kind, format_version, …) + ``weights.pt``.

    ``tensors`` holds tensors only, so loading works with ``weights_only=True`` (no pickle).
    """
    with atomic_path(path) as tmp:
        tmp.mkdir(parents=True)
        write_checkpoint_config(tmp, config)
        torch.save(dict(tensors), tmp / WEIGHTS_FILE)


def read_checkpoint_config(path: str | Path) -> dict[str, Any]:
    """Read and check a checkpoint's config.json (exists, is a mapping, has kind, known format version)."""
    file = Path(path) / CONFIG_FILE
    if not file.is_file():
        raise FileNotFoundError(f"not a policy checkpoint (no {CONFIG_FILE}): {path}")
    doc = json.loads(file.read_text(encoding="utf-8"))
    if not isinstance(doc, dict) or "kind" not in doc:
        raise ValueError(f"{file}: config must be a JSON object with a 'kind'")
    if doc.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"{file}: checkpoint format_version {doc.get('format_version')!r}, this code reads {FORMAT_VERSION} "
            "(older checkpoints are not converted; rerun `ogsrl train-policies`)"
        )
    return doc


def read_checkpoint_tensors(path: str | Path) -> dict[str, Any]:
    """Load ``weights.pt`` with ``weights_only=True`` on CPU."""
    return torch.load(Path(path) / WEIGHTS_FILE, map_location="cpu", weights_only=True)


# ---- trajectory tables ---------------------------------------------------------------------------------------


def read_split(path: str | Path) -> tuple[Any, dict[str, Any]]:
    """Read a trajectory parquet (docs/data-contract.md §3) → (DataFrame, metadata).

    metadata: ``state_features`` (tuple), ``cost_columns`` (tuple), ``schema`` (the table's contract-v2 schema,
    :func:`ogsrl.data.schema.load_table_schema`) and, when recorded, ``step_h`` and ``n_steps``, from the file's
    ``ogsrl.*`` key-value metadata.
    Raises DataError when the file, the metadata or the action/state columns are missing.
    """
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.is_file():
        raise DataError(f"trajectory file not found: {path}", table=path.name)
    table = pq.read_table(path)
    raw = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()}
    if "ogsrl.state_features" not in raw:
        raise DataError("parquet metadata lacks 'ogsrl.state_features'", table=path.name)
    schema = load_table_schema(path)
    state = tuple(json.loads(raw["ogsrl.state_features"]))
    if schema.is_canonical:
        state = features.state_features(state)
    costs = tuple(json.loads(raw.get("ogsrl.cost_columns", "[]")))
    df = table.to_pandas()
    for col in ("stay_key", "step", "reward", *state, *schema.action_columns, *costs):
        if col not in df.columns:
            raise DataError("required column missing", table=path.name, column=col)
    df = df.sort_values(["stay_key", "step"], kind="stable").reset_index(drop=True)
    grid = {k: json.loads(raw[f"ogsrl.{k}"]) for k in ("step_h", "n_steps") if f"ogsrl.{k}" in raw}
    return df, {"state_features": state, "cost_columns": costs, "schema": schema, **grid}
