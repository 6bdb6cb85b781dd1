"""Built-in policies for ground truth (docs/simulator.md §6): behaviour, no-treatment, random and a clinical
heuristic, plus loading a saved policy from training. All implement ``ogsrl.policy.Policy``."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ogsrl.policy import FloatArray, Policy
from ogsrl.synth.clinician import BehaviourPolicy

BUILTINS: tuple[str, ...] = ("behaviour", "no-treatment", "random", "heuristic")


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


class HeuristicPolicy:
    """A deterministic bedside heuristic (docs/simulator.md §6):

    * fluids, 500 mL (1000 mL when MAP < 60 and less than 30 mL/kg given so far), only when the patient looks
      under-resuscitated (MAP < 65, lactate ≥ 4 or urine < 0.5 mL/kg/h) **and** the net balance
      (fluid_cum − urine_cum) is below 40 mL/kg **and** oxygenation is preserved (SpO2 ≥ 94 %, P/F ≥ 250);
    * norepinephrine early, without waiting for fluids: 0.08 + 0.02·(70 − MAP) µg/kg/min (0.08–0.4) when
      MAP < 70; 0.06 while MAP < 80 with lactate > 2 or SOFA ≥ 6 (so a working infusion is not stopped).
    """

    feature_names: tuple[str, ...] = ("map", "lactate", "spo2", "pf_ratio", "urine_step", "urine_cum", "fluid_cum",
                                      "weight", "sofa")

    def act(self, obs: FloatArray, rng: np.random.Generator | None = None) -> FloatArray:
        x = np.asarray(obs, dtype=np.float64)
        mapv, lac, spo2, pf, u_step, u_cum, f_cum, weight, sofa = (x[:, i] for i in range(9))
        weight = np.maximum(weight, 25.0)
        urine_rate = u_step / weight / 4.0
        balance = (f_cum - u_cum) / weight
        need = (mapv < 65) | (lac >= 4) | (urine_rate < 0.5)
        safe = (balance < 40) & (spo2 >= 94) & (pf >= 250)
        fluid = np.where(need & safe, np.where((mapv < 60) & (f_cum / weight < 30), 1000.0, 500.0), 0.0)
        dose = np.clip(0.08 + 0.02 * (70.0 - mapv), 0.08, 0.4)
        keep = (mapv < 80) & ((lac > 2) | (sofa >= 6))
        nee = np.where(mapv < 70, dose, np.where(keep, 0.06, 0.0))
        return np.stack([fluid, nee], axis=1)


def get_policy(spec: str) -> Policy | None:
    """A policy by name or saved-policy path.

    ``behaviour`` returns None: inside the simulator the clinicians act with their per-stay attending (exactly as in
    the generated data). A path is loaded with ``ogsrl.agents.load_policy`` (training's checkpoint format).
    """
    if spec == "behaviour":
        return None
    if spec == "behaviour-marginal":
        return BehaviourPolicy()
    if spec == "no-treatment":
        return NoTreatment()
    if spec == "random":
        return RandomPolicy()
    if spec == "heuristic":
        return HeuristicPolicy()
    path = Path(spec)
    if not path.exists():
        raise ValueError(f"unknown policy {spec!r}: not one of {list(BUILTINS)} and no such file or directory")
    from ogsrl.agents import load_policy  # lazy: training code is optional for the simulator

    policy = load_policy(path)
    if not isinstance(policy, Policy):
        raise ValueError(f"{spec}: load_policy returned {type(policy).__name__}, which is not an ogsrl Policy")
    return policy
