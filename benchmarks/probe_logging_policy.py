"""Model-based OPE's pull towards the logging policy: the same evaluation, fitted on data logged by other clinicians
(issue 12).

``mb`` reads the SpO₂ cost as a line 0.26 + 0.78 × truth: policies far from the clinicians are read towards the
clinicians' level. Is that the model class (a Markov model of the 4-hour observed state cannot carry the cost
process) or the data (the dose effects are only identified near what the clinicians did)? Here the demo is
regenerated under a different logging policy (``synth.clinicians`` in its params) — the simulator, the patients (same
``synth.seed``) and the cohort unchanged — and the root's evaluation split is swapped for the new one's test split;
everything else (policies, fits, seeds, rollouts) is the root's. Logging policies (``--logging``):

* ``default``: the root's own test split (the demo's clinicians);
* ``quarter``: the demo's clinicians at a quarter of both doses (the data of ``clin_both0.25``: that policy's estimate
  is then almost on-policy);
* ``wide``: the demo's clinicians with 1.5× the dose spread at the same state (log-normal σ 0.55 → 0.825 fluids,
  0.5 → 0.75 vasopressor; the attendings' dose styles 2× as spread), the same mean practice (pages before session 30
  patched the simulator with a fluid σ of 0.8 instead);
* ``reseeded``: the demo's clinicians on other patients (``synth.seed`` + 1): pooled with ``default``, twice the
  stays of one logging policy — the control for a pooled pair of policies;
* ``a+b``: the test splits of ``a`` and ``b`` pooled into one evaluation split (data from two logging policies).

For every policy of the saved rank pages: the value as ``mb`` reads it (``--fits`` fits, the root's seeds), against
the truth (10,000 patients, seed 13).

Usage:
  .venv/bin/python benchmarks/probe_logging_policy.py --root /work/s21/S \
      --pages ope_rank_s21spread_fresh,ope_rank_s24seed58_a,ope_rank_s24seed58_b --policy-roots /work/s24/E,/work/s24/F \
      --work /work/s21/w_spread --admitted ope_rank_s24union58 --data /tmp/logging [--logging default,quarter,wide] \
      [--fits 4] [--out mb_logging]
Writes benchmarks/results/<out>.json and .md; the regenerated projects stay under ``--data``.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import probe_common  # noqa: E402
import exclusive  # noqa: E402

LOGGING = ("default", "quarter", "wide", "reseeded")
CLINICIANS = {"quarter": {"fluid_scale": 0.25, "vasopressor_scale": 0.25},
              "wide": {"dose_spread": 1.5, "style_spread": 2.0}}
"""the ``synth.clinicians`` params of each logging policy"""


def regenerate(name: str, params: Path, project: Path) -> Path:
    """``project`` with the demo generated, validated and extracted under logging policy ``name``; its test split."""
    from ogsrl.cli import main as cli

    if name not in LOGGING[1:]:
        raise SystemExit(f"unknown logging policy {name!r}; known: {LOGGING[1:]}")
    project.mkdir(parents=True, exist_ok=True)
    doc = yaml.safe_load(params.read_text())
    if name == "reseeded":
        doc["synth"]["seed"] += 1
    doc["synth"]["clinicians"] = {**(doc["synth"].get("clinicians") or {}), **CLINICIANS.get(name, {})}
    (project / "params.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    for stage in ("generate", "validate-raw", "extract"):
        if cli(["--root", str(project), "--no-track", stage]):
            raise SystemExit(f"{stage} failed under logging policy {name}")
    return project / "data/trajectories/test.parquet"


def pooled(splits: list[Path], out: Path) -> None:
    """One evaluation split of several logging policies' test splits (the first's file metadata; the k-th split's
    stay keys prefixed with ``k:`` so the same simulated patient under two policies stays two stays)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    tables = [pq.read_table(p) for p in splits]
    meta = tables[0].schema.metadata
    parts = []
    for k, t in enumerate(tables):
        if k:
            i = t.schema.get_field_index("stay_key")
            key = pc.binary_join_element_wise(pa.scalar(f"{k}:"), t["stay_key"].cast(pa.string()), "")
            t = t.set_column(i, t.schema.field(i), key.cast(t.schema.field(i).type))
        parts.append(t.replace_schema_metadata(meta))
    pq.write_table(pa.concat_tables(parts), out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    probe_common.add_args(ap)
    ap.add_argument("--data", type=Path, required=True, help="where the regenerated projects go")
    ap.add_argument("--logging", default=",".join(LOGGING),
                    help=f"logging policies, of {', '.join(LOGGING)}, or several joined by + (pooled)")
    probe_common.add_scoring_args(ap, "mb_logging")
    args = ap.parse_args()
    exclusive.hold(Path(__file__).stem)
    t0 = time.perf_counter()
    admitted = probe_common.admitted_by(args.admitted)
    root = args.root.resolve()
    values: dict[str, dict[str, list[float]]] = {}
    logged: dict[str, dict[str, float]] = {}
    costs: list[str] = []
    made = {"default": root / "data/trajectories/test.parquet"}
    for name in args.logging.split(","):
        for part in name.split("+"):
            if part not in made:
                made[part] = regenerate(part, root / "params.yaml", args.data / part)
        if name == "default":
            args_l = args
        else:
            copy = args.data / f"{name}-root"
            shutil.rmtree(copy, ignore_errors=True)
            shutil.copytree(root, copy)
            pooled([made[p] for p in name.split("+")], copy / "data/trajectories/test.parquet")
            args_l = argparse.Namespace(**{**vars(args), "root": copy})
        ps = probe_common.load(args_l)
        costs = list(ps.table.cost_columns)
        per_stay = ps.test.groupby("stay_key")[["reward", *costs]].sum().mean()
        logged[name] = {"return": float(per_stay["reward"]), **{c: float(per_stay[c]) for c in costs},
                        "stays": int(ps.test["stay_key"].nunique())}
        values[name] = probe_common.mb_values(ps, probe_common.plain_models(ps, args.fits))
        print(f"{name} done: logged {logged[name]}", file=sys.stderr, flush=True)
    show = [n for n in ("clin_both0.25", "clin_both0.5", "heuristic1.0", "soc/seed42", "clin_fluid2") if n in ps.truth]
    sections = [
        "Each test split's own per-stay means (what its logging policy did):", "",
        "| logging policy | stays | return | " + " | ".join(costs) + " |", "|---|---|---|" + "---|" * len(costs),
        *(f"| {n} | {v['stays']} | {v['return']:.2f} | " + " | ".join(f"{v[c]:.3f}" for c in costs) + " |"
          for n, v in logged.items()), "",
        "SpO₂ cost per stay, read by `mb` under each logging policy's data, against the truth:", "",
        "| policy | truth | " + " | ".join(values) + " |", "|---|---|" + "---|" * len(values),
        *(f"| {p} | {ps.truth[p][f'cost_return_{costs[0]}']:.3f} | "
          + " | ".join(f"{values[n][p][1]:.3f}" for n in values) + " |" for p in show), ""]
    probe_common.write_variants(
        "probe_logging_policy.py", args.out, t0, "Model-based OPE fitted on data of other logging policies",
        f"`mb`'s values ({args.fits} fits) with the evaluation split logged by each policy; truth from {args.pages} "
        f"(10,000 patients, seed 13); *admitted*: the policies {args.admitted or '–'} admits.",
        values, ps.truth, costs, admitted, extra={"logged": logged}, sections=sections)


if __name__ == "__main__":
    main()
