"""The benchmark probes' pure helpers: the numbers their pages rest on (benchmarks/probe_*.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCH))

import probe_common  # noqa: E402
import probe_mb_attending as attending  # noqa: E402
import probe_mb_weighted as weighted  # noqa: E402

from ogsrl.io import salted_hash  # noqa: E402


def test_anchor_line_recovers_an_exact_line_and_anchored_reads_through_it() -> None:
    m = np.array([0.4, 0.9, 1.5, 2.2])
    c, d = attending.anchor_line(m, -0.3 + 1.25 * m)
    assert (c, d) == pytest.approx((-0.3, 1.25))
    lines = [(10.0, 0.5), (-0.3, 1.25), (1.0, 2.0)]
    out = attending.anchored({"p": [-100.0, 0.2, 3.0], "q": [-90.0, 2.0, -1.0]}, lines)
    # return read through its own line and never floored; costs floored at 0
    assert out["p"] == pytest.approx([-40.0, 0.0, 7.0])
    assert out["q"] == pytest.approx([-35.0, 2.2, 0.0])
    only_first_cost = attending.anchored({"p": [-100.0, 0.2, 3.0]}, lines, only=(1,))
    assert only_first_cost["p"] == pytest.approx([-100.0, 0.0, 3.0])


def test_line_band_collapses_on_an_exact_line_and_widens_with_noise() -> None:
    rng = np.random.default_rng(0)
    m = [rng.normal(k, 0.5, 40) for k in range(4)]
    exact = attending.line_band(m, [-0.5 + 2.0 * mk for mk in m], np.array([0.1, 1.0, 3.0]), rng, n_boot=200)
    # every resample lies on y = -0.5 + 2m: the interval is the reading itself, floored at 0
    assert exact == pytest.approx(np.array([[0.0, 0.0], [1.5, 1.5], [5.5, 5.5]]))
    noisy = attending.line_band(m, [-0.5 + 2.0 * mk + rng.normal(0, 1.0, 40) for mk in m], np.array([3.0]), rng)
    lo, hi = noisy[0]
    assert lo < 5.5 < hi and 0.2 < hi - lo < 3.0
    # two fits, each exact on its own line: the band spans the two fits' readings of 3.0 (5.5 and 7.0)
    fits = [np.stack([mk, mk / 2.0]) for mk in m]  # fit 2 reads every stay at half: its line is -0.5 + 4m
    two = attending.line_band(fits, [-0.5 + 2.0 * mk for mk in m], np.array([[3.0], [1.875]]), rng, n_boot=200)
    assert two[0] == pytest.approx([5.5, 7.0])


def _raw_tables(root: Path, providers: dict[int, str | None]) -> None:
    """``icustays`` and ``admissions`` in the MIMIC-IV layout, one admission per stay."""
    (root / "data/raw/hosp").mkdir(parents=True)
    (root / "data/raw/icu").mkdir(parents=True)
    ids = list(providers)
    pd.DataFrame({"subject_id": ids, "hadm_id": [i + 1000 for i in ids], "stay_id": [i + 3000 for i in ids],
                  "intime": "2150-01-01 00:00:00"}).to_csv(root / "data/raw/icu/icustays.csv.gz", index=False)
    pd.DataFrame({"subject_id": ids, "hadm_id": [i + 1000 for i in ids],
                  "admit_provider_id": list(providers.values())}).to_csv(root / "data/raw/hosp/admissions.csv.gz",
                                                                          index=False)


def test_stay_attendings_and_per_stay_join_the_raw_tables_by_salted_key(tmp_path: Path) -> None:
    _raw_tables(tmp_path, {1: "P003SIM", 2: "P001SIM", 3: "P003SIM"})
    att = attending.stay_attendings(tmp_path, "a-salt")
    keys = salted_hash([3001, 3002, 3003], "a-salt")
    assert att.reindex(keys).tolist() == ["P003SIM", "P001SIM", "P003SIM"]
    steps = pd.DataFrame({"stay_key": [keys[0], keys[0], keys[1], keys[2]], "split": "test",
                          "reward": [-1.0, -2.0, -5.0, 0.0], "cost_spo2_low": [1.0, 1.0, 0.0, 1.0],
                          "cost_urine_low": [0.0, 1.0, 1.0, 0.0]})
    per = attending.per_stay(steps, att).loc[keys]
    assert per["reward"].tolist() == [-3.0, -5.0, 0.0]
    assert per["cost_spo2_low"].tolist() == [2.0, 0.0, 1.0]
    assert per["attending"].tolist() == ["P003SIM", "P001SIM", "P003SIM"]
    with pytest.raises(SystemExit, match="1 trajectory stays have no attending"):
        attending.per_stay(steps.assign(stay_key=[keys[0], keys[0], keys[1], "0000000000000000"]), att)


def test_stay_attendings_refuses_an_admission_without_a_provider(tmp_path: Path) -> None:
    _raw_tables(tmp_path, {1: "P003SIM", 2: None})
    with pytest.raises(SystemExit, match="admit_provider_id missing for 1 stays"):
        attending.stay_attendings(tmp_path, "a-salt")


def test_resample_weights_are_tempered_capped_and_normalised() -> None:
    p = weighted.resample_weights(np.log([1.0, 1.0, 1.0, 100.0]), temper=1.0, cap=2.0)
    assert p.sum() == pytest.approx(1.0)
    # mean weight (1 + 1 + 1 + 100) / 4 = 25.75 → the large one capped at 51.5
    assert p == pytest.approx(np.array([1, 1, 1, 51.5]) / 54.5)
    half = weighted.resample_weights(np.log([1.0, 4.0]), temper=0.5, cap=100.0)
    assert half == pytest.approx([1 / 3, 2 / 3])


def test_kish_share_is_one_for_uniform_weights_and_one_over_n_for_one_row() -> None:
    assert weighted.kish(np.full(8, 1 / 8)) == pytest.approx(1.0)
    assert weighted.kish(np.eye(8)[3]) == pytest.approx(1 / 8)
    rng = np.random.default_rng(0)
    p = weighted.ess_matched(100, 0.25, rng)
    assert (p > 0).sum() == 25 and weighted.kish(p) == pytest.approx(0.25)


def test_score_computes_error_rank_regret_and_line_against_the_truth() -> None:
    truth = {n: {"return": r, "cost_return_c1": c, "cost_return_cost_total": c} for n, r, c in
             (("a", -100.0, 1.0), ("b", -90.0, 2.0), ("c", -80.0, 4.0))}
    # the estimate prefers b on the return (true best c) and a on the cost (truly lowest: right)
    est = {"v": {"a": [-100.0, 1.1], "b": [-70.0, 2.0], "c": [-80.0, 4.0]}}
    rows = {r["target"]: r for r in probe_common.score(est, truth, ["c1"], [])}
    assert rows["return"]["median_rel_error"] == pytest.approx(0.0)
    assert rows["return"]["regret"] == pytest.approx(10.0 / 20.0)
    assert rows["return"]["spearman"] == pytest.approx(0.5)
    assert rows["c1"]["median_rel_error"] == pytest.approx(0.0)
    assert rows["c1"]["regret"] == 0.0 and rows["c1"]["spearman"] == pytest.approx(1.0)
    assert rows["cost_total"]["median_rel_error"] == pytest.approx(0.0)


def test_goals_over_the_admitted_policies_of_a_saved_set() -> None:
    import anchored_goals

    shares = anchored_goals.shares_of(["anchored_support_s35"])["anchored_s35_set13"]
    assert sorted(p for p, s in shares.items() if s > 0.10) == ["soc_noise0.1", "soc_noise0.15", "soc_noise0.2",
                                                               "soc_noise0.3"]
    got = anchored_goals.score_page("anchored_s35_set13", shares, 0.10)
    rows = {(r["subset"], r["target"], r["variant"]): r for r in got["rows"]}
    assert len(got["admitted"]) == 14 and rows[("all", "return", "mb")]["policies"] == 18
    spo2 = rows[("admitted", "cost_spo2_low", "mb_anchored")]
    assert spo2["median_rel_error"] == pytest.approx(0.087, abs=5e-4) and spo2["meets"]
    assert not rows[("admitted", "cost_urine_low", "mb")]["meets"]  # Spearman 0.736
    assert rows[("all", "cost_total", "mb")]["regret"] == pytest.approx(0.109, abs=5e-4)  # soc_noise0.3 picked
    assert rows[("admitted", "cost_total", "mb")]["regret"] == 0.0
    edge = {"median_rel_error": 0.10, "spearman": 0.9, "regret": 0.03}
    assert anchored_goals.meets(edge) and not anchored_goals.meets({**edge, "spearman": 0.8999})


def test_steady_and_scatter_split_a_policys_error_across_datasets() -> None:
    import estimate_errors

    true = np.array([1.0, 2.0, 4.0])
    # policy a: +0.5 on both datasets (steady); b: −1 / +1 (scatter); c: exact
    est = np.array([[1.5, 1.0, 4.0], [1.5, 3.0, 4.0]])
    got = estimate_errors.steady_and_scatter(est, true)
    assert got["mean_error"] == pytest.approx([0.5, 0.0, 0.0])
    assert got["sd_error"] == pytest.approx([0.0, np.sqrt(2.0), 0.0])
    assert got["median_abs_mean_error"] == 0.0 and got["median_sd_error"] == 0.0
    # the mean estimate (1.5, 2, 4) keeps the order; dataset 0 swaps a and b (Spearman 0.5), dataset 1 does not
    assert got["spearman_of_mean"] == pytest.approx(1.0)
    assert got["median_spearman"] == pytest.approx(0.75)
    assert estimate_errors.value_of([-90.0, 0.5, 4.0], "cost_total") == 4.5


def test_errors_relative_to_a_reference_drop_what_every_policy_shares() -> None:
    import estimate_errors

    true = np.array([1.0, 2.0, 4.0])
    # every policy −1 on dataset 0 and +1 on dataset 1 (a level no ranking sees); policy c also +0.3 on both
    est = np.array([[0.0, 1.0, 3.3], [2.0, 3.0, 5.3]])
    plain = estimate_errors.steady_and_scatter(est, true)
    assert plain["sd_error"] == pytest.approx([np.sqrt(2.0)] * 3)
    rel = estimate_errors.steady_and_scatter(est, true, reference=0)
    assert rel["mean_error"] == pytest.approx([0.0, 0.0, 0.3]) and rel["sd_error"] == pytest.approx([0.0, 0.0, 0.0])
    # the medians leave the reference out: over b (0) and c (0.3)
    assert rel["median_abs_mean_error"] == pytest.approx(0.15) and rel["median_sd_error"] == 0.0
    assert rel["median_spearman"] == plain["median_spearman"] == pytest.approx(1.0)
