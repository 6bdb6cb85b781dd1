"""Out-of-distribution probes for measuring a guardian's false-accept rate.

Each probe perturbs in-distribution test rows so that, by construction, the result lies outside what the data
supports (ground truth "unsupported"); the false-accept rate is the fraction the guardian still accepts.

* ``extreme_actions``: keep the state, replace the action by one far outside clinical practice — half the rows get
  an IV fluid volume (a bring-your-own table: its first action) of ``U(1.5, 3) ×`` the fit split's 99.9th
  percentile, the other half a vasopressor dose (its second action) of ``U(2, 4) ×`` the largest dose observed.
* ``shifted_states``: keep the action, push one randomly chosen non-binary state feature beyond the fit split's
  range: ``max + U(0.5, 1.5)·(max − min)``.
* ``extreme_policy``: simulator patients (``ogsrl.synth``) treated with a constant extreme dose every step
  (default 4000 mL fluid and 1.5 µg/kg/min NE-equivalent per 4 h step); their (state, action) rows.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from ogsrl.errors import DataError

FloatArray = npt.NDArray[np.floating]


def _rows(x: FloatArray, n: int, rng: np.random.Generator) -> npt.NDArray[np.float64]:
    if x.shape[0] == 0:
        raise DataError("no rows to perturb", table="guardian test split")
    return np.asarray(x[rng.choice(x.shape[0], n, replace=x.shape[0] < n)], dtype=np.float64)


def extreme_actions(
    x_test: FloatArray, x_fit: FloatArray, feature_names: tuple[str, ...], rng: np.random.Generator, n: int,
    action_names: tuple[str, ...] = ("fluid_ml", "nee_max"),
) -> npt.NDArray[np.float64]:
    """``n`` rows ``(n, D)``: test states with the first action ≫ its p99.9 (first half) or the second ≫ its max
    (second half; a one-dimensional action: every row ≫ p99.9). Canonical: fluid_ml and nee_max."""
    for col in action_names:
        if col not in feature_names:
            raise DataError(f"guardian inputs lack the action column {col!r}", table="guardian inputs")
    jf = feature_names.index(action_names[0])
    out = _rows(x_test, n, rng)
    half = n // 2 if len(action_names) > 1 else n
    fluid_hi = max(float(np.quantile(x_fit[:, jf], 0.999)), 1.0 if action_names[0] == "fluid_ml" else 1e-3)
    out[:half, jf] = fluid_hi * rng.uniform(1.5, 3.0, size=half)
    if len(action_names) > 1:
        jn = feature_names.index(action_names[1])
        nee_hi = max(float(np.max(x_fit[:, jn])), 0.1 if action_names[1] == "nee_max" else 1e-3)
        out[half:, jn] = nee_hi * rng.uniform(2.0, 4.0, size=n - half)
    return out


def shifted_states(
    x_test: FloatArray, x_fit: FloatArray, feature_names: tuple[str, ...], rng: np.random.Generator, n: int,
    action_names: tuple[str, ...] = ("fluid_ml", "nee_max"),
) -> npt.NDArray[np.float64]:
    """``n`` rows ``(n, D)``: one non-binary state feature per row moved beyond the fit split's maximum."""
    state_cols = [j for j, name in enumerate(feature_names) if name not in action_names]
    lo, hi = x_fit.min(axis=0), x_fit.max(axis=0)
    levels = [np.unique(x_fit[: min(len(x_fit), 100_000), j]).size for j in state_cols]
    candidates = np.array([j for j, k in zip(state_cols, levels) if k > 2], dtype=np.intp)
    if candidates.size == 0:
        raise DataError("no non-binary state feature to shift", table="guardian inputs")
    out = _rows(x_test, n, rng)
    cols = candidates[rng.integers(0, candidates.size, size=n)]
    width = np.maximum(hi[cols] - lo[cols], 1e-6 * np.maximum(np.abs(hi[cols]), 1.0))
    out[np.arange(n), cols] = hi[cols] + rng.uniform(0.5, 1.5, size=n) * width
    return out


class ConstantPolicy:
    """An extreme fixed-dose policy for the simulator probe: the same (fluid mL, NE-eq µg/kg/min) every step."""

    feature_names: tuple[str, ...] = ("map",)

    def __init__(self, fluid_ml: float, nee_max: float) -> None:
        self.dose = np.array([fluid_ml, nee_max], dtype=np.float64)

    def act(self, obs: FloatArray, rng: np.random.Generator | None = None) -> npt.NDArray[np.float64]:
        """``(B, 2)`` copies of the fixed dose."""
        return np.tile(self.dose, (len(obs), 1))


def extreme_policy_rows(
    feature_names: tuple[str, ...], world: object, stays: int, fluid_ml: float, nee_max: float, seed: int
) -> npt.NDArray[np.float64]:
    """(state, action) rows ``(n, D)`` of ``stays`` simulated septic patients treated with a constant extreme dose.

    Uses the demo simulator (``ogsrl.synth.engine.simulate``, cohort-only, the production state observer); the rows
    are unsupported by construction: no clinician in the data gives this dose every step, and the states drift
    where such treatment drives them.
    """
    from ogsrl.synth.engine import cohort_observer, simulate  # lazy: the simulator is only needed for this probe

    res = simulate(
        stays, np.random.default_rng([seed, 911]), first_index=0, world=world, observer=cohort_observer(),
        policy=ConstantPolicy(fluid_ml, nee_max), cohort_only=True, keep_tables=False,
    )
    missing = [c for c in feature_names if c not in res.steps.columns]
    if missing:
        raise DataError(f"simulator steps lack guardian input column(s) {missing}", table="simulated steps")
    if len(res.steps) == 0:
        raise DataError(f"no decision steps kept in {stays} simulated stays", table="simulated steps")
    return res.steps[list(feature_names)].to_numpy(np.float64)
