"""Conservative Q-learning (CQL; Kumar, Zhou, Tucker, Levine, NeurIPS 2020, arXiv 2006.04779) for the continuous
2-D dose, with its constrained (CCQL) and guarded (GCQL, GCCQL) variants as options of one algorithm.

Checked against CORL ``algorithms/offline/cql.py`` and d3rlpy ``algos/qlearning/torch/cql_impl.py`` (SAC-style twin
critics, CQL(H) with importance-sampled logsumexp over uniform and policy actions). The actor is the framework's
:class:`ogsrl.agents.actor.HurdleActor` (zero-dose atom + truncated Gaussian on y = log(1 + a/c)/log(1 + max/c)), so
the served policy has the exact density OPE scores. Densities here are w.r.t. (δ0 + Lebesgue on y) per dimension.

Critics (twin reward critics Q₁, Q₂ and, for CCQL, one cost critic Q_Ci per cost column) are one fused ensemble
evaluated with batched matmuls. With D the logged transitions, π the actor, γ = ``policies.discount``:

    TD:      y_R = r + P·ρ(s) + γ(1 − done)·min_e Q̄_e(s', a'),  y_Ci = c_i + γ(1 − done)·Q̄_Ci(s', a'),  a' ~ π(·|s')
    CQL(H):  α·E_s[ log Σ_j exp(Q(s, a_j) − log q(a_j)) − log 3N − E_{a~D}[Q(s, a)] ]   per reward critic
             a_j: N draws from the reference q₀ (each dose 0 w.p. ½, else y ~ U(0, 1]: log q₀ = A·log ½),
                  N from π(·|s) and N from π(·|s') (log q = log π, detached)
    cost:    α_C·E_s[ log Σ_j exp(−Q_C(s, a_j) − log q(a_j)) − log 3N + E_{a~D}[Q_C(s, a)] ]   (pessimism: cost is
             pushed *up* off the data)
    actor:   min_θ E_s E_{a~π_θ}[ τ·log π_θ(a|s) − min_e Q_e(s, a) + Σᵢ λᵢ Q_Ci(s, a) ]
    τ:       min_τ −τ·E[log π + H̄]  (SAC temperature, H̄ = ``target_entropy``)
    λ (CCQL): λᵢ ← max(0, λᵢ + η_λ·(Ĵ_Ci + bᵢ − (1 − m)·dᵢ)),  Ĵ_Ci = E_{s₀, a~π}[Q_Ci(s₀, a)] on start states s₀
             (the expected cost per stay the limits dᵢ bound; m = ``cost_margin``, room for the critics' error)
    check:   bᵢ = 0, or with ``cost_check_every`` = K: every K updates bᵢ ← J^NN_Ci − Ĵ_Ci(all s₀), J^NN_Ci the
             served actor's cost per stay in episodes made of the train split's own transitions, anchored on the
             clinicians' logged costs (:mod:`ogsrl.ope.neighbour`, the ``knn`` OPE estimator's simulator)

Trained as served (``train_as_served``): π above is replaced by the policy that is served, π̃(·|s) = π's draw a
where the guardian accepts (s, a), else a draw of the fallback (the clinicians' clone SOC of the same seed), in the
TD targets' a', the actor's values (a rejected action is valued at the fallback's draw; its gradient flows through
the probability of drawing it) and Ĵ_Ci: the critics then value, and the multipliers bound, the served policy.

The actor expectation is exact over the discrete parts (mixture component k and which doses are zero: K·2^A
configurations per state, weighted by their probabilities) and reparameterised over the non-zero amounts
(:func:`ogsrl.agents.common.truncnorm_rsample`), so its gradient is unbiased although the hurdle has an atom.

Guarded (GCQL / GCCQL, run option ``guarded: true``): as in the authors' code (``models/ddpg_cql_guard.py``) the
reward of each sampled transition gets P = ``ood_penalty`` (−25) times ρ(s), here the share of ``guard_draws``
of π's draws at s that the guardian rejects (the authors use one deterministic action: ρ ∈ {0, 1}). See
docs/policies-and-ope.md for our reading.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from torch import nn

from ogsrl import features
from ogsrl.agents import common, onpolicy as op
from ogsrl.agents.actor import HurdleActor, SavedPolicy
from ogsrl.agents.common import FloatArray
from ogsrl.agents.inputs import FitResult, TrainInputs

log = logging.getLogger(__name__)

Guard = Callable[[np.ndarray, np.ndarray], np.ndarray]
"""guard(obs (B, S) physical, act (B, A) physical) → inside (B,) bool"""


@dataclass(frozen=True, slots=True)
class Config:
    """CQL on the logged transitions; ``constrained`` makes it CCQL (the run's ``guarded`` makes it GCQL/GCCQL)."""

    steps: int = 5000
    """gradient updates (each: one minibatch for critics, actor, temperature and multipliers)"""
    batch_size: int = 256
    """B, transitions per update"""
    critic_hidden: tuple[int, ...] = (256, 256)
    """widths of every critic (reward twins and cost critics)"""
    warm_start: bool = True
    """start the actor from the clinicians' behaviour clone of the same seed; False: a fresh actor"""
    hidden: tuple[int, ...] = (256, 256)
    """actor MLP widths when not warm-started"""
    components: int = 1
    """mixture components K of a fresh actor"""
    actor_lr: float = 1e-4
    """Adam learning rate of the actor"""
    critic_lr: float = 3e-4
    """Adam learning rate of the critics"""
    temperature_lr: float = 1e-4
    """Adam learning rate of log τ"""
    initial_temperature: float = 1.0
    """τ at the start (entropy weight)"""
    target_entropy: float = -2.0
    """H̄, the entropy (nats, on the scaled axis with the zero atom) τ is tuned towards"""
    tau: float = 0.005
    """Polyak rate of the target critics"""
    alpha: float = 5.0
    """conservative weight α of the CQL(H) term (d3rlpy's conservative_weight)"""
    ood_penalty: float = -25.0
    """guarded runs: reward added per unit of the rejected share of π's draws at s (the authors' −25; the episode
    goes on, unlike the model-based guardian's termination)"""
    guard_draws: int = 2
    """guarded runs: how many of π's N draws at s the guardian checks per update (ρ(s) is their rejected share)"""
    n_action_samples: int = 10
    """N, draws per state from each of q₀, π(·|s) and π(·|s') in the logsumexp"""
    constrained: bool = False
    """CCQL: cost critics and one Lagrange multiplier per cost column bound the expected cost per stay"""
    cost_alpha: float = 1.0
    """α_C, weight of the cost critics' pessimistic term (0: plain TD on the costs)"""
    multiplier_lr: float = 0.01
    """η_λ, projected-ascent step of the multipliers per unit of violation"""
    init_multiplier: float = 0.0
    """λᵢ at the start"""
    cost_margin: float = 0.0
    """m: share of each cost limit held back, the multipliers drive the cost critics' reading to (1 − m)·limit —
    room for the critics' error on the learner's own actions, which the data never show them"""
    cost_check_every: int = 0
    """CCQL: every this many updates, read the served actor's expected cost per stay in a simulator made of the train
    split's own transitions (:class:`ogsrl.ope.neighbour.AnchoredPool`) and shift the cost critics' reading Ĵ_C by
    the gap, so the multipliers bound the checked cost, not the critics' error on actions the data never show them;
    0: the critics alone"""
    cost_check_stays: int = 1000
    """train stays a cost check starts episodes from (all when fewer)"""
    cost_check_rollouts: int = 4
    """episodes per start state and cost check"""
    precision: Literal["float32", "bfloat16", "auto"] = "float32"
    """matmul precision of the critics' hidden layers and, during training, the actor's (heads, targets, losses, the
    density and the served actor stay float32 / float64): bfloat16 is ~2.7× faster than float32 on a CPU with AMX
    tiles and slower without them; auto picks bfloat16 exactly where the CPU has AMX (:func:`resolve_precision`; the
    choice is in the metrics as ``train/bfloat16_critics``)"""
    critic_warm_start: int = 1000
    """supervised updates that first regress every critic on the logged returns-to-go (the clinicians' Monte-Carlo
    Q), so CQL starts from values of the right scale instead of propagating a whole stay through Polyak targets;
    0: critics start from their random initialisation"""
    train_as_served: bool = False
    """value and constrain the policy as it is served: where the guardian rejects the actor's (s, a), the fallback's
    draw (needs the run served with the guardian fallback, ``policies.serve_guardian_fallback``)"""
    log_every: int = 1000
    """updates between progress log lines (and learning-curve rows)"""

    def __post_init__(self) -> None:
        op.check_config(self, positive=("steps", "batch_size", "components", "actor_lr", "critic_lr",
                                        "temperature_lr", "initial_temperature", "n_action_samples", "guard_draws",
                                        "log_every", "cost_check_stays", "cost_check_rollouts"),
                        unit=("tau",), widths=("hidden", "critic_hidden"),
                        non_negative=("alpha", "cost_alpha", "multiplier_lr", "init_multiplier", "critic_warm_start",
                                      "cost_check_every"))
        if self.cost_check_every and not self.constrained:
            raise ValueError("Config.cost_check_every checks the cost the multipliers bound: it needs constrained: true")
        if not 0.0 <= self.cost_margin < 1.0:
            raise ValueError(f"Config.cost_margin must lie in [0, 1), got {self.cost_margin}")
        if self.precision not in ("float32", "bfloat16", "auto"):
            raise ValueError(f"Config.precision must be float32, bfloat16 or auto, got {self.precision!r}")


def resolve_precision(precision: str) -> str:
    """``auto`` → ``bfloat16`` where this CPU has AMX tiles (torch's probe), else ``float32``; other values as given.
    Measured (benchmarks/results/cql.md, cql_s12_noamx.md): bfloat16 critics 2.7× float32 with AMX, 0.88× without."""
    if precision != "auto":
        return precision
    probe = getattr(torch.cpu, "_is_amx_tile_supported", None)
    return "bfloat16" if probe is not None and probe() else "float32"


# ---- data --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Transitions:
    """Logged transitions as tensors (N rows)."""

    obs: torch.Tensor
    """(N, S) states, physical units, float64 (the actor normalises them)"""
    obs_n: torch.Tensor
    """(N, S) states normalised for the critics, float32"""
    next_obs: torch.Tensor
    """(N, S) next states, physical, float64"""
    next_obs_n: torch.Tensor
    """(N, S) next states normalised, float32"""
    y: torch.Tensor
    """(N, A) scaled logged actions in [0, 1], float32"""
    rew: torch.Tensor
    """(N,) rewards, float32"""
    cost: torch.Tensor
    """(N, C) costs, float32"""
    done: torch.Tensor
    """(N,) 1 at a stay's last step (nothing is owed after it), float32"""
    starts: torch.Tensor
    """(M,) row indices of the stays' first steps"""


def transitions(frame: pd.DataFrame, names: tuple[str, ...], cost_names: tuple[str, ...],
                mean: FloatArray, std: FloatArray) -> Transitions:
    """Trajectory table (sorted by stay, step; ``next_<feature>`` columns) → :class:`Transitions`."""
    nxt = [f"next_{n}" for n in names]
    missing = [c for c in (*nxt, "done", "reward", *cost_names) if c not in frame.columns]
    if missing:
        raise ValueError(f"cql: the trajectory table lacks column(s) {missing}")
    obs = common.check_obs(frame[list(names)].to_numpy(np.float64), names, "cql")
    next_obs = common.check_obs(frame[nxt].to_numpy(np.float64), names, "cql next state")
    acts = common.check_actions(frame[list(features.ACTIONS)].to_numpy(np.float64), len(obs), "cql")
    keys = frame["stay_key"].to_numpy()
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])

    def norm(x: np.ndarray) -> torch.Tensor:
        return torch.as_tensor((x - mean) / std, dtype=torch.float32)

    return Transitions(obs=torch.tensor(obs), obs_n=norm(obs), next_obs=torch.tensor(next_obs),
                       next_obs_n=norm(next_obs), y=torch.as_tensor(common.scale_actions(acts), dtype=torch.float32),
                       rew=torch.tensor(frame["reward"].to_numpy(np.float32)),
                       cost=torch.tensor(frame[list(cost_names)].to_numpy(np.float32).reshape(len(obs), -1)),
                       done=torch.tensor(frame["done"].to_numpy(np.float32)), starts=torch.as_tensor(starts))


# ---- critics ------------------------------------------------------------------------------------------------------


def _linear_relu(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    """relu(x·wᵀ + b) as one oneDNN kernel where torch has it (the ReLU fused into the matmul's epilogue)."""
    if torch.backends.mkldnn.is_available():
        return torch.ops.mkldnn._linear_pointwise(x, w, b, "relu", [], "")
    return (x @ w.t() if b is None else torch.addmm(b, x, w.t())).relu_()


CONSTANT_BLOCK = 32
"""units appended below the top layer: a constant unit (1, the next layer's bias is its weight) and zero units that
keep each activation row 64-byte aligned (32 bfloat16; −0.4 ms per update against one unit on the AMX CPU)"""


HEAD_ROWS = 512
"""rows per chunk of a low-precision top layer converted to float32 for the head: the chunk stays in cache between its
conversion and its product (−0.35 ms per member on 7,936 rows against converting all rows at once)"""


def _head(top: torch.Tensor, w: torch.Tensor, out: torch.Tensor) -> None:
    """out ← top · w in float32 for activations ``top (N, H)`` of any dtype (``w (H,)``, ``out (N,)`` float32)."""
    if top.dtype == torch.float32:
        torch.mv(top, w, out=out)
        return
    buf = torch.empty(min(HEAD_ROWS, len(top)), top.shape[1])
    for start in range(0, len(top), HEAD_ROWS):
        rows = top[start:start + HEAD_ROWS]
        chunk = buf[:len(rows)]
        chunk.copy_(rows)
        torch.mv(chunk, w, out=out[start:start + HEAD_ROWS])


class _FusedCritics(torch.autograd.Function):
    """E MLP critics with a written-out backward: hidden layers in ``dtype`` (float32 weight masters), float32 heads.

    Faster on a CPU than autograd over the same layers (docs/policies-and-ope.md, "Speed against d3rlpy"): each
    pass over the N × H activations that can be saved is. The ReLU runs inside the matmul; biases are weights on a
    constant input (a column of 1s for the first layer, a constant unit below the top), so their gradients come out
    of the weight gradients' matmuls; the head's weights scale the top layer's gradient matrix instead of an outer
    product over all rows (1[h > 0] ⊙ (∂q ⊗ w) = (1[h > 0] ⊙ ∂q) · diag(w)), and the head's weight gradient comes from
    the top layer's, Σₙ ∂qₙ·hₙⱼ = Σₖ Wⱼₖ·Gⱼₖ (no pass over the rows); the members' weights are packed once
    per call and their gradients written straight into the stacked tensors; no graph is recorded, and weight
    gradients are computed only when asked for (the actor's step needs the input's gradient alone). Members run one
    after another as 2-D matmuls (faster on a CPU than batched ones). ``dtype`` bfloat16 pays only on CPUs with AMX.

    ``apply(dtype, x1 (N, D + 1) in dtype, its last column 1s, w₀ (E, H, D), b₀ (E, H), …, w_L (E, 1, H), b_L (E, 1))``
    → q ``(E, N)`` float32.
    """

    @staticmethod
    def forward(ctx: Any, dtype: torch.dtype, x1: torch.Tensor, *params: torch.Tensor) -> torch.Tensor:  # noqa: D102
        layers = (len(params) - 2) // 2
        applied = []  # per layer (E, H (+block), D + 1 or + block): [w | b | 0], below the top a unit [0 … 0 | 1 | 0]
        for i in range(layers):
            w, b = params[2 * i], params[2 * i + 1]
            members, rows, cols = w.shape
            out = w.new_zeros(members, rows + (CONSTANT_BLOCK if i < layers - 1 else 0),
                              cols + (1 if i == 0 else CONSTANT_BLOCK), dtype=dtype)
            out[:, :rows, :cols] = w
            out[:, :rows, cols] = b
            if i < layers - 1:
                out[:, rows, cols] = 1.0
            applied.append(out)
        w_head, b_head = params[-2], params[-1]
        q = torch.empty(len(w_head), len(x1))
        saved = []
        for e in range(len(w_head)):
            acts = [x1]
            for w in applied:
                acts.append(_linear_relu(acts[-1], w[e], None))
            _head(acts[-1], w_head[e, 0], q[e])
            saved += acts[1:]
        ctx.save_for_backward(x1, w_head, *applied, *saved)
        ctx.layers, ctx.dtype = layers, dtype
        ctx.shapes = [tuple(params[2 * i].shape[1:]) for i in range(layers)]
        return q.add_(b_head)

    @staticmethod
    def backward(ctx: Any, grad_q: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # noqa: D102
        layers, dtype = ctx.layers, ctx.dtype
        x1, w_head, *rest = ctx.saved_tensors
        applied, saved = rest[:layers], rest[layers:]
        needs = ctx.needs_input_grad[1:]  # (x1, w₀, b₀, …, w_L, b_L)
        members = len(w_head)
        grads: list[torch.Tensor | None] = [None] * (2 * layers + 2)
        for i in range(layers):
            if needs[1 + 2 * i] or needs[2 + 2 * i]:
                grads[2 * i] = torch.empty(members, *applied[i].shape[1:])  # [w | b | block] per member, split below
        if needs[-2]:
            grads[-2] = torch.empty_like(w_head)
        if needs[-1]:
            grads[-1] = grad_q.sum(dim=1, keepdim=True)
        grad_x = torch.zeros(x1.shape, dtype=dtype) if needs[0] else None
        grad_q_low = grad_q.to(dtype)
        head_from_top = needs[-2] and grads[2 * (layers - 1)] is not None
        for e in range(members):
            acts = [x1, *saved[e * layers:(e + 1) * layers]]
            if needs[-2] and not head_from_top:
                grads[-2][e, 0] = torch.mv(acts[-1].t(), grad_q_low[e])
            g = torch.ops.aten.threshold_backward(grad_q_low[e, :, None].expand(acts[-1].shape), acts[-1], 0.0)
            column_scale: torch.Tensor | None = w_head[e, 0]  # g · diag(w_head) is the top layer's true gradient
            for i in range(layers - 1, -1, -1):
                if i < layers - 1:
                    g = torch.ops.aten.threshold_backward(g, acts[i + 1][:, :g.shape[1]], 0.0)
                if grads[2 * i] is not None:
                    grad_w = grads[2 * i][e, :g.shape[1]]
                    if dtype == torch.float32:
                        torch.mm(g.t(), acts[i], out=grad_w)
                    elif i == 0:  # the narrow input on the left: −0.13 ms per member on 7,936 rows
                        grad_w.copy_((acts[0].t() @ g).t())
                    else:
                        grad_w.copy_(g.t() @ acts[i])
                    if column_scale is not None:
                        if head_from_top:  # Σₙ ∂qₙ·hₙⱼ = Σₖ Wⱼₖ·Gⱼₖ, as h = relu(a·Wᵀ) and G = (1[h > 0] ⊙ ∂q)ᵀ·a
                            grads[-2][e, 0] = (applied[i][e, :g.shape[1]] * grad_w).sum(dim=1)
                        grad_w.mul_(column_scale[:, None])
                if i > 0 or needs[0]:
                    w = applied[i][e, :g.shape[1], :ctx.shapes[i][1] if i > 0 else None]
                    if column_scale is not None:
                        w = (w.float() * column_scale[:, None]).to(dtype)
                    if i > 0:
                        g = g @ w
                    else:
                        grad_x.addmm_(g, w)
                column_scale = None
        for i in range(layers):
            if grads[2 * i] is not None:
                full = grads[2 * i]
                rows, cols = ctx.shapes[i]
                grads[2 * i], grads[2 * i + 1] = full[:, :rows, :cols], full[:, :rows, cols]
        return (None, grad_x, *grads)


class CriticEnsemble(nn.Module):
    """E independent MLP critics (normalised s, y) (N, S + A) → Q (E, N), each initialised like :func:`common.mlp`.

    Weights ``(E, d_out, d_in)`` and biases ``(E, d_out)`` (float32 masters), evaluated by :class:`_FusedCritics`;
    ``precision="bfloat16"`` runs the hidden layers in bfloat16 (heads and outputs stay float32).
    """

    def __init__(self, n_in: int, hidden: tuple[int, ...], members: int, generator: torch.Generator,
                 precision: str = "float32") -> None:
        super().__init__()
        dims = [n_in, *hidden, 1]
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for d_in, d_out in zip(dims[:-1], dims[1:]):
            bound = 1.0 / math.sqrt(d_in)
            self.weights.append(nn.Parameter((torch.rand(members, d_out, d_in, generator=generator) * 2 - 1) * bound))
            self.biases.append(nn.Parameter((torch.rand(members, d_out, generator=generator) * 2 - 1) * bound))
        self.members = members
        self.dtype = torch.bfloat16 if precision == "bfloat16" else torch.float32

    def forward(self, x: torch.Tensor, frozen: bool = False) -> torch.Tensor:
        """``x (N, S + A)`` → Q ``(E, N)``, float32. With ``frozen`` the weights are detached (gradients reach ``x``
        only: the actor's step computes no critic gradients)."""
        x1 = torch.cat([x, x.new_ones(len(x), 1)], dim=1).to(self.dtype)  # the first bias is a weight on the 1s
        params = [t.detach() if frozen else t for pair in zip(self.weights, self.biases) for t in pair]
        return _FusedCritics.apply(self.dtype, x1, *params)


# ---- the actor's expectation and draws ---------------------------------------------------------------------------


def enumerate_actions(params: tuple[torch.Tensor, ...], generator: torch.Generator) -> tuple[torch.Tensor, ...]:
    """The actor loss's exact-over-discrete-parts expectation: per state, every (component k, zero pattern z)
    configuration with one reparameterised amount per component and dimension.

    Returns (y ``(B, K·2^A, A)`` scaled actions, log P(k, z) ``(B, K·2^A)``, differentiable).
    """
    logit_w, logit0, mu, log_std = params
    bsz, k, a_dim = mu.shape
    u = torch.rand(bsz, k, a_dim, generator=generator, dtype=torch.float64)
    amount = common.truncnorm_rsample(mu, log_std.double().exp(), u)  # (B, K, A)
    patterns = torch.tensor([[(p >> j) & 1 for j in range(a_dim)] for p in range(2**a_dim)],
                            dtype=torch.float64)  # (Z, A): 1 = non-zero dose
    y = amount[:, :, None, :] * patterns[None, None]  # (B, K, 1, A) × (1, 1, Z, A) → (B, K, Z, A)
    l0 = logit0.double()[:, :, None, :]  # (B, K, 1, A)
    log_pz = torch.where(patterns > 0, nn.functional.logsigmoid(-l0), nn.functional.logsigmoid(l0)).sum(-1)
    log_p = torch.log_softmax(logit_w.double(), dim=-1)[:, :, None] + log_pz  # (B, K, Z)
    return y.reshape(bsz, -1, a_dim), log_p.reshape(bsz, -1)


def log_prob_rows(params: tuple[torch.Tensor, ...], y: torch.Tensor) -> torch.Tensor:
    """log π(y|s) ``(B, n)`` of ``n`` scaled actions per state ``y (B, n, A)`` (params of B states)."""
    return -common.hurdle_nll(*(t[:, None] for t in params), y)  # (B, 1, …) against (B, n, A)


def reference_draws(bsz: int, n: int, a_dim: int, generator: torch.Generator) -> torch.Tensor:
    """``(B, n, A)`` draws from q₀: each dose 0 with probability ½, else y ~ U(0, 1] (density ½ per dimension)."""
    zero = torch.rand(bsz, n, a_dim, generator=generator) < 0.5
    return torch.where(zero, 0.0, torch.rand(bsz, n, a_dim, generator=generator).clamp_min(1e-9))


# ---- training ------------------------------------------------------------------------------------------------------


def returns_to_go(values: torch.Tensor, done: torch.Tensor, discount: float) -> torch.Tensor:
    """Gₜ = vₜ + γ(1 − doneₜ)·Gₜ₊₁ on a table sorted by stay and step (``done`` 1 at a stay's last row).

    ``values`` (N,) or (N, C) → the same shape, float32 (accumulated in float64)."""
    v = values.double().numpy()
    cont = discount * (1.0 - done.double().numpy())
    out = np.empty_like(v)
    acc = np.zeros(v.shape[1:])
    for i in range(len(v) - 1, -1, -1):
        acc = v[i] + cont[i] * acc
        out[i] = acc
    return torch.as_tensor(out, dtype=torch.float32)


def warm_start_critics(critic: CriticEnsemble, data: Transitions, n_cost: int, steps: int, batch_size: int,
                       lr: float, discount: float, generator: torch.Generator) -> float:
    """Regress the reward critics on the logged reward-to-go and the cost critics on the logged cost-to-go (Monte-Carlo
    Q of the clinicians' policy) for ``steps`` minibatches; returns the last update's mean squared error."""
    targets = torch.cat([returns_to_go(data.rew, data.done, discount)[:, None].expand(-1, 2),
                         returns_to_go(data.cost[:, :n_cost], data.done, discount)], dim=1)  # (N, E)
    opt = torch.optim.Adam(critic.parameters(), lr=lr)
    mse = torch.tensor(float("nan"))
    for _ in range(steps):
        idx = torch.randint(len(targets), (batch_size,), generator=generator)
        q = critic(torch.cat([data.obs_n[idx], data.y[idx]], dim=1))  # (E, B)
        mse = ((q - targets[idx].T) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        mse.backward()
        opt.step()
    return float(mse.detach())


def _inputs(obs_n: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(B, S) states and (B, n, A) actions → critic inputs (B·n, S + A)."""
    bsz, n, _ = y.shape
    return torch.cat([obs_n[:, None, :].expand(bsz, n, obs_n.shape[-1]), y.float()], dim=-1).reshape(bsz * n, -1)


Serving = tuple[Guard, HurdleActor]
"""(guardian, fallback actor) of a policy served with the guardian fallback"""


def as_served(y: torch.Tensor, obs: torch.Tensor, serving: Serving | None,
              generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """The served policy's actions for the actor's scaled draws ``y (B, n, A)`` at physical states ``obs (B, S)``:
    where the guardian rejects (s, a), one draw of the fallback actor at s instead (no gradient through it).

    Returns (actions ``(B, n, A)``, inside ``(B, n)`` bool); ``serving`` None: ``y`` itself, all inside.
    """
    bsz, n, a_dim = y.shape
    if serving is None:
        return y, torch.ones(bsz, n, dtype=torch.bool)
    guard, fallback = serving
    acts = common.unscale_actions(y.detach().reshape(-1, a_dim).numpy())
    inside = torch.as_tensor(np.asarray(guard(np.repeat(obs.numpy(), n, axis=0), acts), bool).reshape(bsz, n))
    if bool(inside.all()):
        return y, inside
    with torch.no_grad():
        y_fb = common.hurdle_rsample(*fallback(obs), n, generator).to(y.dtype)
    return torch.where(inside[..., None], y, y_fb), inside


CostReading = Callable[[Callable[[np.ndarray, np.random.Generator], np.ndarray], np.random.Generator], np.ndarray]
"""(act (obs (B, S) physical, rng) → actions (B, A) physical, rng) → (C,) that policy's expected cost per stay"""


def served_act(actor: HurdleActor, serving: Serving | None, generator: torch.Generator
               ) -> Callable[[np.ndarray, np.random.Generator], np.ndarray]:
    """The served policy (the actor's draw, the fallback's where the guardian rejects it) as a simulator's act
    function on physical states; draws from ``generator`` (the simulator's own ``rng`` is not used)."""

    def act(obs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        obs_t = torch.tensor(np.asarray(obs), dtype=torch.float64)
        with torch.no_grad():
            y, _ = as_served(common.hurdle_rsample(*actor(obs_t), 1, generator), obs_t, serving, generator)
        return common.unscale_actions(y[:, 0].double().numpy())

    return act


def neighbour_cost_reading(reading: Any, cost_names: tuple[str, ...]) -> CostReading:
    """An :class:`ogsrl.ope.neighbour.AnchoredPool` as a :data:`CostReading` over ``cost_names`` (ValueError naming
    the columns the pool does not simulate)."""
    missing = [c for c in cost_names if c not in reading.cost_names]
    if missing:
        raise ValueError(f"cql: the nearest-neighbour cost check simulates {list(reading.cost_names)}, not {missing}")
    cols = [1 + reading.cost_names.index(c) for c in cost_names]
    return lambda act, rng: reading.value(act, rng)[cols]


def train(config: Config, data: Transitions, actor: HurdleActor, cost_names: tuple[str, ...],
          cost_limits: FloatArray, seed: int, *, discount: float = 1.0, guard: Guard | None = None,
          ood_penalty: float = 0.0, serving: Serving | None = None, cost_reading: CostReading | None = None,
          label: str = "cql") -> tuple[HurdleActor, dict[str, float], list[dict[str, float]]]:
    """Train a copy of ``actor`` by CQL (CCQL when ``config.constrained``) on ``data``.

    Args:
        config: hyper-parameters.
        data: logged transitions (:func:`transitions`).
        actor: the initial policy (left untouched).
        cost_names: the C cost columns of ``data.cost``; cost_limits: (C,) expected cost per stay allowed.
        seed: drives critic init, minibatches and every draw (same seed → same weights).
        discount: γ of the reward and cost returns.
        guard: GCQL/GCCQL: the guardian on (physical s, physical a); None: not guarded.
        ood_penalty: P, added to the reward times the rejected share of π's draws at s (guarded only).
        serving: (guardian, fallback actor): train the policy as served (see the module docstring); None: π itself.
        cost_reading: CCQL with ``config.cost_check_every``: (act, rng) → (C,) a policy's expected cost per stay in
            ``cost_names`` order, independent of the critics (:func:`neighbour_cost_reading`).
        label: prefix of the progress log lines.
    Returns:
        (trained actor, final metrics ``train/…``, one history row per ``log_every`` updates).
    """
    limits = np.asarray(cost_limits, dtype=np.float64)
    if limits.shape != (len(cost_names),) or (limits < 0).any():
        raise ValueError(f"cql: cost_limits must be {len(cost_names)} numbers ≥ 0, got {limits.tolist()}")
    targets = (1.0 - config.cost_margin) * limits
    checks = config.cost_check_every > 0  # Config makes it need constrained
    if checks and cost_reading is None:
        raise ValueError("cql: cost_check_every needs a cost_reading (the train split's nearest-neighbour simulator)")
    gen = torch.Generator().manual_seed(seed + 2)
    actor = copy.deepcopy(actor).train()
    n_obs, a_dim = data.obs.shape[1], data.y.shape[1]
    n_cost = len(cost_names) if config.constrained else 0
    precision = resolve_precision(config.precision)
    critic = CriticEnsemble(n_obs + a_dim, config.critic_hidden, 2 + n_cost, torch.Generator().manual_seed(seed + 1),
                            precision)
    t0 = time.perf_counter()  # the critics' warm start counts as training time
    warm: dict[str, float] = {}
    if config.critic_warm_start:
        warm["train/critic_warm_start_mse"] = warm_start_critics(
            critic, data, n_cost, config.critic_warm_start, config.batch_size, config.critic_lr, discount, gen)
        log.info("%s: critics warm-started on the logged returns-to-go (%d updates, MSE %.2f)", label,
                 config.critic_warm_start, warm["train/critic_warm_start_mse"])
    target = copy.deepcopy(critic).requires_grad_(False)
    actor_opt = torch.optim.Adam(actor.net.parameters(), lr=config.actor_lr, fused=True)  # one kernel per tensor
    critic_opt = torch.optim.Adam(critic.parameters(), lr=config.critic_lr, fused=True)
    log_temp = torch.tensor(math.log(config.initial_temperature), requires_grad=True)
    temp_opt = torch.optim.Adam([log_temp], lr=config.temperature_lr)
    lam = np.full(n_cost, config.init_multiplier)
    lam_t = torch.zeros(n_cost)
    n, big_n = config.batch_size, config.n_action_samples
    log_q0 = a_dim * math.log(0.5)
    history: list[dict[str, float]] = []
    sums: dict[str, float] = {}
    check_gen = torch.Generator().manual_seed(seed + 3)
    check_rng = np.random.default_rng(seed + 3)
    offset, checked = np.zeros(n_cost), np.full(n_cost, np.nan)

    def checked_metrics() -> dict[str, float]:
        return {f"train/cost_checked/{c}": float(checked[i]) for i, c in enumerate(cost_names[:n_cost])} \
            if checks else {}

    def check() -> None:
        """bᵢ ← J^NN_Ci − Ĵ_Ci over every start state (see the module docstring)."""
        nonlocal offset, checked
        assert cost_reading is not None
        checked = np.asarray(cost_reading(served_act(actor, serving, check_gen), check_rng), dtype=np.float64)
        with torch.no_grad():
            s0 = data.starts
            y0, _ = as_served(common.hurdle_rsample(*actor(data.obs[s0]), 1, check_gen), data.obs[s0], serving,
                              check_gen)
            read = critic(_inputs(data.obs_n[s0], y0))[2:].mean(dim=1).double().numpy()
        offset = checked - read
        log.info("%s: cost check: %s", label, " ".join(f"{c.removeprefix('cost_')} {checked[i]:.2f} (critics "
                                                      f"{read[i]:.2f})" for i, c in enumerate(cost_names[:n_cost])))

    for step in range(1, config.steps + 1):
        if checks and (step - 1) % config.cost_check_every == 0:
            check()
        idx = torch.randint(len(data.rew), (n,), generator=gen)
        obs, obs_n, y_data = data.obs[idx], data.obs_n[idx], data.y[idx]
        p_s = actor(obs, critic.dtype)  # the critics' step leaves the actor as it is: one forward serves both steps
        with torch.no_grad():
            p_s_fixed = tuple(t.detach() for t in p_s)
            p_next = actor(data.next_obs[idx], critic.dtype)
            y_pi = common.hurdle_rsample(*p_s_fixed, big_n, gen)  # (B, N, A)
            y_next = common.hurdle_rsample(*p_next, big_n + 1, gen)  # the last draw is a' of the TD target
            lp_pi, lp_next = log_prob_rows(p_s_fixed, y_pi), log_prob_rows(p_next, y_next[:, :big_n])
            y_rand = reference_draws(n, big_n, a_dim, gen)
            y_next_served, next_inside = as_served(y_next[:, big_n:], data.next_obs[idx], serving, gen)
            nxt = _inputs(data.next_obs_n[idx], y_next_served)  # (B, S + A)
            q_next = target(nxt)  # (E, B)
            cont = discount * (1.0 - data.done[idx])
            rew = data.rew[idx]
            rejected = torch.zeros(n)
            if guard is not None:
                m = min(config.guard_draws, big_n)
                acts = common.unscale_actions(y_pi[:, :m].reshape(-1, a_dim).numpy())  # (B, m, A) → (B·m, A)
                inside = guard(np.repeat(obs.numpy(), m, axis=0), acts).reshape(n, m)
                rejected = torch.as_tensor(1.0 - inside.mean(axis=1), dtype=torch.float32)
                rew = rew + ood_penalty * rejected
            y_r = rew + cont * q_next[:2].min(dim=0).values  # (B,)
            y_c = data.cost[idx].T[:n_cost] + cont * q_next[2:]  # (C, B)
            log_q = torch.cat([torch.full((n, big_n), log_q0), lp_pi.float(), lp_next.float()], dim=1)  # (B, 3N)
        # critics: TD + conservative terms, one fused forward over data and sampled actions
        y_all = torch.cat([y_data[:, None, :], y_rand, y_pi.float(), y_next[:, :big_n].float()], dim=1)  # (B, 1+3N, A)
        q = critic(_inputs(obs_n, y_all)).reshape(critic.members, n, 1 + 3 * big_n)  # (E, B, 1 + 3N)
        q_data, q_samp = q[..., 0], q[..., 1:]
        td_r = ((q_data[:2] - y_r) ** 2).mean()
        lse_r = torch.logsumexp(q_samp[:2] - log_q, dim=-1) - math.log(3 * big_n)  # (2, B)
        gap_r = (lse_r - q_data[:2]).mean()
        loss = td_r + config.alpha * gap_r
        if n_cost:
            td_c = ((q_data[2:] - y_c) ** 2).mean()
            lse_c = torch.logsumexp(-q_samp[2:] - log_q, dim=-1) - math.log(3 * big_n)  # (C, B)
            loss = loss + td_c + config.cost_alpha * (lse_c + q_data[2:]).mean()
        critic_opt.zero_grad(set_to_none=True)
        loss.backward()
        critic_opt.step()
        # actor: exact over components and zero patterns, reparameterised amounts
        y_enum, log_p = enumerate_actions(p_s, gen)  # (B, M, A), (B, M)
        lp_enum = log_prob_rows(p_s, y_enum)  # (B, M)
        y_valued, _ = as_served(y_enum, obs, serving, gen)
        q_enum = critic(_inputs(obs_n, y_valued), frozen=True).reshape(critic.members, n, -1)  # (E, B, M)
        value = q_enum[:2].min(dim=0).values - (lam_t[:, None, None] * q_enum[2:]).sum(0)  # (B, M)
        temp = log_temp.exp().detach()
        prob = log_p.exp()
        actor_loss = (prob * (temp * lp_enum - value.double())).sum(-1).mean()
        actor_opt.zero_grad(set_to_none=True)
        actor_loss.backward()
        actor_opt.step()
        entropy = float(-(prob.detach() * lp_enum.detach()).sum(-1).mean())
        temp_loss = -log_temp.exp() * (config.target_entropy - entropy)
        temp_opt.zero_grad(set_to_none=True)
        temp_loss.backward()
        temp_opt.step()
        common.soft_update(target, critic, config.tau)
        j_c = np.zeros(n_cost)
        if n_cost:
            with torch.no_grad():
                s0 = data.starts[torch.randint(len(data.starts), (n,), generator=gen)]
                y0, _ = as_served(common.hurdle_rsample(*actor(data.obs[s0], critic.dtype), 1, gen), data.obs[s0],
                                  serving, gen)
                j_c = critic(_inputs(data.obs_n[s0], y0))[2:].mean(dim=1).double().numpy() + offset  # (C,)
            lam = np.maximum(0.0, lam + config.multiplier_lr * (j_c - targets))
            lam_t = torch.as_tensor(lam, dtype=torch.float32)
        row = {"loss/td": float(td_r.detach()), "loss/conservative_gap": float(gap_r.detach()),
               "loss/actor": float(actor_loss.detach()),
               "train/q_data": float(q_data[:2].detach().mean()), "train/temperature": float(temp),
               "train/entropy": entropy, "train/rejected": float(rejected.mean()),
               **({"train/fallback_share": float(1.0 - next_inside.float().mean())} if serving is not None else {}),
               **{f"train/cost_value/{c}": float(j_c[i]) for i, c in enumerate(cost_names[:n_cost])},
               **{f"train/multiplier/{c}": float(lam[i]) for i, c in enumerate(cost_names[:n_cost])},
               **checked_metrics()}
        for k, v in row.items():
            sums[k] = sums.get(k, 0.0) + v
        if step % config.log_every == 0 or step == config.steps:
            count = step - (int(history[-1]["step"]) if history else 0)
            history.append({"step": float(step), **{k: v / count for k, v in sums.items()}})
            sums = {}
            elapsed = time.perf_counter() - t0
            last = history[-1]
            costs = " ".join(f"{c.removeprefix('cost_')} {last[f'train/cost_value/{c}']:.2f}/{d:.2f} "
                             f"λ {last[f'train/multiplier/{c}']:.2f}" for c, d in zip(cost_names[:n_cost], targets))
            log.info("%s: step %d/%d  Q(data) %.2f  gap %.2f  τ %.3f  rejected %.3f %s %.0f s, ETA %.0f s", label,
                     step, config.steps, last["train/q_data"], last["loss/conservative_gap"],
                     last["train/temperature"], last["train/rejected"], costs, elapsed,
                     elapsed / step * (config.steps - step))
    seconds = time.perf_counter() - t0
    log.info("%s: %d updates in %.1f s (%.1f updates/s)", label, config.steps, seconds, config.steps / seconds)
    last = history[-1]
    if checks:  # the trained actor's own check (not a training update: outside the timed loop)
        check()
        last = {**last, **checked_metrics()}
        log.info("%s: served cost per stay by the nearest-neighbour check: %s", label,
                 " ".join(f"{c.removeprefix('cost_')} {checked[i]:.2f}/{limits[i]:.2f}"
                          for i, c in enumerate(cost_names[:n_cost])))
    metrics = {"train/updates": float(config.steps), "train/seconds": seconds,
               "train/bfloat16_critics": float(precision == "bfloat16"),
               "train/updates_per_s": config.steps / max(seconds, 1e-9), **warm,
               **{f"train/cost_target/{c}": float(targets[i]) for i, c in enumerate(cost_names[:n_cost])},
               **{k: v for k, v in last.items() if k != "step"}}
    return actor.eval(), metrics, history


def initial_actor(config: Config, inputs: TrainInputs, seed: int) -> HurdleActor:
    """The clinicians' behaviour clone of ``seed`` (``warm_start``), else a fresh actor normalised on the train
    split's states."""
    if config.warm_start:
        clone = inputs.behaviour_clone(seed)
        if tuple(clone.feature_names) != tuple(inputs.state_features):
            raise ValueError(f"the behaviour clone reads {list(clone.feature_names)}, the run "
                             f"{list(inputs.state_features)}")
        return copy.deepcopy(clone.actor)
    states = inputs.train[list(inputs.state_features)].to_numpy(np.float64)
    return op.fresh_actor(inputs.state_features, config.hidden, config.components, states, seed)


def fit(config: Config, inputs: TrainInputs, seed: int) -> FitResult:
    """CQL / CCQL on the run's train split; with the run's ``guarded`` option, GCQL / GCCQL."""
    names = inputs.state_features
    mean, std = common.fit_normaliser(inputs.train[list(names)].to_numpy(np.float64))
    data = transitions(inputs.train, names, inputs.cost_columns, mean, std)
    if inputs.guarded and inputs.make_guard is None:
        raise ValueError(f"run {inputs.run!r}: guarded model-free training needs inputs.make_guard (the guardian)")
    guard = inputs.make_guard() if inputs.guarded and inputs.make_guard is not None else None
    serving = None
    if config.train_as_served:
        if not inputs.serves_fallback or inputs.make_guard is None:
            raise ValueError(f"run {inputs.run!r}: train_as_served needs the run served with the guardian fallback "
                             "(policies.serve_guardian_fallback: true, and not the fallback run itself)")
        serving = (guard or inputs.make_guard(), copy.deepcopy(inputs.behaviour_clone(seed).actor).eval())
    reading = None
    if config.cost_check_every:
        if inputs.make_neighbour_reading is None:
            raise ValueError(f"run {inputs.run!r}: cost_check_every needs the train split's nearest-neighbour "
                             "simulator (inputs.make_neighbour_reading)")
        reading = neighbour_cost_reading(
            inputs.make_neighbour_reading(config.cost_check_stays, config.cost_check_rollouts, seed),
            inputs.cost_columns)
    actor = initial_actor(config, inputs, seed)
    actor, metrics, history = train(config, data, actor, inputs.cost_columns, inputs.cost_limits, seed,
                                    discount=inputs.discount, guard=guard, ood_penalty=config.ood_penalty,
                                    serving=serving, cost_reading=reading, label=f"{inputs.run or 'cql'} seed {seed}")
    return FitResult(policy=SavedPolicy(actor, names, "sample", sample_seed=seed), metrics=metrics, history=history)


load = SavedPolicy.load
"""loader of a CQL checkpoint (the shared actor format)"""

__all__ = ["Config", "CostReading", "CriticEnsemble", "Transitions", "as_served", "enumerate_actions", "fit", "load",
           "neighbour_cost_reading", "returns_to_go", "served_act", "train", "transitions", "warm_start_critics"]
