"""Constrained Policy Optimization (CPO; Achiam, Held, Tamar, Abbeel, ICML 2017, arXiv 1705.10528) with any number
of constraints; TRPO (Schulman et al. 2015) is the same loop with ``constrained=False`` (MB-TRPO / GMB-TRPO). Both
are :data:`ogsrl.agents.algorithms.ALGORITHMS` entries (``cpo``: :func:`fit`, ``trpo``: :func:`fit_trpo`) sharing
:class:`Config`.

Checked against omnisafe ``on_policy/second_order/cpo.py`` (cases, recovery, line search). Each iteration
linearises around the current policy θ_k, with H the Fisher matrix of the trust-region metric
(:func:`ogsrl.agents.onpolicy.hurdle_kl`), g the reward-surrogate gradient, bᵢ the gradient of constraint i's
per-episode cost surrogate and cᵢ = U_Ci(π_k) − dᵢ, U_Ci the batch's upper confidence bound on J_Ci
(Ĵ + z·se at ``Config.cost_confidence``; :func:`ogsrl.agents.onpolicy.cost_upper_bound`):

    x* = argmax_x gᵀx   s.t.  ½ xᵀHx ≤ δ,   bᵢᵀx + cᵢ ≤ 0  (i = 1 … C)

By the KKT conditions x* lies in span{H⁻¹g, H⁻¹b₁, …, H⁻¹b_C}, so conjugate-gradient solves give the subspace and
the Gram matrix Mⱼₖ = uⱼᵀH⁻¹uₖ (u = g, b₁ … b_C); the small QCQP is solved in whitened coordinates (cvxpy), or by
Achiam's closed form when one constraint can bind. When no point of the trust region is feasible, the recovery
step minimises the worst linearised violation inside it (one constraint: x = −√(2δ/s)·H⁻¹b). A backtracking line
search then checks the exact metric, the reward surrogate and each cost surrogate.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from typing import Literal

import cvxpy as cp
import numpy as np
import torch

from ogsrl.agents import onpolicy as op
from ogsrl.agents.actor import HurdleActor, SavedPolicy
from ogsrl.agents.common import FloatArray
from ogsrl.agents.inputs import FitResult, TrainInputs

log = logging.getLogger(__name__)

EPS = 1e-8
"""numerical zero for quadratic forms uᵀH⁻¹u"""
TIGHT = {"tol_gap_abs": 1e-10, "tol_gap_rel": 1e-10, "tol_feas": 1e-10}
"""Clarabel tolerances for the small subspace problems (cheap at this size; the step must match the closed form)"""


@dataclass(frozen=True, slots=True)
class Config:
    """CPO, or TRPO (the same fields; no constraint in the update), inside the world model."""

    iterations: int = 180
    """policy updates, each on one fresh batch of episodes"""
    num_envs: int = 1000
    """B, episodes per batch"""
    horizon: int = 20
    """T, steps per episode at most (episodes still running are bootstrapped with the critic)"""
    warm_start: bool = True
    """start from the clinicians' behaviour clone of the same seed (the paper's initialisation); False: a fresh
    actor of ``hidden``/``components``"""
    hidden: tuple[int, ...] = (64, 64)
    """actor MLP widths when not warm-started (a warm start takes the clone's architecture)"""
    components: int = 1
    """mixture components K of the actor when not warm-started"""
    critic_hidden: tuple[int, ...] = (64, 64)
    """widths of each value critic"""
    lam: float = 0.95
    """GAE λ for reward and costs (the discount is params ``policies.discount``)"""
    target_kl: float = 0.01
    """δ, trust-region radius in the hurdle metric (mean over visited states)"""
    cg_iters: int = 10
    """conjugate-gradient iterations per H⁻¹u solve"""
    fisher_fraction: float = 0.2
    """share of the batch's rows (every k-th) the Fisher-vector products average over; the gradients and the line
    search use every row"""
    cg_damping: float = 0.1
    """λ_damp: CG solves (H + λ_damp·I)x = u"""
    backtrack_coef: float = 0.8
    """line-search shrink factor β (step·β^k)"""
    max_backtracks: int = 15
    """line-search tries after the full step; none accepted → no update this iteration"""
    critic_lr: float = 1e-3
    """Adam learning rate of the critics"""
    critic_epochs: int = 5
    """passes over each batch for the critics"""
    critic_batch_size: int = 4096
    """critic minibatch size (rows)"""
    log_every: int = 5
    """iterations between progress log lines"""
    threads: int = 1
    """torch and BLAS threads while training, whatever ``compute.threads`` says (small matrices: docs/policies-and-ope.md
    "Defaults" has the measured figures)"""
    keep: Literal["best_feasible", "last"] = "best_feasible"
    """iterate returned under cost limits: the best feasible one (``op.FeasibleIterate``; the final iterate gets one
    extra batch), or the last (TRPO always returns the last)"""
    confirm: int = 5
    """K: the K best iterates by their own batch are measured again on one fresh batch each and the kept one is chosen
    by those fresh measurements (no winner's curse); 0: by their own batches"""
    forecast_window: int = 10
    """W: each update's constraint adds the mean under-forecast of the last W updates (realised batch cost return
    minus Ĵ + the accepted step's cost-surrogate change; :class:`ForecastBias`); 0: plain CPO"""
    cost_confidence: float = 0.95
    """one-sided level of the batch's upper confidence bound Ĵ_C + z·se on each expected cost return: the constraint
    of every update and the kept iterate's feasibility use it (``op.cost_upper_bound``; 0.5: the point estimate)"""

    def __post_init__(self) -> None:
        if not 0.5 <= self.cost_confidence < 1:
            raise ValueError(f"Config.cost_confidence must lie in [0.5, 1), got {self.cost_confidence!r}")
        op.check_config(self, positive=("iterations", "threads", "num_envs", "horizon", "components", "target_kl", "cg_iters",
                                        "critic_lr", "critic_epochs", "critic_batch_size", "log_every"),
                        unit=("lam", "fisher_fraction"), widths=("hidden", "critic_hidden"),
                        non_negative=("confirm", "forecast_window"))
        if not 0 < self.backtrack_coef < 1:
            raise ValueError(f"Config.backtrack_coef must lie in (0, 1), got {self.backtrack_coef!r}")
        if self.max_backtracks < 0 or self.cg_damping < 0:
            raise ValueError(f"Config.max_backtracks and cg_damping must be ≥ 0, got "
                             f"{self.max_backtracks!r}, {self.cg_damping!r}")


# ---- the pure step ----------------------------------------------------------------------------------------------


class CPOCase(IntEnum):
    """Geometry of the linearised problem (omnisafe's numbering)."""

    RECOVERY = 0
    """no point of the trust region satisfies every linearised constraint: minimise the worst violation"""
    INFEASIBLE = 1
    """the current policy violates a constraint, yet part of the trust region satisfies all: solve the QCQP"""
    PARTIAL = 2
    """feasible now and some constraint's boundary cuts the trust region: solve the QCQP"""
    FEASIBLE = 3
    """the whole trust region satisfies every constraint: natural-gradient step"""
    NO_CONSTRAINT = 4
    """no constraint (TRPO) or every cost gradient ≈ 0 while feasible: natural-gradient step"""


def natural_step(g: FloatArray, hinv_g: FloatArray, delta: float) -> FloatArray:
    """x = √(2δ / gᵀH⁻¹g)·H⁻¹g, the trust-region boundary along the natural gradient (0 if g ≈ 0)."""
    q = float(g @ hinv_g)
    return np.sqrt(2 * delta / q) * hinv_g if q > EPS else np.zeros_like(hinv_g)


def closed_form_single(q: float, r: float, s: float, c: float, delta: float) -> tuple[float, float]:
    """Dual solution (λ*, ν*) of one constraint (Achiam 2017, Theorem 2, in ascent form), needing B = 2δ − c²/s ≥ 0.

        x* = (H⁻¹g − ν*·H⁻¹b) / λ*,     q = gᵀH⁻¹g, r = gᵀH⁻¹b, s = bᵀH⁻¹b
        dual: min_{λ>0, ν≥0} (q − 2νr + ν²s)/(2λ) + λδ − νc,   ν*(λ) = max(0, (λc + r)/s)
        ν* > 0 (λc + r > 0):  D_a(λ) = A/(2λ) + λB/2 − rc/s,   A = q − r²/s,  minimiser √(A/B)
        ν* = 0 (λc + r ≤ 0):  D_b(λ) = q/(2λ) + λδ,              minimiser √(q/(2δ))

    Each minimiser is projected onto its λ-interval and the smaller dual value wins.
    """
    a_, b_ = max(q - r * r / s, EPS), max(2 * delta - c * c / s, EPS)
    cut = -r / c if abs(c) > EPS else (math.inf if r > 0 else 0.0)  # λ where λc + r changes sign
    if abs(c) <= EPS:
        in_a, in_b = (EPS, math.inf) if r > 0 else None, (EPS, math.inf) if r <= 0 else None
    elif c < 0:  # λc + r > 0 ⟺ λ < −r/c
        in_a = (EPS, cut) if cut > EPS else None
        in_b = (max(cut, EPS), math.inf)
    else:  # λc + r > 0 ⟺ λ > −r/c
        in_a = (max(cut, EPS), math.inf)
        in_b = (EPS, cut) if cut > EPS else None
    best = (math.inf, 1.0, 0.0)
    if in_a is not None:
        lam = float(np.clip(math.sqrt(a_ / b_), *in_a))
        best = min(best, (a_ / (2 * lam) + lam * b_ / 2 - r * c / s, lam, max(0.0, (lam * c + r) / s)))
    if in_b is not None:
        lam = float(np.clip(math.sqrt(max(q, EPS) / (2 * delta)), *in_b))
        best = min(best, (q / (2 * lam) + lam * delta, lam, 0.0))
    return best[1], best[2]


def whiten(gram: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Gram matrix M (K, K) → (L (K, r), W (K, r)) with M = L Lᵀ and y = W z, so that yᵀMy = ‖z‖², My = Lz."""
    m = 0.5 * (gram + gram.T)
    w, q = np.linalg.eigh(m)
    keep = w > max(w.max(), 0.0) * 1e-10
    return q[:, keep] * np.sqrt(w[keep]), q[:, keep] / np.sqrt(w[keep])


def _solve(problem: cp.Problem) -> bool:
    """Solve with Clarabel, then SCS; True if a solution came back."""
    for solver, options in ((cp.CLARABEL, TIGHT), (cp.SCS, {})):
        try:
            problem.solve(solver=solver, **options)
        except cp.error.SolverError:
            continue
        if problem.status in (cp.OPTIMAL, cp.OPTIMAL_INACCURATE):
            return True
    return False


def cpo_step(g: FloatArray, b: FloatArray, c: FloatArray, hinv_g: FloatArray, hinv_b: FloatArray,
             delta: float) -> tuple[FloatArray, CPOCase]:
    """The CPO step for the linearised problem in the module docstring.

    Args:
        g: (P,) reward-surrogate gradient.
        b: (C, P) cost-surrogate gradients, C ≥ 0 (C = 0 gives the TRPO step).
        c: (C,) current violations J_Ci − dᵢ (> 0 infeasible).
        hinv_g, hinv_b: H⁻¹g (P,) and H⁻¹bᵢ (C, P), e.g. from conjugate gradient.
        delta: trust-region radius δ of ½xᵀHx ≤ δ.
    Returns:
        (step x (P,), case).
    """
    g, hinv_g = np.asarray(g, np.float64), np.asarray(hinv_g, np.float64)
    b, hinv_b = np.asarray(b, np.float64).reshape(-1, len(g)), np.asarray(hinv_b, np.float64).reshape(-1, len(g))
    c = np.asarray(c, np.float64).reshape(-1)
    if len(c) == 0:
        return natural_step(g, hinv_g, delta), CPOCase.NO_CONSTRAINT
    s = np.einsum("ip,ip->i", b, hinv_b)  # bᵢᵀH⁻¹bᵢ
    flat = s <= EPS
    if (c < 0).all() and flat.all():
        return natural_step(g, hinv_g, delta), CPOCase.NO_CONSTRAINT
    # constraint i cannot bind when its half-space holds the whole trust region: cᵢ < 0 and cᵢ² > 2δ·sᵢ
    slack = (c < 0) & (flat | (c**2 > 2 * delta * np.maximum(s, EPS)))
    if slack.all():
        return natural_step(g, hinv_g, delta), CPOCase.FEASIBLE
    bind = ~slack & ~flat  # a flat constraint left here is violated (cᵢ ≥ 0): no step can mend it linearly
    if not bind.any():
        return np.zeros_like(g), CPOCase.RECOVERY
    b, hinv_b, c_b = b[bind], hinv_b[bind], c[bind]
    basis = np.vstack([hinv_g, hinv_b])  # (1 + K, P)
    grads = np.vstack([g, b])
    lmat, wmat = whiten(grads @ basis.T)  # Mⱼₖ = uⱼᵀH⁻¹uₖ
    radius = math.sqrt(2 * delta)
    if (flat & (c >= 0)).any():  # violated with no gradient to mend it: lower the others' worst violation
        return _recovery(lmat, wmat, basis, c_b, radius), CPOCase.RECOVERY
    feasible_now = bool((c < 0).all())
    if not feasible_now:
        worst = _worst_violation(lmat[1:], c_b, radius)
        if worst > 0:
            return _recovery(lmat, wmat, basis, c_b, radius), CPOCase.RECOVERY
    case = CPOCase.PARTIAL if feasible_now else CPOCase.INFEASIBLE
    if len(c_b) == 1:  # Achiam's closed form
        q, r, s1 = float(g @ hinv_g), float(g @ hinv_b[0]), float(b[0] @ hinv_b[0])
        lam, nu = closed_form_single(q, r, s1, float(c_b[0]), delta)
        return (hinv_g - nu * hinv_b[0]) / lam, case
    return subspace_qcqp(lmat, wmat, basis, c_b, radius), case


def _worst_violation(lb: FloatArray, c: FloatArray, radius: float) -> float:
    """min over ‖z‖ ≤ radius of maxᵢ (Lbᵢ·z + cᵢ); for one constraint c − radius·‖Lb‖ = c − √(2δs)."""
    if len(c) == 1:
        return float(c[0] - radius * np.linalg.norm(lb[0]))
    z, t = cp.Variable(lb.shape[1]), cp.Variable()
    scale = max(np.abs(lb).max(), np.abs(c).max(), EPS)
    prob = cp.Problem(cp.Minimize(t), [lb @ z / scale + c / scale <= t, cp.norm(z) <= radius])
    return float(t.value) * scale if _solve(prob) else math.inf


def _recovery(lmat: FloatArray, wmat: FloatArray, basis: FloatArray, c: FloatArray, radius: float) -> FloatArray:
    """argmin over ½xᵀHx ≤ δ of maxᵢ (bᵢᵀx + cᵢ), x in the subspace; for one constraint −√(2δ/s)·H⁻¹b."""
    lb = lmat[1:]
    if len(c) == 1:
        z = -radius * lb[0] / max(np.linalg.norm(lb[0]), EPS)
    else:
        zv, t = cp.Variable(lb.shape[1]), cp.Variable()
        scale = max(np.abs(lb).max(), np.abs(c).max(), EPS)
        prob = cp.Problem(cp.Minimize(t), [lb @ zv / scale + c / scale <= t, cp.norm(zv) <= radius])
        if not _solve(prob):
            log.warning("cpo: recovery problem unsolved (%s); no step", prob.status)
            return np.zeros(basis.shape[1])
        z = np.asarray(zv.value)
    return (wmat @ z) @ basis


def subspace_qcqp(lmat: FloatArray, wmat: FloatArray, basis: FloatArray, c: FloatArray,
                  radius: float) -> FloatArray:
    """max a·z s.t. ‖z‖ ≤ radius, Lbᵢ·z + cᵢ ≤ 0 in whitened subspace coordinates (a = L₀), mapped back to x.

    Rows are scaled to unit norm (the feasible set and the argmax do not change) so the solver sees O(1) numbers.
    """
    a, lb = lmat[0], lmat[1:]
    norms = np.maximum(np.linalg.norm(lb, axis=1), EPS)
    z = cp.Variable(lmat.shape[1])
    prob = cp.Problem(cp.Maximize(a / max(np.linalg.norm(a), EPS) @ z / radius),
                      [(lb / norms[:, None]) @ z / radius + c / norms / radius <= 0, cp.norm(z) <= radius])
    if not _solve(prob):
        log.warning("cpo: subspace QCQP unsolved (%s); no step", prob.status)
        return np.zeros(basis.shape[1])
    return (wmat @ np.asarray(z.value)) @ basis


def line_search(evaluate: Callable[[float], tuple[float, FloatArray, float]], slack: FloatArray, delta: float,
                require_gain: bool, backtrack_coef: float, max_backtracks: int) -> tuple[float, int]:
    """Backtrack along a step: try fractions β^k, k = 0 … max_backtracks, and accept the first with

        metric ≤ δ,   Δcostᵢ ≤ slackᵢ for every satisfied constraint (slackᵢ ≥ 0),
        maxᵢ (Δcostᵢ − slackᵢ) over the violated ones ≤ their current worst violation maxᵢ (−slackᵢ),
        and (if ``require_gain``) reward gain ≥ 0,

    where ``evaluate(frac) -> (reward gain, Δcost (C,), metric)`` measures the exact surrogates at θ + frac·x and
    ``slack`` = −c. A satisfied constraint stays satisfied; the worst violation may not grow (the quantity the
    recovery step minimises), while a less violated constraint may rise towards it. Returns (fraction,
    backtracks); (0.0, max_backtracks + 1) when nothing is accepted (no update).
    """
    slack = np.asarray(slack, dtype=np.float64)
    violated = slack < 0
    for k in range(max_backtracks + 1):
        frac = backtrack_coef**k
        gain, dcost, metric = evaluate(frac)
        dcost = np.asarray(dcost, dtype=np.float64)
        if not (np.isfinite(gain) and np.isfinite(dcost).all() and np.isfinite(metric)):
            continue
        if metric > delta or (require_gain and gain < 0) or (dcost[~violated] > slack[~violated]).any():
            continue
        if violated.any() and (dcost - slack)[violated].max() > (-slack[violated]).max():
            continue
        return frac, k
    return 0.0, max_backtracks + 1


class ForecastBias:
    """How much CPO's linearisation under-forecasts the cost of the policy it steps to.

    After update k the linear model forecasts the next policy's expected cost return as F_k = Ĵ_k + Δ_k (Δ_k the
    cost surrogates' change at the accepted step). The next batch measures Ĵ_{k+1} = J(π_{k+1}) + noise, so
    e_k = Ĵ_{k+1} − F_k is the linearisation error plus zero-mean batch noise. A reward step that bends towards higher
    cost is typically under-forecast, so the iterates settle above the boundary the constraint aims at. The bias
    b = max(0, mean of the last W errors) (per constraint) is added to cᵢ = Uᵢ − dᵢ; over-forecasts are not credited
    back (the correction only ever tightens the constraint)."""

    def __init__(self, n_costs: int, window: int) -> None:
        self.window = window
        self.errors: list[FloatArray] = []
        self.forecast: FloatArray | None = None
        self.zero = np.zeros(n_costs)

    def observe(self, realised: FloatArray) -> None:
        """Record the batch cost return ``realised`` (C,) of the policy the last forecast was about."""
        if self.forecast is not None and self.window > 0:
            self.errors = [*self.errors, np.asarray(realised, np.float64) - self.forecast][-self.window:]
        self.forecast = None

    def predict(self, forecast: FloatArray) -> None:
        self.forecast = np.asarray(forecast, np.float64)

    @property
    def bias(self) -> FloatArray:
        """b (C,): 0 until three errors are recorded."""
        if len(self.errors) < 3:
            return self.zero
        return np.maximum(np.mean(self.errors, axis=0), 0.0)


# ---- training -----------------------------------------------------------------------------------------------------


def _update(cfg: Config, actor: HurdleActor, batch: op.Batch, limits: FloatArray, cost_bound: FloatArray,
            constrained: bool) -> tuple[dict[str, float], FloatArray]:
    """One CPO (or, unconstrained, TRPO) actor update on ``batch``, with cᵢ = Uᵢ − dᵢ for the (corrected) cost bounds
    ``cost_bound`` (C,); returns (diagnostics, the cost surrogates' change at the accepted step (C,))."""
    params = op.actor_params(actor)
    theta = torch.nn.utils.parameters_to_vector(params).detach().double()
    adv_r = (batch.adv_r - batch.adv_r.mean()) / (batch.adv_r.std() + 1e-8)

    def surrogates() -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, ...]]:
        """per-episode (Σ ratio·Â_R / B, Σ ratio·A_Ci / B (C,)) and the new distribution parameters"""
        new = actor(batch.x)
        ratio = torch.exp(op.log_prob_scaled(new, batch.y) - batch.old_logp)
        return ((ratio * adv_r).sum() / batch.n_episodes,
                (ratio[:, None] * batch.adv_c).sum(0) / batch.n_episodes, new)

    sur_r, sur_c, new = surrogates()
    g = op.flat_grad(sur_r, params, retain_graph=True).double()
    rows = torch.arange(0, len(batch.x), max(1, round(1 / cfg.fisher_fraction)))  # strided subsample
    product = op.fisher_product(actor, batch.x[rows], tuple(t[rows] for t in batch.old), cfg.cg_damping)
    hinv_g = op.conjugate_gradient(product, g, cfg.cg_iters)
    c = cost_bound - limits
    if constrained and len(limits):
        b = torch.stack([op.flat_grad(sur_c[i], params, retain_graph=True).double() for i in range(len(limits))])
        hinv_b = torch.stack([op.conjugate_gradient(product, bi, cfg.cg_iters) for bi in b])
        step, case = cpo_step(g.numpy(), b.numpy(), c, hinv_g.numpy(), hinv_b.numpy(), cfg.target_kl)
    else:
        step, case = cpo_step(g.numpy(), np.zeros((0, len(g))), np.zeros(0), hinv_g.numpy(), np.zeros((0, len(g))),
                              cfg.target_kl)
    step_t = torch.as_tensor(step)
    base_r, base_c = float(sur_r.detach()), sur_c.detach().double().numpy()

    @torch.no_grad()
    def evaluate(frac: float) -> tuple[float, FloatArray, float]:
        op.set_flat(params, theta + frac * step_t)
        r, cc, nw = surrogates()
        return float(r) - base_r, cc.double().numpy() - base_c, float(op.hurdle_kl(batch.old, nw).mean())

    slack = -c if constrained else np.full(len(c), np.inf)
    frac, backtracks = line_search(evaluate, slack, cfg.target_kl, case > CPOCase.INFEASIBLE, cfg.backtrack_coef,
                                   cfg.max_backtracks)
    _, dcost, kl = evaluate(frac)
    return {"case": float(case), "kl": kl, "step_fraction": frac, "backtracks": float(backtracks),
            "step_norm": float(np.linalg.norm(step)) * frac}, dcost


def train(config: Config, make_env: op.MakeEnv, feature_names: tuple[str, ...], cost_names: tuple[str, ...],
          cost_limits: FloatArray, actor: HurdleActor, seed: int, *, constrained: bool, discount: float = 1.0,
          label: str = "cpo") -> tuple[HurdleActor, dict[str, float], list[dict[str, float]]]:
    """Train a copy of ``actor`` by CPO (``constrained``) or TRPO in ``make_env(config.num_envs, seed)``.

    Args:
        config: hyper-parameters.
        make_env: (num_envs, seed) → vector env (frozen after termination, ``info["cost"] (B, C)``).
        feature_names: observation columns, in order; cost_names: the C columns of ``info["cost"]``.
        cost_limits: (C,) dᵢ, the allowed mean discounted cost return per episode.
        actor: the initial policy (left untouched; e.g. the behaviour clone or :func:`op.fresh_actor`).
        seed: drives env resets, action sampling, critics and minibatches (same seed → same weights).
        constrained: CPO; False ignores the costs in the update (TRPO) and still reports them.
        discount: γ of reward and cost returns.
        label: prefix of the progress log lines.
    Returns:
        (trained actor, final metrics ``train/…``, one history row per iteration with an integer ``step``).
    """
    limits = op.check_fit_inputs(feature_names, cost_names, cost_limits, actor)
    actor = copy.deepcopy(actor).train()
    critics = op.ValueCritics(len(feature_names) + 1, config.critic_hidden, 1 + len(cost_names),
                              torch.Generator().manual_seed(seed + 1))
    optim = torch.optim.Adam(critics.parameters(), lr=config.critic_lr)
    gen = torch.Generator().manual_seed(seed + 2)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 3]))
    next_seed = op.seed_stream(seed)
    env = make_env(config.num_envs, seed)
    history: list[dict[str, float]] = []
    progress = op.ProgressLog(label, config.iterations, cost_names, limits, config.log_every)
    keeper = op.FeasibleIterate(limits, config.cost_confidence, config.confirm)
    forecast = ForecastBias(len(cost_names), config.forecast_window if constrained else 0)
    for it in range(config.iterations):
        t0 = time.perf_counter()
        with torch.no_grad():
            ro = op.collect(env, actor, rng, config.horizon, next_seed(), len(cost_names))
        t_rollout = time.perf_counter() - t0
        batch, xin, targets = op.prepare(ro, actor, critics, config.horizon, discount, config.lam)
        keeper.offer(actor, it, batch.reward_return, batch.cost_return, batch.cost_return_se)
        forecast.observe(batch.cost_return)
        cost_bound = op.cost_upper_bound(batch.cost_return, batch.cost_return_se, config.cost_confidence)
        diag, dcost = _update(config, actor, batch, limits, cost_bound + forecast.bias, constrained)
        forecast.predict(batch.cost_return + dcost)
        v_loss = op.fit_critics(critics, optim, xin, targets, config.critic_epochs, config.critic_batch_size, gen)
        row = {"step": float(it + 1), "iteration": float(it), "reward_return": batch.reward_return,
               **{f"cost_return/{n}": float(v) for n, v in zip(cost_names, batch.cost_return)},
               **{f"forecast_bias/{n}": float(v) for n, v in zip(cost_names, forecast.bias)},
               **diag, "loss/critic": v_loss, "seconds": time.perf_counter() - t0,
               "seconds_rollout": t_rollout}
        history.append(row)
        progress(row)
    selected = (keeper.finish(env, actor, rng, config.horizon, next_seed, cost_names, discount, config.iterations,
                              label) if constrained and config.keep == "best_feasible" else {})
    seconds = progress.summary(history)
    last = history[-1]
    metrics = {"train/iterations": float(config.iterations), "train/seconds": seconds,
               "train/iterations_per_s": config.iterations / max(seconds, 1e-9),
               "train/return": last["reward_return"],
               **{f"train/cost_return/{n}": last[f"cost_return/{n}"] for n in cost_names},
               "train/kl": last["kl"], **selected}
    return actor.eval(), metrics, history


# ---- the algorithms (ALGORITHMS entries) --------------------------------------------------------------------------


def _fit(config: Config, inputs: TrainInputs, seed: int, constrained: bool) -> FitResult:
    name = "cpo" if constrained else "trpo"
    actor = op.initial_actor(inputs, seed, config.warm_start, config.hidden, config.components)
    with op.threads(config.threads):
        actor, metrics, history = train(
            config, lambda n, s: inputs.make_env(n, s, inputs.guarded), inputs.state_features, inputs.cost_columns,
            inputs.cost_limits, actor, seed, constrained=constrained, discount=inputs.discount,
            label=f"{inputs.run or name} seed {seed}")
    return FitResult(policy=SavedPolicy(actor, inputs.state_features, "sample", sample_seed=seed), metrics=metrics,
                     history=history)


def fit(config: Config, inputs: TrainInputs, seed: int) -> FitResult:
    """CPO in the run's world-model environment (guarded or not) under ``inputs.cost_limits``."""
    return _fit(config, inputs, seed, constrained=True)


def fit_trpo(config: Config, inputs: TrainInputs, seed: int) -> FitResult:
    """TRPO (CPO's update without constraints) in the run's world-model environment; costs are only reported."""
    return _fit(config, inputs, seed, constrained=False)


load = SavedPolicy.load
"""loader of a CPO/TRPO checkpoint (the shared actor format)"""
