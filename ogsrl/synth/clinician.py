"""The simulated clinicians: the behaviour policy that generates the logged actions (docs/simulator.md §3).

Each ICU stay has one attending (written as ``admissions.admit_provider_id``); attendings differ in fluid
liberality, vasopressor threshold and dose, and in their share of unsafe decisions. At each decision time the
clinician sees only the observed state (computed by the cohort feature code from the charted rows) and draws the
next 4-hour action from a three-component mixture: a guideline-like *regular* mode, an *over-treating* unsafe mode
(fluids despite overload/hypoxia, refractory vasopressor doses) and an *under-treating* unsafe mode (nothing despite
hypotension). Per action dimension the density is a point mass at 0 plus a log-normal on (0, ∞), so log-densities
are w.r.t. (δ0 + Lebesgue) per dimension in physical units (mL, µg/kg/min).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pandas as pd
from scipy.special import expit, logsumexp

from ogsrl import features as F

FloatArray = npt.NDArray[np.floating]

FEATURES: tuple[str, ...] = ("map", "lactate", "spo2", "pf_ratio", "urine_step", "fluid_cum", "weight", "sofa")
"""observed state columns the clinician reads, in this order"""
N_ATTENDINGS = 10
ATTENDING_SEED = 20260101
"""the attending pool is a fixed part of the simulated world (independent of the data seed)"""
FLUID_SIGMA = 0.55
"""log-normal σ of a non-zero fluid volume"""
NEE_SIGMA = 0.5
"""log-normal σ of a non-zero vasopressor dose"""
STEP_H = 4.0


@dataclass(frozen=True, slots=True)
class Practice:
    """How the simulated clinicians dose: the demo's logging policy (params ``synth.clinicians``). The defaults are
    the demo's clinicians; other values generate data logged by other clinicians (to test how off-policy estimates
    depend on who logged the data). The clinicians' truth (``ogsrl truth behaviour``) follows them, and so do the
    admission orders before a stay's first decision time, which every policy's simulated stays share."""

    fluid_scale: float = 1.0
    """every fluid volume the clinicians draw, times this (before clipping to the action bounds)"""
    vasopressor_scale: float = 1.0
    """every vasopressor dose the clinicians draw, times this"""
    dose_spread: float = 1.0
    """the log-normal σ of a non-zero dose at a given state (``FLUID_SIGMA``, ``NEE_SIGMA``), times this"""
    style_spread: float = 1.0
    """the attendings' dose styles (fluid liberality, fluid threshold, vasopressor dose) spread this many times as
    wide around the same mean practice"""

    def __post_init__(self) -> None:
        for name in ("fluid_scale", "vasopressor_scale", "dose_spread", "style_spread"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v > 0):
                raise ValueError(f"{name} must be a finite number > 0, got {v!r}")


DEMO = Practice()
"""the demo's clinicians"""


@dataclass(frozen=True, slots=True)
class Styles:
    """Per-attending practice style; arrays shaped ``(N_ATTENDINGS,)``."""

    fluid_lib: FloatArray
    """log multiplier of fluid volume (liberal > 0)"""
    fluid_shift: FloatArray
    """logit shift of the probability of giving fluids"""
    map_target: FloatArray
    """MAP (mmHg) below which the attending starts vasopressors"""
    nee_dose: FloatArray
    """log multiplier of the vasopressor dose"""
    unsafe: FloatArray
    """share of decisions drawn from the unsafe modes"""


def attendings(practice: Practice = DEMO) -> Styles:
    """The fixed pool of simulated attendings (seeded by ``ATTENDING_SEED``; ``practice.style_spread`` scales the
    same draws)."""
    rng = np.random.default_rng(ATTENDING_SEED)
    n, k = N_ATTENDINGS, practice.style_spread
    return Styles(
        fluid_lib=rng.normal(0.0, 0.3 * k, n),
        fluid_shift=rng.normal(0.0, 0.5 * k, n),
        map_target=rng.normal(65.0, 3.0, n),
        nee_dose=rng.normal(0.0, 0.3 * k, n),
        unsafe=rng.uniform(0.04, 0.16, n),
    )


def _cols(states: pd.DataFrame | FloatArray) -> dict[str, FloatArray]:
    if isinstance(states, pd.DataFrame):
        missing = [c for c in FEATURES if c not in states.columns]
        if missing:
            raise ValueError(f"clinician: state columns missing: {missing}")
        return {c: states[c].to_numpy(np.float64) for c in FEATURES}
    arr = np.asarray(states, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != len(FEATURES):
        raise ValueError(f"clinician: states must be (B, {len(FEATURES)}) in order {FEATURES}, got {arr.shape}")
    return {c: arr[:, i] for i, c in enumerate(FEATURES)}


def mixture_params(states: pd.DataFrame | FloatArray, attending: npt.ArrayLike, practice: Practice = DEMO
                   ) -> dict[str, FloatArray]:
    """Mixture weights and per-mode parameters, each ``(B, 3)`` (modes: regular, over-treat, under-treat).

    Returns keys ``w`` (mode weights), ``pf`` / ``pv`` (probability of a non-zero fluid / vasopressor action),
    ``mf`` / ``mv`` (log-normal log-medians of the non-zero amounts).
    """
    x = _cols(states)
    st = attendings(practice)
    a = np.asarray(attending, dtype=np.int64)
    if a.shape != x["map"].shape:
        raise ValueError(f"clinician: attending must have shape {x['map'].shape}, got {a.shape}")
    if len(a) and (a.min() < 0 or a.max() >= N_ATTENDINGS):
        raise ValueError(f"clinician: attending ids must be in [0, {N_ATTENDINGS}), got {a.min()}..{a.max()}")
    weight = np.clip(x["weight"], 30.0, 250.0)
    hypo = np.clip((70.0 - x["map"]) / 10.0, 0.0, 3.0)
    lac = np.clip((x["lactate"] - 2.0) / 2.0, 0.0, 3.0)
    uo = x["urine_step"] / (weight * STEP_H)
    oligo = np.clip((0.5 - uo) / 0.5, 0.0, 1.0)
    per_kg = x["fluid_cum"] / weight
    overload = np.clip((per_kg - 40.0) / 20.0, 0.0, 3.0)
    hypox = np.clip((94.0 - x["spo2"]) / 4.0, 0.0, 3.0) + (x["pf_ratio"] < 200)
    below = np.clip((st.map_target[a] - x["map"]) / 5.0, -2.0, 4.0)
    b = len(a)
    pf = np.empty((b, 3))
    pv = np.empty((b, 3))
    mf = np.empty((b, 3))
    mv = np.empty((b, 3))
    # regular (guideline-like) mode
    pf[:, 0] = expit(-1.3 + 1.3 * hypo + 0.8 * lac + 0.8 * oligo - 1.0 * overload - 0.6 * hypox
                     + st.fluid_shift[a])
    mf[:, 0] = np.log(500.0) + st.fluid_lib[a] + np.log1p(0.5 * hypo + 0.3 * lac) - 0.4 * overload
    pv[:, 0] = expit(-2.6 + 1.6 * below + 0.6 * lac + 0.6 * (per_kg > 20) + 0.25 * (x["sofa"] - 6.0))
    mv[:, 0] = np.log(0.08) + st.nee_dose[a] + np.log1p(0.4 * hypo)
    # over-treating mode: liberal fluids regardless of overload/hypoxia, refractory pressor doses
    pf[:, 1] = expit(1.5 + 0.5 * hypo)
    mf[:, 1] = np.log(1500.0) + st.fluid_lib[a]
    pv[:, 1] = expit(-0.5 + 1.0 * hypo)
    mv[:, 1] = np.log(0.6) + np.zeros(b)
    # under-treating mode: nothing despite hypotension
    pf[:, 2] = 0.03
    mf[:, 2] = np.log(250.0) + np.zeros(b)
    pv[:, 2] = 0.03
    mv[:, 2] = np.log(0.05) + np.zeros(b)
    u = st.unsafe[a]
    w = np.stack([1.0 - u, u / 2.0, u / 2.0], axis=1)
    mf += math.log(practice.fluid_scale)
    mv += math.log(practice.vasopressor_scale)
    return {"w": w, "pf": pf, "pv": pv, "mf": mf, "mv": mv}


def _dim_logpdf(a: FloatArray, p_nonzero: FloatArray, logmed: FloatArray, sigma: float) -> FloatArray:
    """log density of one action dimension per mode: (B,) actions, (B, 3) params → (B, 3)."""
    a = a[:, None]
    pos = a > 0
    la = np.log(np.where(pos, a, 1.0))
    lognorm = -la - np.log(sigma * np.sqrt(2.0 * np.pi)) - 0.5 * ((la - logmed) / sigma) ** 2
    return np.where(pos, np.log(p_nonzero) + lognorm, np.log1p(-p_nonzero))


def log_prob(states: pd.DataFrame | FloatArray, actions: FloatArray, attending: npt.ArrayLike,
             practice: Practice = DEMO) -> FloatArray:
    """log π_b(a | s, attending) per row, ``(B,)``, w.r.t. (δ0 + Lebesgue) per action dimension (before rounding and
    clipping).

    Args:
        states: observed states (DataFrame with the ``FEATURES`` columns, or ``(B, S)`` in that order).
        actions: ``(B, 2)`` — fluid mL per step, max NE-equivalent µg/kg/min.
        attending: ``(B,)`` attending ids (0 … N_ATTENDINGS−1).
        practice: how these clinicians dose.
    """
    act = np.asarray(actions, dtype=np.float64)
    if act.ndim != 2 or act.shape[1] != 2:
        raise ValueError(f"clinician: actions must be (B, 2), got {act.shape}")
    if (act < 0).any():
        raise ValueError("clinician: actions must be >= 0")
    p = mixture_params(states, attending, practice)
    lf = _dim_logpdf(act[:, 0], p["pf"], p["mf"], FLUID_SIGMA * practice.dose_spread)
    lv = _dim_logpdf(act[:, 1], p["pv"], p["mv"], NEE_SIGMA * practice.dose_spread)
    return logsumexp(np.log(p["w"]) + lf + lv, axis=1)


def round_actions(fluid: FloatArray, nee: FloatArray) -> FloatArray:
    """Clip to ``features.ACTION_BOUNDS`` and round to the written precision (10 mL, 0.001 µg/kg/min)."""
    lo_f, hi_f = F.ACTION_BOUNDS["fluid_ml"]
    lo_v, hi_v = F.ACTION_BOUNDS["nee_max"]
    f = np.clip(np.asarray(fluid, np.float64), lo_f, hi_f)
    v = np.clip(np.asarray(nee, np.float64), lo_v, hi_v)
    f = np.where(f > 0, np.maximum(np.round(f / 10.0) * 10.0, 10.0), 0.0)
    v = np.where(v > 0, np.maximum(np.round(v, 3), 0.001), 0.0)
    return np.stack([f, v], axis=1)


def sample(states: pd.DataFrame | FloatArray, attending: npt.ArrayLike, rng: np.random.Generator,
           practice: Practice = DEMO) -> FloatArray:
    """Draw actions ``(B, 2)`` from the clinician mixture (then clipped/rounded by :func:`round_actions`)."""
    p = mixture_params(states, attending, practice)
    b = p["w"].shape[0]
    cum = np.cumsum(p["w"], axis=1)
    mode = (rng.random(b)[:, None] > cum).sum(axis=1).clip(0, 2)
    rows = np.arange(b)
    give_f = rng.random(b) < p["pf"][rows, mode]
    give_v = rng.random(b) < p["pv"][rows, mode]
    f = np.exp(p["mf"][rows, mode] + FLUID_SIGMA * practice.dose_spread * rng.standard_normal(b))
    v = np.exp(p["mv"][rows, mode] + NEE_SIGMA * practice.dose_spread * rng.standard_normal(b))
    return round_actions(np.where(give_f, f, 0.0), np.where(give_v, v, 0.0))


class BehaviourPolicy:
    """The clinician as an ``ogsrl.policy.StochasticPolicy``, marginalised over a uniformly drawn attending.

    Inside the simulator the per-stay attending is known and used instead (``engine.simulate``).
    """

    feature_names: tuple[str, ...] = FEATURES

    def __init__(self, practice: Practice = DEMO) -> None:
        self.practice = practice

    def act(self, obs: FloatArray, rng: np.random.Generator | None = None) -> FloatArray:
        """Sample (rng given; attending drawn uniformly per row) or, with rng None, the regular-mode median action
        of attending 0 (each dimension 0 where its probability of a non-zero action is below ½)."""
        obs = np.asarray(obs, dtype=np.float64)
        if rng is None:
            p = mixture_params(obs, np.zeros(len(obs), dtype=np.int64), self.practice)
            f = np.where(p["pf"][:, 0] > 0.5, np.exp(p["mf"][:, 0]), 0.0)
            v = np.where(p["pv"][:, 0] > 0.5, np.exp(p["mv"][:, 0]), 0.0)
            return round_actions(f, v)
        att = rng.integers(0, N_ATTENDINGS, len(obs))
        return sample(obs, att, rng, self.practice)

    def log_prob(self, obs: FloatArray, actions: FloatArray) -> FloatArray:
        """log of the attending-averaged density, ``(B,)``."""
        b = len(obs)
        per = np.stack([log_prob(obs, actions, np.full(b, i), self.practice) for i in range(N_ATTENDINGS)], axis=1)
        return logsumexp(per, axis=1) - np.log(N_ATTENDINGS)
