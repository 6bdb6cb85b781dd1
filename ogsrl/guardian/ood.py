"""Out-of-distribution probes for measuring a guardian's false-accept rate.

Each probe perturbs in-distribution test rows so that, by construction, the result lies outside what the data
supports (ground truth "unsupported"); the false-accept rate is the fraction the guardian still accepts.

* ``extreme_actions``: keep the state, replace the action by one far outside clinical practice — half the rows get
  an IV fluid volume (a bring-your-own table: its first action) of ``U(1.5, 3) ×`` the fit split's 99.9th
  percentile, the other half a vasopressor dose (its second action) of ``U(2, 4) ×`` the largest dose observed.
* ``extreme_actions`` for a *discrete* action (:func:`rare_actions`): no id is "far" from another and an id
  outside 0 … n−1 would be invalid input, not a clinical choice, so keep the state and replace the action by an id
  the clinicians *rarely* chose in that state region: among the ``neighbours`` nearest fit-split states (state
  columns scaled by the fit split's min/max), an id taken by < ``rare_share`` of them (default < 1 %: never or
  almost never). Rows whose region has no such id are dropped; if fewer than a tenth of the ``n`` rows are left (a
  false-accept rate of a handful of rows says nothing) the probe is skipped: the report records
  ``ood/skipped_extreme_actions: 1`` and the stage logs the reason.
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


def rare_actions(
    x_test: FloatArray, x_fit: FloatArray, feature_names: tuple[str, ...], rng: np.random.Generator, n: int,
    action: str, n_actions: int, neighbours: int = 200, rare_share: float = 0.01,
) -> tuple[npt.NDArray[np.float64], str | None]:
    """The discrete ``extreme_actions`` probe (module docstring): up to ``n`` rows ``(≤ n, D)`` of test states with
    an action id that < ``rare_share`` of the ``neighbours`` nearest fit-split states took, and the reason the
    probe is empty (None when it is not)."""
    from sklearn.neighbors import NearestNeighbors

    if action not in feature_names:
        raise DataError(f"guardian inputs lack the action column {action!r}", table="guardian inputs")
    ja = feature_names.index(action)
    state_cols = [j for j in range(len(feature_names)) if j != ja]
    lo, hi = x_fit[:, state_cols].min(axis=0), x_fit[:, state_cols].max(axis=0)
    width = np.where(hi > lo, hi - lo, 1.0)
    k = min(neighbours, x_fit.shape[0])
    nn = NearestNeighbors(n_neighbors=k).fit((x_fit[:, state_cols] - lo) / width)
    out = _rows(x_test, n, rng)
    _, idx = nn.kneighbors((out[:, state_cols] - lo) / width)  # (n, k) nearest fit rows
    ids = x_fit[:, ja].astype(np.int64)[idx]  # (n, k) their action ids
    share = np.stack([(ids == a).mean(axis=1) for a in range(n_actions)], axis=1)  # (n, n_actions)
    rare = share < rare_share
    keep = rare.any(axis=1)
    if keep.sum() < max(1, n // 10):
        return out[:0], (f"only {int(keep.sum())} of {n} probe states have an action id taken by < {rare_share:.0%} of "
                         f"their {k} nearest clinician states (need {max(1, n // 10)}): the clinicians use every id "
                         "nearly everywhere, no rarely chosen action to probe with")
    out, rare = out[keep], rare[keep]
    # a uniform choice among each row's rare ids
    pick = np.argmax(rare * rng.random(rare.shape), axis=1)
    out[:, ja] = pick.astype(np.float64)
    return out, None


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
