"""The demo-data stage: `ogsrl generate` (data.source = demo), `ogsrl synth` and `ogsrl truth`."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ogsrl.cohort.extract import CohortConfig
from ogsrl.config import build
from ogsrl.costs import build_costs
from ogsrl.io import atomic_path
from ogsrl.synth import clinician as C
from ogsrl.synth import engine as E
from ogsrl.synth.policies import BUILTINS, get_policy
from ogsrl.synth.stays import KIND_NAMES
from ogsrl.synth.truth import RewardConfig, TruthResult, evaluate_policy
from ogsrl.synth.writer import FORMATS, TableWriter
from ogsrl.synth import tables as T

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SynthConfig:
    """The ``synth:`` section of params.yaml."""

    stays: int = 5000
    """ICU stays generated for the demo"""
    seed: int = 42
    """random seed; the same seed (and chunk_stays) gives byte-identical tables"""
    format: str = "csv.gz"
    """csv.gz | parquet"""
    chunk_stays: int = 2500
    """stays simulated and written per chunk (bounds memory)"""
    truth_population: str = "cohort"
    """whom `ogsrl truth` scores: cohort (simulated tables put through the cohort extraction, the population the
    trajectories and off-policy estimates cover) or simulator (every simulated septic patient)"""
    clinicians: C.Practice = C.DEMO
    """how the simulated clinicians dose: the logging policy of the generated data and of the clinicians' truth"""

    def __post_init__(self) -> None:
        if self.truth_population not in ("cohort", "simulator"):
            raise ValueError(f"truth_population must be cohort or simulator, got {self.truth_population!r}")
        if self.stays < 1:
            raise ValueError(f"stays must be >= 1, got {self.stays}")
        if self.format not in FORMATS:
            raise ValueError(f"format must be one of {list(FORMATS)}, got {self.format!r}")
        if self.chunk_stays < 1:
            raise ValueError(f"chunk_stays must be >= 1, got {self.chunk_stays}")


def world_from_params(params: Mapping[str, Any]) -> E.WorldConfig:
    """Decision grid from the ``cohort`` section (window_start_h, step_h, n_steps) and the clinicians from
    ``synth.clinicians`` (the whole ``synth`` section is checked); defaults where absent."""
    clinicians = build(SynthConfig, params.get("synth"), "synth").clinicians
    c = params.get("cohort") or {}
    kw: dict[str, int] = {}
    for key in ("window_start_h", "step_h", "n_steps"):
        if key in c:
            v = c[key]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or float(v) != int(v):
                raise ValueError(f"params: cohort.{key} must be a whole number for the simulator, got {v!r}")
            kw[key] = int(v)
    return E.WorldConfig(**kw, clinicians=clinicians)


def reward_from_params(params: Mapping[str, Any]) -> RewardConfig:
    """Reward definition from the ``cohort`` section."""
    c = params.get("cohort") or {}
    kw: dict[str, Any] = {}
    for key, name in (("reward", "scheme"), ("reward_clip", "clip"), ("terminal_reward", "terminal_reward"),
                      ("terminal_outcome", "terminal_outcome"), ("death_reward", "death_reward"),
                      ("n_steps", "n_steps")):
        if key in c:
            kw[name] = c[key]
    return build(RewardConfig, kw, "cohort")


def _check_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ValueError(f"--out {out} is not empty; pass --overwrite to replace it (nothing was written)")
    anc = out.parent
    while not anc.exists():
        anc = anc.parent
    if not anc.is_dir() or not os.access(anc, os.W_OK | os.X_OK):
        raise ValueError(f"--out {out} is not writable (no write permission on {anc}); nothing was written")


def generate(stays: int, seed: int, out: Path, fmt: str = "csv.gz", overwrite: bool = False,
             chunk_stays: int = 2500, world: E.WorldConfig | None = None,
             observer: E.Observer | None = None) -> dict[str, Any]:
    """Simulate ``stays`` ICU stays and write the MIMIC-IV layout to ``out`` (atomically, chunk by chunk).

    Raises:
        ValueError: bad arguments, non-empty ``out`` without ``overwrite``, or an unwritable ``out``; nothing is
            written or changed in these cases.
    """
    cfg = SynthConfig(stays=stays, seed=seed, format=fmt, chunk_stays=chunk_stays)
    out = Path(out)
    _check_out(out, overwrite)
    world = world or E.WorldConfig()
    observer = observer or E.cohort_observer()
    t0 = time.perf_counter()
    died = died90 = septic = 0
    kinds = np.zeros(len(KIND_NAMES), dtype=np.int64)
    try:
        with atomic_path(out) as tmp:
            tmp.mkdir(parents=True)
            with TableWriter(tmp, cfg.format) as w:  # type: ignore[arg-type]
                w.write("d_items", T.d_items())
                w.write("d_labitems", T.d_labitems())
                for c, start in enumerate(range(0, cfg.stays, cfg.chunk_stays)):
                    n = min(cfg.chunk_stays, cfg.stays - start)
                    res = E.simulate(n, np.random.default_rng([cfg.seed, c]), first_index=start, world=world,
                                     observer=observer)
                    for name, table in res.tables.items():
                        w.write(name, table)
                    s = res.stays[res.stays["kind"] == E.KIND_SEPSIS]
                    septic += len(s)
                    died += int(s["died_in_hosp"].sum())
                    died90 += int(s["died_90d"].sum())
                    kinds += np.bincount(res.stays["kind"], minlength=len(KIND_NAMES))
                    log.info("synth: chunk %d (%d stays) written", c, n)
                rows = dict(w.rows)
    except OSError as exc:
        raise ValueError(f"cannot write --out {out}: {exc}; nothing was written") from exc
    metrics: dict[str, Any] = {
        "synth/stays": cfg.stays, "synth/seed": cfg.seed, "synth/format": cfg.format,
        "synth/seconds": round(time.perf_counter() - t0, 2),
        "synth/behaviour_mortality_hosp": died / max(septic, 1),
        "synth/behaviour_mortality_90d": died90 / max(septic, 1),
    }
    for i, k in enumerate(KIND_NAMES):
        metrics[f"synth/stays_{k}"] = int(kinds[i])
    for name, n_rows in rows.items():
        metrics[f"synth/rows_{name}"] = n_rows
    return metrics


def run(params: Mapping[str, Any], root: Path) -> dict[str, Any]:
    """Stage entry point: write ``params.data.raw_dir`` from the ``synth`` section (replacing it)."""
    cfg = build(SynthConfig, params.get("synth"), "synth")
    raw = (params.get("data") or {}).get("raw_dir", "data/raw")
    out = Path(raw) if Path(raw).is_absolute() else Path(root) / raw
    return generate(cfg.stays, cfg.seed, out, cfg.format, overwrite=True, chunk_stays=cfg.chunk_stays,
                    world=world_from_params(params))


def run_truth(params: Mapping[str, Any], root: Path, policy_spec: str, episodes: int, seed: int) -> dict[str, Any]:
    """`ogsrl truth`: true mean return, mortality and cost rates (95 % CIs) of a policy, as a flat dict."""
    return {"truth/policy": policy_spec, "truth/seed": seed,
            **truth_result(params, root, policy_spec, episodes, seed).to_dict()}


def truth_result(params: Mapping[str, Any], root: Path, policy_spec: str, episodes: int, seed: int) -> TruthResult:
    """:func:`run_truth`'s result with its per-patient values (``per_stay``)."""
    spec = policy_spec
    if spec not in (*BUILTINS, "behaviour-marginal"):
        p = Path(spec)
        spec = str(p if p.is_absolute() else Path(root) / p)
    cfg = build(SynthConfig, params.get("synth"), "synth")
    world = world_from_params(params)
    policy = get_policy(spec, world.clinicians)
    if cfg.truth_population == "cohort":
        cohort = build(CohortConfig, params.get("cohort"), "cohort")
        res = evaluate_policy(policy, episodes, seed, world=world, chunk=cfg.chunk_stays, cohort=cohort,
                              costs=build_costs(params))
    else:
        res = evaluate_policy(policy, episodes, seed, world=world, reward=reward_from_params(params),
                              rules=build_costs(params).rules, chunk=cfg.chunk_stays)
    return res
