"""Built-in policies for ground truth (docs/simulator.md §6): behaviour, no-treatment, random and a clinical
heuristic, plus loading a saved policy from training. All implement ``ogsrl.policy.Policy``."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ogsrl.policy import FloatArray, Policy
from ogsrl.synth.clinician import DEMO, STEP_H, BehaviourPolicy, Practice

BUILTINS: tuple[str, ...] = ("behaviour", "no-treatment", "random", "heuristic", "best-known")
BEST_KNOWN_FILE = Path(__file__).with_name("best_known.json")
"""the best-known rule's parameters, written by benchmarks/search_best_known.py (docs/simulator.md §6)"""


class NoTreatment:
    """Never gives IV fluids or vasopressors."""

    feature_names: tuple[str, ...] = ("map",)

    def act(self, obs: FloatArray, rng: np.random.Generator | None = None) -> FloatArray:
        return np.zeros((len(obs), 2))


class RandomPolicy:
    """Uniform random: each dimension is 0 with probability 0.3, else uniform on (0, 4000] mL / (0, 1] µg/kg/min."""

    feature_names: tuple[str, ...] = ("map",)

    def act(self, obs: FloatArray, rng: np.random.Generator | None = None) -> FloatArray:
        rng = rng if rng is not None else np.random.default_rng(0)
        b = len(obs)
        f = np.where(rng.random(b) < 0.3, 0.0, rng.uniform(0.0, 4000.0, b))
        v = np.where(rng.random(b) < 0.3, 0.0, rng.uniform(0.0, 1.0, b))
        return np.stack([f, v], axis=1)


@dataclass(frozen=True, slots=True)
class RuleParams:
    """A targeted, interpretable bedside rule (docs/simulator.md §6). Units: mmHg, mmol/L, mL/kg/h, mL, mL/kg, %,
    µg/kg/min NE-equivalent."""

    fluid_map: float = 65.0
    """give fluid when MAP is below this …"""
    fluid_lactate: float = 4.0
    """… or lactate is at least this …"""
    fluid_urine: float = 0.5
    """… or urine output is below this (mL/kg/h)"""
    fluid_ml: float = 500.0
    """fluid per 4-h step when indicated (doubled when MAP < fluid_map − 5 and less than 30 mL/kg given so far)"""
    fluid_max_balance: float = 40.0
    """no fluid once the net balance (fluid_cum − urine_cum) reaches this (mL/kg) …"""
    fluid_min_spo2: float = 94.0
    """… or SpO2 is below this (lung water)"""
    ne_map: float = 65.0
    """start norepinephrine when MAP is below this …"""
    ne_prefill: float = 20.0
    """… once this much fluid has been given (mL/kg), unless MAP is below ne_map − 10 (fluids first)"""
    ne_base: float = 0.05
    """dose at the threshold"""
    ne_slope: float = 0.015
    """extra dose per mmHg below the threshold"""
    ne_max: float = 0.3
    """highest dose"""
    keep_map: float = 72.0
    """keep a low dose while MAP is below this …"""
    keep_lactate: float = 2.0
    """… and lactate is above this"""
    keep_dose: float = 0.04
    """the low maintenance dose"""


class RulePolicy:
    """A deterministic bedside rule with :class:`RuleParams` (docs/simulator.md §6):

    * fluids (``fluid_ml``; twice that when MAP < fluid_map − 5 and less than 30 mL/kg given so far) when the
      patient looks under-resuscitated (MAP < fluid_map, lactate ≥ fluid_lactate or urine < fluid_urine mL/kg/h)
      **and** the net balance is below fluid_max_balance mL/kg **and** SpO2 ≥ fluid_min_spo2 and P/F ≥ 250;
    * norepinephrine ne_base + ne_slope·(ne_map − MAP), capped at ne_max, when MAP < ne_map and either
      ne_prefill mL/kg of fluid have been given or MAP < ne_map − 10; otherwise keep_dose while
      MAP < keep_map with lactate > keep_lactate.
    """

    feature_names: tuple[str, ...] = ("map", "lactate", "spo2", "pf_ratio", "urine_step", "urine_cum", "fluid_cum",
                                      "weight")

    def __init__(self, params: RuleParams | None = None) -> None:
        self.params = params or RuleParams()

    def act(self, obs: FloatArray, rng: np.random.Generator | None = None) -> FloatArray:
        r = self.params
        x = np.asarray(obs, dtype=np.float64)
        mapv, lac, spo2, pf, u_step, u_cum, f_cum, weight = (x[:, i] for i in range(8))
        weight = np.maximum(weight, 25.0)
        urine_rate = u_step / weight / STEP_H
        given = f_cum / weight
        need = (mapv < r.fluid_map) | (lac >= r.fluid_lactate) | (urine_rate < r.fluid_urine)
        safe = ((f_cum - u_cum) / weight < r.fluid_max_balance) & (spo2 >= r.fluid_min_spo2) & (pf >= 250)
        big = (mapv < r.fluid_map - 5.0) & (given < 30.0)
        fluid = np.where(need & safe, np.where(big, 2.0 * r.fluid_ml, r.fluid_ml), 0.0)
        start = (mapv < r.ne_map) & ((given >= r.ne_prefill) | (mapv < r.ne_map - 10.0))
        dose = np.clip(r.ne_base + r.ne_slope * (r.ne_map - mapv), r.ne_base, r.ne_max)
        keep = (mapv < r.keep_map) & (lac > r.keep_lactate)
        nee = np.where(start, dose, np.where(keep, r.keep_dose, 0.0))
        return np.stack([np.clip(fluid, 0.0, None), np.clip(nee, 0.0, None)], axis=1)


class HeuristicPolicy(RulePolicy):
    """The hand-set bedside rule: :class:`RuleParams` defaults (guideline thresholds, fluids first)."""

    def __init__(self) -> None:
        super().__init__(RuleParams())


def best_known_policy(path: Path = BEST_KNOWN_FILE) -> RulePolicy:
    """The best-known policy: the :class:`RulePolicy` whose parameters the seeded search on simulator truth saved."""
    try:
        saved = json.loads(Path(path).read_text(encoding="utf-8"))
        params = saved["params"]
    except (OSError, ValueError, KeyError) as exc:
        raise ValueError(f"{path}: cannot read the best-known rule parameters ({exc}); rerun "
                         "benchmarks/search_best_known.py") from exc
    fields = set(RuleParams.__dataclass_fields__)
    if set(params) != fields:
        raise ValueError(f"{path}: params must have exactly the RuleParams fields; missing "
                         f"{sorted(fields - set(params))}, unknown {sorted(set(params) - fields)}")
    return RulePolicy(RuleParams(**{k: float(v) for k, v in params.items()}))


def get_policy(spec: str, clinicians: Practice = DEMO) -> Policy | None:
    """A policy by name or saved-policy path (``behaviour-marginal``: the ``clinicians`` marginalised over attendings).

    ``behaviour`` returns None: inside the simulator the clinicians act with their per-stay attending (exactly as in
    the generated data). A path is loaded with ``ogsrl.agents.load_policy`` (training's checkpoint format).
    """
    if spec == "behaviour":
        return None
    if spec == "behaviour-marginal":
        return BehaviourPolicy(clinicians)
    if spec == "no-treatment":
        return NoTreatment()
    if spec == "random":
        return RandomPolicy()
    if spec == "heuristic":
        return HeuristicPolicy()
    if spec == "best-known":
        return best_known_policy()
    path = Path(spec)
    if not path.exists():
        raise ValueError(f"unknown policy {spec!r}: not one of {list(BUILTINS)} and no such file or directory")
    from ogsrl.agents import load_policy  # lazy: training code is optional for the simulator
    from ogsrl.policy import load_checked

    policy = load_checked(load_policy, path)
    if not isinstance(policy, Policy):
        raise ValueError(f"{spec}: load_policy returned {type(policy).__name__}, which is not an ogsrl Policy")
    return policy
