"""The paper's clinical metrics (ME, MCR, AIR, ACP, share below the safety thresholds) as pure array functions.

Definitions and hand-computed examples: docs/metrics.md. Notation (the test split, rows sorted by stay then step):

* stay ``i``, step ``t = 0 … T_i − 1``; ``R`` rows in all; ``stay (R,)`` says which stay a row belongs to;
* ``c_{i,t} ∈ R^A`` the clinician's logged action (``A = 2``: IV fluid mL per step, max NE-equivalent µg/kg/min);
* ``a^{(k)}_{i,t} ~ π(·|s_{i,t})``, ``k = 1 … K`` the policy's actions on the *logged* states (seeded draws);
* ``τ ∈ R^A`` the per-dimension tolerance (params ``clinical.tolerance``).

Arrays of policy actions are ``(K, R, A)``; a single ``(R, A)`` array is one draw (K = 1). Every function checks
shapes and raises ``ValueError`` naming the argument.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.floating]


# ---- helpers ---------------------------------------------------------------------------------------------------


def _draws(actions: npt.ArrayLike, n_rows: int, n_act: int, name: str) -> np.ndarray:
    """``(R, A)`` or ``(K, R, A)`` → float64 ``(K, R, A)``."""
    arr = np.asarray(actions, dtype=np.float64)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3 or arr.shape[1:] != (n_rows, n_act):
        raise ValueError(f"{name} must have shape (R, A) or (K, R, A) with R={n_rows}, A={n_act}, got "
                         f"{np.shape(actions)}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} holds non-finite actions")
    return arr


def _rows(x: npt.ArrayLike, n: int | None, name: str, dims: int = 1) -> np.ndarray:
    arr = np.asarray(x)
    if arr.ndim != dims or (n is not None and arr.shape[0] != n):
        want = f"({n}{', …' if dims > 1 else ''})" if n is not None else f"{dims}-D"
        raise ValueError(f"{name} must have shape {want}, got {arr.shape}")
    return arr


def _tolerance(tol: npt.ArrayLike, n_act: int) -> np.ndarray:
    t = np.asarray(tol, dtype=np.float64)
    if t.shape != (n_act,) or not (np.isfinite(t).all() and (t >= 0).all()):
        raise ValueError(f"tolerance must be {n_act} finite values ≥ 0, got {t.tolist()}")
    return t


def has_previous(stay: npt.ArrayLike) -> np.ndarray:
    """``(R,)`` True where the row's stay also holds the row before it (t ≥ 1 for rows sorted by stay, step)."""
    s = np.asarray(stay)
    if s.ndim != 1:
        raise ValueError(f"stay must be 1-D, got shape {s.shape}")
    out = np.zeros(len(s), dtype=bool)
    out[1:] = s[1:] == s[:-1]
    return out


# ---- ME: mortality expected for a return ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MortalityCurve:
    """m̂(g): in-hospital mortality expected for a stay return g, fitted on logged stays.

    Isotonic (non-increasing) least-squares fit of the death indicator on the return (sklearn
    ``IsotonicRegression``, pool-adjacent-violators), evaluated by linear interpolation between its knots and held
    constant beyond the first and last knot (sklearn's ``out_of_bounds="clip"``):

        m̂ = argmin_{m non-increasing} Σ_i (y_i − m(G_i))²,    G_i = Σ_t γ^t r_{i,t},  y_i = 1[died in hospital]
    """

    x: FloatArray
    """knots: returns, increasing"""
    y: FloatArray
    """m̂ at the knots, non-increasing, in [0, 1]"""

    def __call__(self, g: npt.ArrayLike) -> FloatArray:
        return np.interp(np.asarray(g, dtype=np.float64), self.x, self.y)


def mortality_curve(returns: npt.ArrayLike, died: npt.ArrayLike) -> MortalityCurve:
    """Fit :class:`MortalityCurve` on per-stay returns ``(N,)`` and death indicators ``(N,)`` (N ≥ 2)."""
    from sklearn.isotonic import IsotonicRegression

    g = _rows(returns, None, "returns").astype(np.float64)
    y = _rows(died, len(g), "died").astype(np.float64)
    if len(g) < 2 or not np.isfinite(g).all():
        raise ValueError(f"mortality_curve needs ≥ 2 finite stay returns, got {len(g)}")
    if not np.isin(y, (0.0, 1.0)).all():
        raise ValueError("died must be 0/1 per stay")
    iso = IsotonicRegression(increasing=False, y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(g, y)
    return MortalityCurve(np.asarray(iso.X_thresholds_, dtype=np.float64), np.asarray(iso.y_thresholds_,
                                                                                        dtype=np.float64))


def stay_returns(reward: npt.ArrayLike, stay: npt.ArrayLike, gamma: float = 1.0) -> FloatArray:
    """``G_i = Σ_t γ^t r_{i,t}`` per stay, stays in order of first appearance ``(N,)`` (rows sorted by stay, step)."""
    r = _rows(reward, None, "reward").astype(np.float64)
    s = _rows(stay, len(r), "stay")
    start = ~has_previous(s)
    idx = np.cumsum(start) - 1  # stay index per row
    first = np.flatnonzero(start)
    t = np.arange(len(r)) - first[idx]  # step within the stay
    return np.bincount(idx, weights=r * gamma ** t, minlength=len(first))


def mortality_estimate(curve: MortalityCurve, value: float, ci_low: float | None = None,
                       ci_high: float | None = None) -> tuple[float, float | None, float | None]:
    """ME = m̂(V̂) for an estimated return V̂; the interval maps the return's CI through m̂ (non-increasing, so
    [m̂(ci_high), m̂(ci_low)]). Returns (ME, low, high); the bounds are None without a CI."""
    me = float(curve(value))
    if ci_low is None or ci_high is None:
        return me, None, None
    return me, float(curve(ci_high)), float(curve(ci_low))


# ---- MCR: match with the clinician ----------------------------------------------------------------------------


def match_rate(policy_actions: npt.ArrayLike, clinician: npt.ArrayLike, tol: npt.ArrayLike) -> float:
    """MCR = (1/KR) Σ_k Σ_{i,t} Π_j 1[|a^{(k)}_{i,t,j} − c_{i,t,j}| ≤ τ_j]: share of steps whose action is within
    tolerance of the clinician's in every dimension."""
    c = _rows(clinician, None, "clinician", dims=2).astype(np.float64)
    a = _draws(policy_actions, c.shape[0], c.shape[1], "policy_actions")
    t = _tolerance(tol, c.shape[1])
    if c.shape[0] == 0:
        raise ValueError("match_rate needs at least one row")
    return float(np.all(np.abs(a - c[None]) <= t, axis=-1).mean())


# ---- AIR: appropriate escalation ------------------------------------------------------------------------------


def deteriorating(sofa: npt.ArrayLike, stay: npt.ArrayLike, rise: float) -> tuple[np.ndarray, np.ndarray]:
    """(D, P), both ``(R,)`` bool: P = the row has a previous step in its stay; D = P ∧ sofa_{i,t} − sofa_{i,t−1} ≥
    ``rise`` (the organ-failure score rose by at least ``rise`` points since the previous step)."""
    x = _rows(sofa, None, "sofa").astype(np.float64)
    prev = has_previous(_rows(stay, len(x), "stay"))
    d = np.zeros(len(x), dtype=bool)
    d[1:] = prev[1:] & (x[1:] - x[:-1] >= rise)
    return d, prev


def escalates(actions: npt.ArrayLike, clinician: npt.ArrayLike, stay: npt.ArrayLike, tol: npt.ArrayLike
              ) -> np.ndarray:
    """E ``(K, R)`` bool: E_{i,t} = ∃j a_{i,t,j} − c_{i,t−1,j} > τ_j (more than the treatment running at the
    previous step, beyond tolerance, in some dimension); False on a stay's first row."""
    c = _rows(clinician, None, "clinician", dims=2).astype(np.float64)
    a = _draws(actions, c.shape[0], c.shape[1], "actions")
    t = _tolerance(tol, c.shape[1])
    prev = has_previous(_rows(stay, c.shape[0], "stay"))
    ref = np.vstack([np.zeros((1, c.shape[1])), c[:-1]])  # c_{i,t−1}, row-aligned
    return np.any(a - ref[None] > t, axis=-1) & prev[None]


def appropriate_intensity(actions: npt.ArrayLike, clinician: npt.ArrayLike, sofa: npt.ArrayLike,
                          stay: npt.ArrayLike, tol: npt.ArrayLike, rise: float) -> dict[str, float]:
    """AIR over the rows with a previous step (set P):

        AIR = (1/K|P|) Σ_k Σ_{(i,t)∈P} [D_{i,t} E^{(k)}_{i,t} + (1 − D_{i,t})(1 − E^{(k)}_{i,t})]

    plus its two parts: ``escalate_when_deteriorating`` = mean of E over D, ``hold_when_stable`` = mean of 1 − E
    over P \\ D (NaN when the set is empty), and the counts ``n_deteriorating``, ``n_stable``.
    """
    d, prev = deteriorating(sofa, stay, rise)
    e = escalates(actions, clinician, stay, tol)
    if not prev.any():
        raise ValueError("appropriate_intensity needs a stay with at least two steps")
    ok = np.where(d[None], e, ~e)[:, prev]
    stable = prev & ~d
    return {
        "air": float(ok.mean()),
        "escalate_when_deteriorating": float(e[:, d].mean()) if d.any() else float("nan"),
        "hold_when_stable": float((~e[:, stable]).mean()) if stable.any() else float("nan"),
        "n_deteriorating": int(d.sum()),
        "n_stable": int(stable.sum()),
    }


# ---- ACP: action-change penalty -------------------------------------------------------------------------------


def action_change(actions: npt.ArrayLike, stay: npt.ArrayLike, tol: npt.ArrayLike) -> dict[str, FloatArray | float]:
    """Over the rows with a previous step P and the K draws (a draw's actions on consecutive logged states):

        ACP_j = (1/K|P|) Σ_k Σ_{(i,t)∈P} |a^{(k)}_{i,t,j} − a^{(k)}_{i,t−1,j}|          (physical units)
        ACP   = (1/K|P|) Σ_k Σ_{(i,t)∈P} Σ_j |a^{(k)}_{i,t,j} − a^{(k)}_{i,t−1,j}| / τ_j   (tolerance units)

    Returns ``{"acp": ACP, "per_dim": (A,) ACP_j}``. Every τ_j must be > 0.
    """
    s = _rows(stay, None, "stay")
    a = np.asarray(actions, dtype=np.float64)
    a = _draws(a, len(s), a.shape[-1] if a.ndim >= 2 else 0, "actions")
    t = _tolerance(tol, a.shape[-1])
    if not (t > 0).all():
        raise ValueError(f"action_change needs every tolerance > 0, got {t.tolist()}")
    prev = has_previous(s)
    if not prev.any():
        raise ValueError("action_change needs a stay with at least two steps")
    delta = np.abs(a[:, 1:] - a[:, :-1])[:, prev[1:]]  # (K, |P|, A)
    return {"acp": float((delta / t).sum(axis=-1).mean()), "per_dim": delta.mean(axis=(0, 1))}


# ---- share of steps below the safety thresholds --------------------------------------------------------------


def below_share(indicator: npt.ArrayLike) -> FloatArray:
    """``(C,)`` share of steps breaking each rule: the mean over rows (and draws) of a 0/1 indicator or of a
    predicted probability, shape ``(R, C)`` or ``(K, R, C)``."""
    x = np.asarray(indicator, dtype=np.float64)
    if x.ndim not in (2, 3) or x.shape[-2] == 0:
        raise ValueError(f"indicator must have shape (R, C) or (K, R, C) with R ≥ 1, got {x.shape}")
    if not (np.isfinite(x).all() and (x >= 0).all() and (x <= 1).all()):
        raise ValueError("indicator values must lie in [0, 1]")
    return x.reshape(-1, x.shape[-1]).mean(axis=0)
