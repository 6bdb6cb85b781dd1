"""Ground truth by simulation: the true return, mortality and safety-cost rates of a policy (docs/simulator.md §5).

``evaluate_policy`` runs the same loop as data generation (``engine.simulate``) on fresh septic patients drawn from
the cohort's initial-state distribution; the policy acts at every kept decision time on the states computed by the
cohort feature code from the rows charted so far. Rewards and costs follow the cohort/costs params exactly as the
trajectory table defines them (docs/data-contract.md §2).

Two populations: ``simulator`` scores every simulated septic patient on the simulator's own decision steps;
``cohort`` (given a :class:`CohortConfig`) puts the simulated raw tables through the cohort extraction first, exactly
like the demo data, so the truth describes the population the trajectories — and the off-policy estimates — cover.
They differ: the Sepsis-3 rule needs a culture–antibiotic pair, so patients who die before it is complete never
enter the cohort.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pandas as pd

from ogsrl.cohort.extract import CohortConfig, extract
from ogsrl.cohort.views import connect, register_frames
from ogsrl.costs import CostRule, CostsConfig, apply_cost_rules
from ogsrl.errors import DataError
from ogsrl.ope.estimate import Estimate
from ogsrl.policy import Policy
from ogsrl.synth.engine import Observer, SimResult, WorldConfig, cohort_observer, simulate

Z95 = 1.959963984540054


@dataclass(frozen=True, slots=True)
class RewardConfig:
    """The reward definition (cohort section of params.yaml)."""

    scheme: Literal["sofa", "terminal"] = "sofa"
    """sofa: r = −clip(SOFA(s'), lo, hi), a death as ``death_reward`` says; terminal: ±R on the last step"""
    clip: tuple[float, float] = (2.5, 12.5)
    """(lo, hi) of the SOFA clip"""
    death_reward: Literal["window", "step"] = "window"
    """a death at window step k: window: −hi·(n_steps − k); step: −hi (``cohort.death_reward``)"""
    n_steps: int = 20
    """decision times in the window (``cohort.n_steps``)"""
    terminal_reward: float = 15.0
    """R of the terminal scheme"""
    terminal_outcome: Literal["died_in_hosp", "died_90d"] = "died_in_hosp"
    """outcome of the terminal scheme"""

    def __post_init__(self) -> None:
        if not self.clip[0] <= self.clip[1]:
            raise ValueError(f"reward clip must satisfy lo <= hi, got {self.clip}")
        if self.death_reward not in ("window", "step"):
            raise ValueError(f"death_reward must be window or step, got {self.death_reward!r}")


@dataclass(frozen=True, slots=True)
class TruthResult:
    """True performance of one policy."""

    episodes: int
    """simulated patients"""
    steps: int
    mean_return: Estimate
    mortality_hosp: Estimate
    mortality_90d: Estimate
    cost_rates: dict[str, Estimate] = field(default_factory=dict)
    """per-step rate of each cost column (``cost_<rule>`` and ``cost_total``)"""
    cost_returns: dict[str, Estimate] = field(default_factory=dict)
    """mean undiscounted cost return per stay (violating steps per stay) of each cost column"""
    seconds: float = 0.0
    population: Literal["simulator", "cohort"] = "simulator"
    """who is scored: every simulated septic patient, or those the cohort extraction keeps"""
    stays: int = 0
    """patients scored: with a kept decision step (simulator) or in the extracted cohort (cohort)"""
    per_stay: pd.DataFrame | None = field(default=None, compare=False, repr=False)
    """one row per scored patient: ``return``, ``cost_return_<column>`` and ``died_in_hosp``, indexed by a key that
    names the same simulated patient under every policy scored with the same seed, chunk and settings (the stay key
    of the cohort population, the patient's simulation index otherwise), so two policies' truths can be paired"""

    def to_dict(self) -> dict[str, float | int | str]:
        """Flat JSON-ready dict (``truth/<metric>``, ``…_ci_lo``, ``…_ci_hi``)."""
        out: dict[str, float | int | str] = {"truth/episodes": self.episodes, "truth/stays": self.stays,
                                             "truth/steps": self.steps, "truth/population": self.population,
                                             "truth/seconds": round(self.seconds, 2)}
        items = {"return": self.mean_return, "mortality_hosp": self.mortality_hosp,
                 "mortality_90d": self.mortality_90d, **{f"rate_{k}": v for k, v in self.cost_rates.items()},
                 **{f"cost_return_{k}": v for k, v in self.cost_returns.items()}}
        for name, e in items.items():
            out[f"truth/{name}"] = e.value
            out[f"truth/{name}_ci_lo"] = e.ci_low
            out[f"truth/{name}_ci_hi"] = e.ci_high
        return out


def mean_ci(x: np.ndarray) -> Estimate:
    """Mean ± 1.96 standard errors (``ess``: the sample size)."""
    x = np.asarray(x, dtype=np.float64)
    n = len(x)
    if n == 0:
        return Estimate(float("nan"), float("nan"), float("nan"), 0)
    m = float(x.mean())
    se = float(x.std(ddof=1) / np.sqrt(n)) if n > 1 else float("nan")
    return Estimate(m, m - Z95 * se, m + Z95 * se, n)


def ratio_ci(num: np.ndarray, den: np.ndarray) -> Estimate:
    """Ratio Σnum/Σden over episodes with a cluster-robust (delta-method) 95 % CI."""
    num, den = np.asarray(num, np.float64), np.asarray(den, np.float64)
    m = len(num)
    if m == 0 or den.sum() == 0:
        return Estimate(float("nan"), float("nan"), float("nan"), m)
    r = num.sum() / den.sum()
    resid = num - r * den
    se = np.sqrt((resid**2).sum() / (m * (m - 1))) / den.mean() if m > 1 else float("nan")
    return Estimate(float(r), float(r - Z95 * se), float(r + Z95 * se), m)


def paired_difference(a: pd.DataFrame, b: pd.DataFrame) -> dict[str, Estimate]:
    """Policy A against policy B on the same simulated patients: per column both ``per_stay`` frames hold, the mean
    of d_i = a_i − b_i over the patients both score, ± 1.96 SD(d)/√n (``ess``: n).

    Both truths must come from one seed, patient count and chunking (:func:`evaluate_policy`), so patient i met
    policy A and policy B with the same case mix and traits. Sharing those makes the difference far more precise than
    the two means' own intervals. Each cohort keeps a few patients the other does not (the Sepsis-3 criteria read
    SOFA, which treatment moves); they are left out, so the mean difference can differ from the difference of the
    means.
    """
    common = a.index.intersection(b.index)
    if len(common) < 2:
        raise ValueError(f"the two truths share {len(common)} patients; pair truths of one seed and patient count")
    return {col: mean_ci(a.loc[common, col].to_numpy(np.float64) - b.loc[common, col].to_numpy(np.float64))
            for col in a.columns if col in b.columns}


def rewards(steps: pd.DataFrame, stays: pd.DataFrame, cfg: RewardConfig) -> np.ndarray:
    """r_k per step row (docs/data-contract.md §2)."""
    lo, hi = cfg.clip
    if cfg.scheme == "sofa":
        r = -np.clip(steps["next_sofa"].to_numpy(np.float64), lo, hi)
        left = np.maximum(cfg.n_steps - steps["step"].to_numpy(np.float64), 1.0) if cfg.death_reward == "window" \
            else 1.0
        return np.where(steps["death_in_step"].to_numpy(bool), -hi * left, r)
    outcome = stays[cfg.terminal_outcome].to_numpy(bool)[steps["stay"].to_numpy()]
    last = steps["done"].to_numpy(bool)
    return np.where(last, np.where(outcome, -cfg.terminal_reward, cfg.terminal_reward), 0.0)


def extract_chunk(res: SimResult, cohort: CohortConfig, costs: CostsConfig) -> pd.DataFrame:
    """The chunk's trajectory rows after the cohort extraction (all splits), as for the demo data; no rows when no
    simulated patient meets the cohort's criteria."""
    con = connect(threads=1)
    try:
        register_frames(con, {k: v.to_pandas() if hasattr(v, "to_pandas") else v for k, v in res.tables.items()})
        tables = extract(con, cohort, costs).tables
    except DataError as exc:
        if not str(exc).startswith("empty cohort"):
            raise
        return pd.DataFrame(columns=["stay_key", "reward", *costs.columns, "cost_total", "died_in_hosp", "died_90d"])
    finally:
        con.close()
    return pd.concat(tables.values(), ignore_index=True)


def evaluate_policy(policy: Policy | None, episodes: int, seed: int, *, world: WorldConfig | None = None,
                    reward: RewardConfig | None = None, rules: Sequence[CostRule] | None = None,
                    observer: Observer | None = None, chunk: int = 2500, cohort: CohortConfig | None = None,
                    costs: CostsConfig | None = None) -> TruthResult:
    """Simulate ``episodes`` fresh septic patients under ``policy`` (None = the clinicians) and score it.

    Deterministic given ``seed`` (and ``chunk``). Without ``cohort`` (population ``simulator``), rewards follow
    ``reward``, costs ``rules``, and episodes without any kept decision step (death or discharge before the first
    one) count for mortality but not for the return and cost rates. With ``cohort`` (population ``cohort``), the
    raw tables go through the cohort extraction (rewards per ``cohort``, costs per ``costs``) and only extracted
    stays are scored; ``world`` must then be the cohort's decision grid, and ``reward``/``rules`` must be left out.
    """
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    if cohort is not None and (reward is not None or rules is not None):
        raise ValueError("with a cohort, rewards and costs come from the cohort and costs configs; "
                         "leave reward and rules out")
    world = world or WorldConfig()
    if cohort is not None and (cohort.window_start_h, cohort.step_h, cohort.n_steps) != (
            world.window_start_h, world.step_h, world.n_steps):
        raise ValueError(f"world grid ({world.window_start_h}, {world.step_h}, {world.n_steps}) differs from the "
                         f"cohort's ({cohort.window_start_h}, {cohort.step_h}, {cohort.n_steps})")
    reward = reward or RewardConfig()
    costs = costs or CostsConfig()
    rules = tuple(rules) if rules is not None else costs.rules
    observer = observer or cohort_observer()
    t0 = time.perf_counter()
    cost_cols = [*costs.columns, "cost_total"]
    all_steps, all_stays, all_keys = [], [], []
    offset = 0  # stays scored so far: cohort stays are numbered consecutively across chunks
    for c, start in enumerate(range(0, episodes, chunk)):
        n = min(chunk, episodes - start)
        rng = np.random.default_rng([seed, c, 7])
        res = simulate(n, rng, first_index=start, world=world, observer=observer, policy=policy,
                       cohort_only=True, keep_tables=cohort is not None)
        if cohort is not None:
            rows = extract_chunk(res, cohort, costs)
            codes, keys = pd.factorize(rows["stay_key"], sort=True)
            steps = rows[["reward", *cost_cols]].assign(stay=codes + offset)
            stays = rows.groupby("stay_key")[["died_in_hosp", "died_90d"]].first().reindex(keys)
            stays = stays.reset_index(drop=True).assign(stay=np.arange(len(keys)) + offset)
            all_keys.append(np.asarray(keys, dtype=object))
        else:
            steps, stays = res.steps.copy(), res.stays.copy()
            steps["reward"] = rewards(steps, stays, reward)
            steps["stay"] += offset
            stays["stay"] += offset
            all_keys.append(start + np.arange(len(stays)))
        offset += len(stays)
        all_steps.append(steps)
        all_stays.append(stays)
    steps = pd.concat(all_steps, ignore_index=True)
    stays = pd.concat(all_stays, ignore_index=True)
    if cohort is not None and stays.empty:
        raise ValueError(f"none of the {episodes} simulated patients entered the cohort (Sepsis-3 onset and "
                         "exclusions of the cohort params); simulate more, or score population 'simulator'")
    cost = (steps[cost_cols] if cohort is not None
            else apply_cost_rules(steps, rules, float(world.step_h), prefix="next_"))
    by = steps["stay"].to_numpy()
    ret = np.bincount(by, weights=steps["reward"].to_numpy(), minlength=len(stays))
    n_steps = np.bincount(by, minlength=len(stays)).astype(float)
    has = n_steps > 0
    rates, cost_returns = {}, {}
    per_stay = {"return": ret}
    for col in cost.columns:
        c_sum = np.bincount(by, weights=cost[col].to_numpy(np.float64), minlength=len(stays))
        rates[col] = ratio_ci(c_sum[has], n_steps[has])
        cost_returns[col] = mean_ci(c_sum[has])
        per_stay[f"cost_return_{col}"] = c_sum
    per_stay["died_in_hosp"] = stays["died_in_hosp"].to_numpy(float)
    index = pd.Index(np.concatenate(all_keys), name="patient")
    return TruthResult(
        episodes=episodes, steps=len(steps), mean_return=mean_ci(ret[has]),
        mortality_hosp=mean_ci(stays["died_in_hosp"].to_numpy(float)),
        mortality_90d=mean_ci(stays["died_90d"].to_numpy(float)),
        cost_rates=rates, cost_returns=cost_returns, seconds=time.perf_counter() - t0,
        population="simulator" if cohort is None else "cohort", stays=int(has.sum()),
        per_stay=pd.DataFrame(per_stay, index=index)[has])
