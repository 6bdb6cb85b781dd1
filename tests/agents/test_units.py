"""One unit of the train_policies grid at a time: the content-hash skip, stale temporaries, failures, gathering,
and the cost-limit axis."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from tests.agents.trajectory_fakes import COSTS

from ogsrl.agents import load_policy, stage, units
from ogsrl.agents.inputs import cost_returns
from ogsrl.config import ConfigError

TINY = {"hidden": [8, 8], "batch_size": 32, "max_epochs": 3}
RUNS = {"soc": {"algorithm": "bc"}, "wide": {"algorithm": "bc", "overrides": {"hidden": [12, 12]}}}
PARAMS = {"policies": {"seeds": [1, 2], "runs": RUNS, "algorithms": {"bc": TINY}, "serve_guardian_fallback": False}}


@pytest.fixture
def project(traj_root: Path, tmp_path: Path) -> Path:
    root = tmp_path / "p"
    shutil.copytree(traj_root, root)
    return root


def _train_all(params: dict, root: Path) -> dict[str, str]:
    return {u.name: units.train_unit(params, root, u.run, u.seed)["status"] for u in units.preflight(params, root)}


def test_a_current_unit_is_skipped_and_a_changed_one_retrained(project: Path) -> None:
    assert set(_train_all(PARAMS, project).values()) == {"trained"}
    before = (project / "data/models/policies/wide/seed1/weights.pt").stat().st_mtime_ns
    assert set(_train_all(PARAMS, project).values()) == {"skipped"}
    assert (project / "data/models/policies/wide/seed1/weights.pt").stat().st_mtime_ns == before
    changed = {"policies": {**PARAMS["policies"], "runs": {**RUNS, "wide": {**RUNS["wide"], "overrides": {
        "hidden": [12, 12], "max_epochs": 2}}}}}
    assert _train_all(changed, project) == {"soc/seed1": "skipped", "soc/seed2": "skipped",
                                            "wide/seed1": "trained", "wide/seed2": "trained"}
    rec = units.read_record(project, units.Unit("wide", 1))
    assert rec["status"] == "ok" and rec["metrics"]["train/epochs"] <= 2


def test_new_input_data_or_a_tampered_checkpoint_retrains(project: Path) -> None:
    _train_all(PARAMS, project)
    (project / "data/models/policies/soc/seed2/weights.pt").write_bytes(b"half a file")
    assert _train_all(PARAMS, project)["soc/seed2"] == "trained"
    assert load_policy(project / "data/models/policies/soc/seed2").feature_names  # a whole checkpoint again
    train = project / "data/trajectories/train.parquet"
    key_before = units.unit_key(PARAMS, project, units.Unit("soc", 1))[0]
    shutil.copy(project / "data/trajectories/val.parquet", train)  # other rows, same schema and metadata
    assert units.unit_key(PARAMS, project, units.Unit("soc", 1))[0] != key_before
    assert set(_train_all(PARAMS, project).values()) == {"trained"}


def test_the_fallback_run_must_be_current_first(project: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"unit wide/seed1 needs a current checkpoint of soc/seed1"):
        units.train_unit(PARAMS, project, "wide", 1)
    with pytest.raises(ValueError, match=r"policies.runs: no run 'nope'"):
        units.train_unit(PARAMS, project, "nope", 1)
    with pytest.raises(ValueError, match=r"policies.seeds: seed 7 is not in \[1, 2\]"):
        units.train_unit(PARAMS, project, "soc", 7)


def test_leftovers_of_a_killed_write_and_units_outside_the_grid_are_removed(project: Path) -> None:
    run_dir = project / "data/models/policies/soc"
    partial = run_dir / ".seed1.k9x2.tmp" / "seed1"
    partial.mkdir(parents=True)
    (partial / "weights.pt").write_bytes(b"partial")
    (run_dir / ".seed1.old.4242").mkdir()
    other = run_dir / ".seed2.ab12.tmp"  # another unit's write in flight: train_unit of seed1 leaves it alone
    other.mkdir()
    units.train_unit(PARAMS, project, "soc", 1)
    assert sorted(p.name for p in run_dir.iterdir()) == [".seed2.ab12.tmp", "seed1", "seed1.unit.json"]
    _train_all(PARAMS, project)
    shutil.copytree(run_dir / "seed1", project / "data/models/policies/gone/seed1")
    shutil.copytree(run_dir / "seed1", run_dir / "seed9")
    units.gather(PARAMS, project)
    assert sorted(p.name for p in run_dir.iterdir()) == ["seed1", "seed1.unit.json", "seed2", "seed2.unit.json"]
    assert sorted(p.name for p in (project / "data/models/policies").iterdir()) == ["soc", "wide"]


def test_gather_refuses_failed_missing_or_stale_units(project: Path) -> None:
    _train_all(PARAMS, project)
    metrics = units.gather(PARAMS, project)
    assert json.loads((project / "data/reports/train.json").read_text()) == pytest.approx(metrics)
    units.record_failure(project, "wide", 2, "FileNotFoundError")
    assert not units.is_current(project, units.Unit("wide", 2), units.unit_key(PARAMS, project,
                                                                               units.Unit("wide", 2))[0])
    more = {"policies": {**PARAMS["policies"], "seeds": [1, 2, 3]}}
    stale = {"policies": {**PARAMS["policies"], "algorithms": {"bc": {**TINY, "lr": 0.01}}}}
    with pytest.raises(RuntimeError, match=r"1 unit\(s\) without a current checkpoint: wide/seed2 "
                                           r"\(FileNotFoundError\); rerun"):
        units.gather(PARAMS, project)
    with pytest.raises(RuntimeError, match=r"soc/seed3 \(no record\)"):
        units.gather(more, project)
    with pytest.raises(RuntimeError, match=r"4 unit\(s\).*soc/seed1 \(stale\)"):
        units.gather(stale, project)
    assert units.train_unit(PARAMS, project, "wide", 2)["status"] == "trained"  # a failed unit is retried
    assert units.gather(PARAMS, project) == metrics


def test_the_cost_limit_axis_adds_one_run_per_fraction(project: Path) -> None:
    params = {**PARAMS, "sweep": {"cost_limit_fractions": [0.5, 1.25]}}
    cfg = stage.policies_config(params)
    assert list(cfg.runs) == ["soc", "wide_lim50", "wide_lim125"]
    assert cfg.limit_fraction("wide_lim125") == 1.25 and cfg.limit_fraction("soc") == 0.8
    params = {"policies": {**PARAMS["policies"], "seeds": [1]}, "sweep": {"cost_limit_fractions": [0.5, 1.25]}}
    metrics = stage.run(params, project)
    train = pd.read_parquet(project / "data/trajectories/train.parquet").sort_values(["stay_key", "step"])
    clin = cost_returns(train, COSTS, 1.0).mean(axis=0)
    for j, c in enumerate(COSTS):
        assert metrics[f"wide_lim50/seed1/cost_limit/{c}"] == pytest.approx(0.5 * clin[j])
        assert metrics[f"wide_lim125/mean/cost_limit/{c}"] == pytest.approx(1.25 * clin[j])
        assert metrics[f"cost_limit/{c}"] == pytest.approx(0.8 * clin[j])
    assert "soc/seed1/cost_limit/cost_spo2_low" not in metrics
    assert load_policy(project / "data/models/policies/wide_lim125/seed1").provenance["run"] == "wide_lim125"


@pytest.mark.parametrize(("sweep", "match"), [
    ({"cost_limit_fractions": [0.655]}, r"sweep: cost_limit_fractions\[0\]: 0.655 must be > 0 and a whole percent"),
    ({"cost_limit_fractions": [0.5, 0.5]}, r"cost_limit_fractions must be distinct"),
    ({"cost_limit_fractions": [-0.5]}, r"cost_limit_fractions\[0\]: -0.5 must be > 0"),
    ({"workers": -1}, r"workers must be ≥ 0"),
    ({"threads_per_worker": 0}, r"threads_per_worker must be ≥ 1"),
    ({"adress": "tcp://x:1"}, r"unknown key\(s\) sweep\.adress"),
])
def test_bad_sweep_params_are_one_line_config_errors(sweep: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match) as err:
        stage.policies_config({**PARAMS, "sweep": sweep})
    assert "\n" not in str(err.value)


def test_an_axis_run_that_exists_already_is_an_error() -> None:
    runs = {**RUNS, "wide_lim50": {"algorithm": "bc"}}
    with pytest.raises(ConfigError, match=r"run 'wide_lim50' would be added but policies.runs already has it"):
        stage.policies_config({"policies": {**PARAMS["policies"], "runs": runs},
                               "sweep": {"cost_limit_fractions": [0.5]}})
