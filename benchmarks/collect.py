"""Merge the per-benchmark result pages (benchmarks/results/<name>.md, written by bench_<name>.py) into
benchmarks/RESULTS.md. Run after any benchmark: `python benchmarks/collect.py`."""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent
ORDER = ("synth", "blanket", "best_known", "policies_s19", "served19_K1probe", "served19_G1probe", "served19_KG42probe", "cqlcheck19_K40", "cqlcheck19_K42", "cqlcheck19_K44", "cqlcheck19_G40", "cqlcheck19_G42", "cqlcheck19_G44", "policies_s16", "served17_H12probe", "served17_H5probe", "served17_H34probe", "served17_G1probe", "served17_D6probe", "served17_D7probe", "cql_fix_s16", "cql_served_s16", "cql_served_lr_s16", "cql_served_lr2_s16", "served16_D1", "served16_D2", "served16_D3", "served16_D4", "served16_D5", "cql_fix_s15", "cql_costs_s15", "cql_templr_s15", "policies_s13", "cql_costs_s13", "policies_s12", "policies_s9", "policies_s8", "policies", "policies_s8_it120_k0", "policies_default", "sweep", "extract", "extract_full", "world", "world_truth", "guardian", "certificate",
         "coverage_calibration_s43", "ope_coverage_s43x40", "coverage_calibration_s43_first20", "ope_coverage_s43",
         "coverage_calibration_s43_h0", "ope_coverage_s43_h0",
         "band_goals_s42", "fqe_s42_set36_h3", "fqe_s42_set37_h3", "fqe_s42_set38_h3", "fqe_s42_set39_h3",
         "fqe_s42_set40_h3", "fqe_s42_set41_h3", "fqe_s42_set42_h3", "fqe_s42_set43_h3", "fqe_s42_base_h1",
         "fqe_s42_base_h3", "fqe_s42_set34_h1", "fqe_s42_set34_h3", "fqe_s42_set35_h1", "fqe_s42_set35_h3",
         "estimate_errors_s41_s38base_rel", "estimate_errors_s41_s38base", "estimate_errors_s41_s36base_rel",
         "estimate_errors_s41_s36base", "fqe_s41_base_default", "fqe_s41_base_prevnee", "fqe_s41_base_prev",
         "fqe_s41_set34_default", "fqe_s41_set34_prevnee", "fqe_s41_set34_prev", "fqe_s41_set35_default",
         "fqe_s41_set35_prevnee", "fqe_s41_set35_prev",
         "band_goals_s39", "band_goals_s39_limit10", "fqe_s39_set26", "fqe_s39_set27", "fqe_s39_set28",
         "fqe_s39_set29", "fqe_s39_set30", "fqe_s39_set31", "fqe_s39_set32", "fqe_s39_set33",
         "band_goals_s39_posthoc", "fqe_s39_base_prev",
         "fqe_s38_set24_default", "fqe_s38_set24_wide", "fqe_s38_set25_default", "fqe_s38_set25_wide", "fqe_s38_base", "fqe_s38_base_wide", "fqe_s38_base_epochs1", "fqe_s38_base_epochs6", "fqe_s38_base_binned", "spread_truth_s38", "vaso_urine_truth_s38", "spread_doses_s38", "fqe_goals_s37", "estimate_errors_s37", "truth_repro_s37", "fqe_s37_set16", "fqe_s37_set17", "fqe_s37_set18", "fqe_s37_set19", "fqe_s37_set20", "fqe_s37_set21", "fqe_s37_set22", "fqe_s37_set23", "fqe_s37_base",
         "anchored_goals_s36fresh", "anchored_support_s36", "anchored_goals_s36", "spread_truth_s36", "anchored_s36_set16", "anchored_s36_set17", "anchored_s36_set18", "anchored_s36_set19", "anchored_s36_set20", "anchored_s36_set21", "anchored_s36_set22", "anchored_s36_set23", "anchored_support_s35", "anchored_support_s34pages", "anchored_s35_set1", "anchored_s35_set2", "anchored_s35_set3", "anchored_s35_set4", "anchored_s35_set5", "anchored_s35_set6", "anchored_s35_set7", "anchored_s35_set8", "anchored_s35_set9", "anchored_s35_set10", "anchored_s35_set11", "anchored_s35_set12", "anchored_s35_set13", "anchored_s35_set14", "anchored_s35_set15", "anchored_s34_set1", "anchored_s34_set2", "anchored_s34_set3", "anchored_s34_set4", "anchored_s34_set5", "anchored_s34_set6", "anchored_s34_set7", "anchored_s34_set8", "mb_attending_s33", "mb_attending_s33_set2", "mb_attending_s33_set3", "mb_attending_s33_set4", "mb_attending_s32", "mb_attending_s32_set2", "mb_attending_s32_set3", "mb_attending_s32_coded", "mb_finetuned_actions_s31_l1", "mb_finetuned_actions_s31_l05", "mb_finetuned_s31_l1", "mb_finetuned_s31_l05", "mb_weighted_s31_l1", "mb_weighted_s31_l05", "mb_weighted_s31_control", "mb_more_stays_s30", "mb_logging_s30", "mb_lags1_s29_u54", "mb_lags1_s29_u55", "mb_lags1_s29_u56", "mb_lags1_s29_u57", "mb_logging_s29", "mb_replay_s29", "ope_coverage_s28", "mb_states_s28", "mb_lags_s28", "cost_reader_s27", "ope_rank_s27union58", "ope_rank_s27union56", "ope_rank_s27union55", "ope_rank_s27union54", "ope_rank_s24seed58_a_s27", "ope_rank_s24seed58_b_s27", "ope_rank_s23seed56_a_s27", "ope_rank_s23seed56_b_s27", "ope_rank_s22seed55_a_s27", "ope_rank_s22seed55_b_s27", "ope_rank_s21seed54_a_s27", "ope_rank_s21seed54_b_s27", "ope_rank_s21spread_fresh_s27",
         "ope_rank_s24union58", "ope_rank_s24learners58", "ope_rank_s24seed58_a", "ope_rank_s24seed58_b", "ope_rank_s23union57", "ope_rank_s23learners57", "ope_rank_s23seed57_a", "ope_rank_s23seed57_D1", "ope_rank_s23seed57_D2", "ope_rank_s23union56", "ope_rank_s23learners56", "ope_rank_s23seed56_a", "ope_rank_s23seed56_b", "ope_rank_s22union55", "ope_rank_s22learners55", "ope_rank_s22seed55_a", "ope_rank_s22seed55_b", "ope_rank_s21union_fresh", "ope_rank_s21learners54", "ope_rank_s21seed54_a", "ope_rank_s21seed54_b", "ope_rank_s21spread_fresh", "ope_rank_s21union_seed42_t20k", "ope_rank_s21union_seed7_t20k", "ope_rank_s21union_seed42_prev", "ope_rank_s21union_seed7_prev", "ope_rank_s21learners_seed42_t20k", "ope_rank_s21learners_seed7_t20k", "ope_rank_s21spread_t20k", "ope_rank_s21s14set",
         "ope_rank_s20union_seed42_t20k", "ope_rank_s20union_seed7_t20k", "ope_rank_s20knn_t20k", "ope_rank_s20knn_seed7_t20k", "ope_rank_s20knn_spread_t20k", "ope_rank_s20knn_seed42_r32", "ope_rank_s20knn_seed7_r32", "ope_rank_s20knn_seed42_r32_t20k", "ope_rank_s20knn_seed7_r32_t20k", "ope_rank_s20knn_full_seed42", "ope_rank_s20knn_full_seed7", "ope_rank_s20knn_full_seed42_t20k", "ope_rank_s20knn_full_seed7_t20k",
         "ope_rank_s18union", "ope_rank_s18union_seed7", "ope_rank_s18knn_seed7", "ope_rank_s18knn", "ope_rank_s18knn_spread", "ope_rank_s18knn_s14set", "ope_coverage_s18knn", "ope_coverage_s18knn_own", "ope_rank_s16learners", "mb_bias_s17", "cost_shrinkage_s25", "ope_rank_s14learners", "ope_rank_s14mb", "ope_coverage_s14own_mb", "ope_coverage_s14_mb", "ope_coverage_s13own", "ope_coverage_s12own", "ope_coverage_s12", "ope_rank_s11b", "ope_rank_s11", "ope_coverage_s11", "ope_hull_s11", "ope_rank_s10", "ope_rank", "ope_coverage", "cql_s26b", "cql_s26", "cql_discrete_s26", "cql_s25", "cql_s24", "cql_s15", "cql_s13", "cql", "cql_s12_noamx", "ope_rank_s16a")


def main() -> None:
    pages = sorted((HERE / "results").glob("*.md"), key=lambda p: (ORDER.index(p.stem) if p.stem in ORDER else len(ORDER), p.stem))
    parts = [
        "# Benchmark results\n",
        "Generated by `python benchmarks/collect.py` from `benchmarks/results/*.md`; each section names the script that "
        "measured it, the machine state and the baseline measured in the same run. Rerun a script to refresh its "
        "section.\n",
    ]
    for page in pages:
        text = page.read_text(encoding="utf-8").strip()
        lines = text.splitlines()
        lines = ["#" + ln if ln.startswith("#") else ln for ln in lines]  # every heading one level down
        parts.append("\n".join(lines) + "\n")
    (HERE / "RESULTS.md").write_text("\n".join(parts), encoding="utf-8")


if __name__ == "__main__":
    main()
