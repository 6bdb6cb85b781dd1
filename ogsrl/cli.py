"""`ogsrl` — the console script, and the only entry point DVC stages and Prefect tasks call.

Stage commands load params.yaml once, call ``ogsrl.<area>.stage.<fn>(params, root) -> dict`` (the dispatch table
:data:`STAGES`), print the returned metrics as JSON (or their short form, :data:`STAGE_SUMMARIES`) and log the run to MLflow (:mod:`ogsrl.registry.tracking`).
Heavy packages (duckdb, torch, great_expectations, mlflow) are imported only inside the command that needs them,
so ``ogsrl --help`` stays fast.

Bad input (:class:`~ogsrl.config.ConfigError`, :class:`~ogsrl.errors.DataError`, other ``ValueError``s, a missing
input file) ends the command with one readable line on stderr and exit status 2; ``--traceback`` shows the stack.
A failure to reach MLflow is reported as a warning and does not touch the stage's outputs or its exit status.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ogsrl.data.sources import DataConfig

log = logging.getLogger("ogsrl.cli")

EXIT_BAD_INPUT = 2

STAGES: dict[str, tuple[str, str]] = {
    # command                  module                   function   (in pipeline order)
    "generate": ("ogsrl.cli", "run_generate"),
    "validate-raw": ("ogsrl.validate.stage", "run_raw"),
    "extract": ("ogsrl.cohort.stage", "run"),
    "validate-trajectories": ("ogsrl.validate.stage", "run_trajectories"),
    "fit-world-model": ("ogsrl.world.stage", "run"),
    "calibrate-guardian": ("ogsrl.guardian.stage", "run"),
    "train-policies": ("ogsrl.agents.stage", "run"),
    "fit-behaviour": ("ogsrl.ope.stage", "run_behaviour"),
    "simulate-truth": ("ogsrl.ope.stage", "run_truth"),
    "evaluate": ("ogsrl.ope.stage", "run"),
    "clinical": ("ogsrl.ope.clinical_stage", "run"),
    "report": ("ogsrl.report.stage", "run"),
}
"""Stage command → (module, function). DVC stage names are the same with ``_`` for ``-``."""

FAILURE_REPORTS = {
    "validate-raw": "data/reports/validation_raw.json",
    "validate-trajectories": "data/reports/validation_trajectories.json",
}
"""Stages that write their metrics even when they fail (a failed gate): logged with the failed MLflow run."""

STAGE_HELP = {
    "generate": "demo: simulate MIMIC-IV-layout tables into data/raw; other sources: write data/raw/SOURCE.json",
    "validate-raw": "validation gate on the raw tables (Great Expectations)",
    "extract": "DuckDB Sepsis-3 cohort extraction → data/trajectories/{train,val,test}.parquet",
    "validate-trajectories": "validation gate on the trajectory tables",
    "fit-world-model": "fit the ensemble world model",
    "calibrate-guardian": "fit and calibrate the guardian (support estimate + certificate)",
    "train-policies": "train the configured policies (run × seed units; with sweep.enabled on Dask: flows/sweep.py)",
    "fit-behaviour": "fit the clinicians' action density π̂_b for importance weights → data/models/behaviour",
    "simulate-truth": "demo: true values of the behaviour policy and every trained policy by simulation (cached)",
    "evaluate": "off-policy evaluation of the trained policies (WIS, PDWIS, FQE, DR, WDR)",
    "clinical": "the paper's clinical metrics (ME, MCR, AIR, ACP, threshold shares) of every policy on the test split",
    "report": "write the self-contained results report data/reports/index.html",
}

SOURCE_FILE = "SOURCE.json"
"""Pointer written into data.raw_dir by `ogsrl generate`; downstream DVC stages depend on the raw dir."""


def _resolve(root: Path, path: str) -> Path:
    p = Path(path).expanduser()
    return p if p.is_absolute() else root / p


def _source_pointer(cfg: DataConfig, root: Path) -> dict[str, Any]:
    """What the non-demo input is, fingerprinted cheaply (file names and sizes; the file hash for a parquet)."""
    from ogsrl.errors import DataError
    from ogsrl.io import file_sha256

    if cfg.source == "mimic-iv":
        from ogsrl.cohort.views import locate_tables

        base = _resolve(root, cfg.mimic_path)
        if not base.is_dir():
            raise DataError(f"data.mimic_path {str(base)!r} is not a directory")
        locate_tables(base)  # every table the extraction reads must be there (DataError naming the missing ones)
        files = sorted(
            p for p in base.rglob("*") if p.is_file() and p.name.endswith((".csv.gz", ".csv", ".parquet"))
        )
        if not files:
            raise DataError(f"data.mimic_path {str(base)!r} holds no .csv.gz/.csv/.parquet tables")
        listing = {p.relative_to(base).as_posix(): p.stat().st_size for p in files}
        return {"source": cfg.source, "path": str(base), "files": listing}
    path = _resolve(root, cfg.trajectories_path)
    if not path.is_file():
        raise DataError(f"data.trajectories_path {str(path)!r} is not a file")
    out = {"source": cfg.source, "path": str(path), "bytes": path.stat().st_size, "sha256": file_sha256(path)}
    if cfg.schema_path.strip():  # the sidecar schema is part of the input: a changed one reruns the pipeline
        schema = _resolve(root, cfg.schema_path)
        if not schema.is_file():
            raise DataError(f"data.schema_path {str(schema)!r} is not a file")
        out["schema_sha256"] = file_sha256(schema)
    return out


def run_generate(params: Mapping[str, Any], root: Path) -> dict[str, Any]:
    """The `generate` stage: run the simulator for the demo source, or record a pointer for the others.

    Writes ``<raw_dir>/SOURCE.json`` in every case, so the downstream stages (which depend on the raw dir) rerun
    when the source or its files change. For mimic-iv and trajectories the raw dir holds only that pointer: the
    download is read in place and DVC does not hash it (see README, "Real MIMIC-IV"). A mimic-iv directory that
    lacks a table the extraction reads is refused, naming the table.
    """
    from ogsrl.config import build
    from ogsrl.io import atomic_path, write_json

    cfg = build(DataConfig, params.get("data") or {}, "data")
    raw_dir = _resolve(root, cfg.raw_dir)
    metrics_path = root / "data" / "reports" / "generate.json"
    if cfg.source == "demo":
        from ogsrl.synth import stage as synth_stage

        result = dict(synth_stage.run(params, root))
        pointer = {"source": "demo", "raw_dir": cfg.raw_dir}
        write_json(raw_dir / SOURCE_FILE, pointer)
        result.setdefault("source", "demo")
    else:
        pointer = _source_pointer(cfg, root)
        with atomic_path(raw_dir) as tmp:
            tmp.mkdir(parents=True)
            (tmp / SOURCE_FILE).write_text(json.dumps(pointer, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        n_files = len(pointer.get("files", {})) or 1
        result = {"source": cfg.source, "generated": False, "input_files": n_files}
    write_json(metrics_path, result)
    return result


def stage_function(name: str) -> Callable[[Mapping[str, Any], Path], dict[str, Any]]:
    """Import and return the function behind stage command ``name`` (lazily)."""
    if name not in STAGES:
        raise ValueError(f"unknown stage {name!r}; known: {', '.join(STAGES)}")
    module_name, fn_name = STAGES[name]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and (module_name == exc.name or module_name.startswith(exc.name + ".")):
            raise ValueError(f"stage {name!r} is not available in this version ({module_name} missing)") from exc
        raise
    return getattr(module, fn_name)


STAGE_PLOTS: dict[str, tuple[str, ...]] = {
    "fit-world-model": ("data/reports/world_plots",),
    "train-policies": ("data/reports/train_curves.csv",),
    "evaluate": ("data/reports/evaluate/estimates.csv", "data/reports/evaluate/weights.csv"),
    "clinical": ("data/reports/clinical_plots",),
}
"""Plot tables (dvc.yaml ``plots``) each stage writes; they are logged to MLflow beside the metrics."""

STAGE_FIGURES: dict[str, tuple[str, ...]] = {
    "report": ("data/reports/figures", "data/reports/index.html"),
}
"""Figures (SVG files, or folders of them) and pages each stage writes; logged to MLflow under ``figures/``."""

STAGE_SUMMARIES: dict[str, tuple[str, str]] = {
    "fit-world-model": ("ogsrl.world.stage", "summary"),
    "calibrate-guardian": ("ogsrl.guardian.stage", "summary"),
    "train-policies": ("ogsrl.agents.stage", "summary"),
    "simulate-truth": ("ogsrl.ope.stage", "truth_summary"),
    "evaluate": ("ogsrl.ope.stage", "summary"),
    "clinical": ("ogsrl.ope.clinical_stage", "summary"),
}
"""Stages whose metrics are too many to print: command → (module, function) giving the short form printed instead
(the full metrics still go to the stage's metrics file and MLflow)."""


def _tracking_enabled(flag: bool) -> bool:
    return flag and os.environ.get("OGSRL_NO_TRACK", "").lower() not in ("1", "true", "yes")


def _track(stage: str, params: Mapping[str, Any], root: Path, result: Any, error: BaseException | None) -> None:
    """Log the run to MLflow; any failure there is a warning, never a stage failure."""
    from ogsrl.registry import tracking

    try:
        cfg = tracking.tracking_config(params)
        uri = tracking.resolve_tracking_uri(cfg, root, os.environ.get("MLFLOW_TRACKING_URI"))
        plots = [root / p for p in STAGE_PLOTS.get(stage, ())] if error is None else []
        figs = [root / p for p in STAGE_FIGURES.get(stage, ())] if error is None else []
        tracking.log_stage_run(stage, params, result, root, uri, cfg.experiment, error=error, plots=plots,
                               figures=figs)
    except Exception as exc:  # noqa: BLE001 - tracking must never break a stage
        log.warning("MLflow logging failed for stage %s (outputs are unaffected): %s: %s",
                    stage, type(exc).__name__, exc)


def _failure_report(name: str, root: Path, started: float) -> dict[str, Any] | None:
    """The metrics a failed gate wrote during this run (None if it wrote none)."""
    rel = FAILURE_REPORTS.get(name)
    path = root / rel if rel else None
    if path is None or not path.is_file() or path.stat().st_mtime < started - 1:
        return None
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return report if isinstance(report, dict) else None


def run_stage(
    name: str, params_path: str | Path | None = None, root: str | Path = ".", track: bool = True
) -> dict[str, Any]:
    """Run one pipeline stage: load params, call the stage function, log the run to MLflow.

    Args:
        name: stage command (a key of :data:`STAGES`; ``_`` is accepted for ``-``).
        params_path: params.yaml to use; default ``<root>/params.yaml``.
        root: project root; inputs and outputs are resolved under it.
        track: log the run to MLflow (also switched off by env ``OGSRL_NO_TRACK=1``).

    Returns:
        The stage's metrics dict.
    """
    from ogsrl import env
    from ogsrl.config import ComputeConfig, build, load_params

    name = name.replace("_", "-")
    root = Path(root).resolve()
    params = load_params(Path(params_path) if params_path else root / "params.yaml")
    compute = build(ComputeConfig, params.get("compute") or {}, "compute")
    if compute.threads:
        env.pin_threads(compute.threads)
    env.keep_freed_memory()
    fn = stage_function(name)
    track = _tracking_enabled(track)
    started = time.time()
    try:
        result = fn(params, root)
    except Exception as exc:
        if track:
            _track(name, params, root, _failure_report(name, root, started), exc)
        raise
    if not isinstance(result, Mapping):
        raise TypeError(f"stage {name!r} returned {type(result).__name__}, expected a dict of metrics")
    result = dict(result)
    if track:
        _track(name, params, root, result, None)
    return result


# --------------------------------------------------------------------------------------------------- commands


def _cmd_stage(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    result = run_stage(args.command, args.params, args.root, track=not args.no_track)
    if args.command in STAGE_SUMMARIES:
        module, fn = STAGE_SUMMARIES[args.command]
        result = getattr(importlib.import_module(module), fn)(result)
    print(json.dumps(result, indent=2, sort_keys=True, default=str))
    print(f"ogsrl {args.command}: done in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    return 0


def _cmd_synth(args: argparse.Namespace) -> int:
    from ogsrl.synth import stage as synth_stage

    kwargs: dict[str, Any] = {}
    if args.chunk_stays is not None:
        kwargs["chunk_stays"] = args.chunk_stays
    out = synth_stage.generate(args.stays, args.seed, Path(args.out), args.format, args.overwrite, **kwargs)
    if isinstance(out, Mapping):
        print(json.dumps(dict(out), indent=2, sort_keys=True, default=str))
    print(f"ogsrl synth: wrote {args.stays} stays to {args.out}", file=sys.stderr)
    return 0


def _cmd_synth_mdp(args: argparse.Namespace) -> int:
    from ogsrl.synth import tabular

    cfg = tabular.MDPConfig(actions=args.actions, stays=args.stays, horizon=args.horizon, seed=args.seed)
    summary = tabular.write(cfg, Path(args.out))
    if args.schema_out:
        from ogsrl.io import atomic_path

        with atomic_path(Path(args.schema_out)) as tmp:
            tmp.write_text(json.dumps(tabular.schema(args.actions).to_dict(), indent=2) + "\n", encoding="utf-8")
    print(json.dumps(summary, indent=2, sort_keys=True))
    print(f"ogsrl synth-mdp: wrote {summary['stays']} stays ({args.actions} actions) to {args.out}", file=sys.stderr)
    return 0


def _cmd_mdp_value(args: argparse.Namespace) -> int:
    from ogsrl.agents import load_policy
    from ogsrl.policy import load_checked
    from ogsrl.synth import tabular

    cfg = tabular.read_config(Path(args.table))
    if args.policy == "behaviour":
        kind = cfg.actions
        values = tabular.evaluate(tabular.latent_policy(tabular.behaviour_policy(kind), kind, args.draws), cfg)
    else:
        values = tabular.policy_value(cfg, load_checked(load_policy, Path(args.policy)), args.draws, args.seed)
    print(json.dumps({k: round(v, 6) for k, v in values.items()}, indent=2, sort_keys=True))
    return 0


def _cmd_synth_filler(args: argparse.Namespace) -> int:
    from ogsrl.synth import filler

    rows: dict[str, int] = {}
    for item in args.rows or []:
        table, sep, n = item.partition("=")
        if not sep or not n.strip().isdigit():
            raise ValueError(f"--rows expects TABLE=N, got {item!r}")
        rows[table.strip()] = int(n)
    targets = filler.targets_for(args.scale, rows)
    report = filler.add_filler(Path(args.base), Path(args.out), targets, args.seed, args.format,
                               memory_limit=args.memory_limit, threads=args.threads, overwrite=args.overwrite)
    print(json.dumps(report, indent=2, sort_keys=True))
    print(f"ogsrl synth-filler: wrote {args.out} in {report['seconds']} s", file=sys.stderr)
    return 0


def _cmd_truth(args: argparse.Namespace) -> int:
    from ogsrl.config import load_params
    from ogsrl.io import write_parquet
    from ogsrl.synth import stage as synth_stage
    from ogsrl.synth.truth import paired_difference

    root = Path(args.root).resolve()
    params = load_params(Path(args.params) if args.params else root / "params.yaml")
    res = synth_stage.truth_result(params, root, args.policy, args.episodes, args.seed)
    result: dict[str, Any] = {"truth/policy": args.policy, "truth/seed": args.seed, **res.to_dict()}
    if args.against:
        other = synth_stage.truth_result(params, root, args.against, args.episodes, args.seed)
        pairs = paired_difference(res.per_stay, other.per_stay)
        result["truth/against"] = args.against
        result["truth/paired/patients"] = next(iter(pairs.values())).ess
        for col, est in pairs.items():
            result[f"truth/paired/{col}"] = est.value
            result[f"truth/paired/{col}_ci_lo"] = est.ci_low
            result[f"truth/paired/{col}_ci_hi"] = est.ci_high
    if args.per_patient:
        write_parquet(args.per_patient, res.per_stay.reset_index())
        print(f"ogsrl truth: wrote {len(res.per_stay)} patients' values to {args.per_patient}", file=sys.stderr)
    if args.json:
        print(json.dumps(result, indent=2, sort_keys=True, default=str))
    else:
        width = max((len(str(k)) for k in result), default=0)
        for key, value in result.items():
            print(f"{str(key):<{width}}  {value}")
    return 0


def _params_root(args: argparse.Namespace) -> tuple[dict[str, Any], Path]:
    from ogsrl.config import load_params

    root = Path(args.root).resolve()
    return load_params(Path(args.params) if args.params else root / "params.yaml"), root


def _cmd_register(args: argparse.Namespace) -> int:
    from ogsrl.registry import stage as registry_stage

    params, root = _params_root(args)
    result = registry_stage.register(params, root)
    print(json.dumps(result, indent=2, sort_keys=True, default=str))
    print(f"ogsrl register: {result['model_uri']} is the challenger; next: ogsrl promote", file=sys.stderr)
    return 0


def _cmd_promote(args: argparse.Namespace) -> int:
    from ogsrl.registry import stage as registry_stage

    params, root = _params_root(args)
    result = registry_stage.promote(params, root, version=args.version, dry_run=args.dry_run)
    print(json.dumps(result, indent=2, sort_keys=True, default=str))
    label = " (dry run, nothing changed)" if args.dry_run else ""
    print(f"ogsrl promote{label}: v{result['version']}: {result['summary']}", file=sys.stderr)
    return 0


def _cmd_release(args: argparse.Namespace) -> int:
    from ogsrl.registry import stage as registry_stage

    params, root = _params_root(args)
    out = registry_stage.release(params, root)
    registry_stage.write_report(params, root, out)
    for step in out["steps"]:
        print(f"gate v{step['version']} ({step['run']}, {step['role']}): {step['outcome'].upper()}")
        for line in step["lines"]:
            print(f"  {line}")
        if step.get("comparison_basis"):
            print(f"  (return compared by {step['comparison_basis']})")
    print(out["conclusion"])
    return 0


def _cmd_lineage(args: argparse.Namespace) -> int:
    from ogsrl.registry import stage as registry_stage

    params, root = _params_root(args)
    out = registry_stage.lineage(params, root, args.uri, verify=args.verify)
    if args.json:
        print(json.dumps({k: v for k, v in out.items() if k != "text"}, indent=2, sort_keys=True, default=str))
    else:
        print(out["text"])
        if args.verify:
            print("verify    OK: every recorded hash matches" if out["verified"] else "verify    FAILED:")
            for d in out["differences"]:
                print(f"            {d['kind']:<8} {d['path']}  ({d['detail']})")
    return 0 if not args.verify or out["verified"] else 1


def _cmd_salt_fingerprint(args: argparse.Namespace) -> int:
    from ogsrl import privacy

    params, root = _params_root(args)
    path, changed = privacy.write_fingerprint(params, root)
    state = "updated: `dvc repro` reruns the stages that hash ids" if changed else "unchanged"
    print(f"ogsrl salt-fingerprint: {path.relative_to(root)} {state}", file=sys.stderr)
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    from ogsrl.serve import server

    params, root = _params_root(args)
    server.serve(params, root, host=args.host, port=args.port, model_uri=args.model_uri)
    return 0


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (global options are accepted before or after the subcommand)."""

    def add_globals(p: argparse.ArgumentParser, suppress: bool) -> None:
        d = (lambda v: argparse.SUPPRESS) if suppress else (lambda v: v)
        p.add_argument("--params", default=d(None), help="params file (default: <root>/params.yaml)")
        p.add_argument("--root", default=d("."), help="project root holding data/ (default: .)")
        p.add_argument("--no-track", action="store_true", default=d(False),
                       help="do not log the run to MLflow (also: env OGSRL_NO_TRACK=1)")
        p.add_argument("-v", "--verbose", action="store_true", default=d(False), help="debug logging")
        p.add_argument("--traceback", action="store_true", default=d(False),
                       help="show the full traceback on errors")

    parser = argparse.ArgumentParser(
        prog="ogsrl", description="Offline guarded safe RL pipeline: one subcommand per pipeline stage."
    )
    add_globals(parser, suppress=False)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in STAGES:
        p = sub.add_parser(name, help=STAGE_HELP.get(name, name), description=STAGE_HELP.get(name, name))
        add_globals(p, suppress=True)
        p.set_defaults(func=_cmd_stage)

    p = sub.add_parser("synth", help="write a simulated MIMIC-IV-layout dataset to a directory")
    add_globals(p, suppress=True)
    p.add_argument("--stays", type=_positive_int, required=True, help="number of ICU stays")
    p.add_argument("--seed", type=int, required=True, help="random seed (same seed → same bytes)")
    p.add_argument("--out", required=True, help="output directory (hosp/ and icu/ are created in it)")
    p.add_argument("--format", choices=["csv.gz", "parquet"], default="csv.gz", help="table format")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty output directory")
    p.add_argument("--chunk-stays", type=_positive_int, default=None, help="stays simulated per chunk")
    p.set_defaults(func=_cmd_synth)

    p = sub.add_parser("synth-mdp", help="write a small non-MIMIC trajectory table with its v2 schema and exactly "
                       "known policy values (ogsrl/synth/tabular.py)")
    add_globals(p, suppress=True)
    p.add_argument("--out", required=True, help="output parquet file")
    p.add_argument("--actions", choices=["discrete", "continuous"], default="discrete", help="action space")
    p.add_argument("--stays", type=_positive_int, default=2000, help="logged stays (default 2000)")
    p.add_argument("--horizon", type=_positive_int, default=10, help="steps per stay at most (default 10)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--schema-out", default=None, help="also write the schema as a sidecar JSON file here")
    p.set_defaults(func=_cmd_synth_mdp)

    p = sub.add_parser("mdp-value", help="exact return, cost return and mortality of a policy on the MDP that "
                       "`ogsrl synth-mdp` wrote a table of")
    add_globals(p, suppress=True)
    p.add_argument("--table", required=True, help="the parquet `ogsrl synth-mdp` wrote (its config is in metadata)")
    p.add_argument("--policy", required=True, help="a saved policy directory, or 'behaviour' (the logging policy)")
    p.add_argument("--draws", type=_positive_int, default=4000, help="action draws per latent state (default 4000)")
    p.add_argument("--seed", type=int, default=0, help="seed of those draws (default 0)")
    p.set_defaults(func=_cmd_mdp_value)

    p = sub.add_parser("synth-filler", help="full-size stand-in: a MIMIC-IV-layout directory padded with filler "
                       "rows of other itemids up to MIMIC-IV v3.1 row counts")
    add_globals(p, suppress=True)
    p.add_argument("--base", required=True, help="MIMIC-IV-layout directory to pad (e.g. `ogsrl synth` output)")
    p.add_argument("--out", required=True, help="output directory (hosp/ and icu/ are created in it)")
    p.add_argument("--format", choices=["csv.gz", "parquet"], default="csv.gz", help="table format")
    p.add_argument("--seed", type=int, required=True, help="seed of the filler values")
    p.add_argument("--scale", type=float, default=1.0, help="targets = scale x MIMIC-IV v3.1 rows (default 1)")
    p.add_argument("--rows", nargs="*", metavar="TABLE=N", help="explicit target rows of a padded table")
    p.add_argument("--memory-limit", default="4GB", help="DuckDB memory_limit (default 4GB)")
    p.add_argument("--threads", type=_positive_int, default=2, help="DuckDB threads (default 2)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty output directory")
    p.set_defaults(func=_cmd_synth_filler)

    p = sub.add_parser("truth", help="true value, mortality and cost rates of a policy, by simulation")
    add_globals(p, suppress=True)
    p.add_argument("--policy", required=True,
                   help="builtin policy name (behaviour, no-treatment, random, heuristic) or a saved policy dir")
    p.add_argument("--episodes", type=_positive_int, default=1000, help="simulated episodes (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--against", metavar="POLICY",
                   help="also simulate POLICY on the same patients and report --policy minus it per patient "
                        "(truth/paired/...: mean difference and 95 %% CI over the patients both cohorts keep)")
    p.add_argument("--per-patient", metavar="PATH",
                   help="write --policy's per-patient values (return, cost returns, in-hospital death) to a parquet file")
    p.set_defaults(func=_cmd_truth)

    p = sub.add_parser("register", help="register the trained policy bundle in MLflow as the `challenger`")
    add_globals(p, suppress=True)
    p.set_defaults(func=_cmd_register)

    p = sub.add_parser("promote", help="promotion gate: make the challenger `champion` if every check passes")
    add_globals(p, suppress=True)
    p.add_argument("--dry-run", action="store_true", help="print the decision, change nothing")
    p.add_argument("--version", default=None, help="candidate version (default: the `challenger` alias)")
    p.set_defaults(func=_cmd_promote)

    p = sub.add_parser("release", help="register + gate the baseline while there is no champion, then the "
                       "candidate; say what was decided and how to serve/audit (what `make run` ends with)")
    add_globals(p, suppress=True)
    p.set_defaults(func=_cmd_release)

    p = sub.add_parser("lineage", help="lineage audit of a registered model (data, code, params, evidence)")
    add_globals(p, suppress=True)
    p.add_argument("uri", help="models:/ogsrl-policy@champion or models:/ogsrl-policy/<version>")
    p.add_argument("--json", action="store_true", help="print the whole lineage as JSON")
    p.add_argument("--verify", action="store_true",
                   help="recompute the recorded hashes here; exit 1 and name every file that differs")
    p.set_defaults(func=_cmd_lineage)

    p = sub.add_parser("salt-fingerprint",
                       help="record the HMAC fingerprint of the salt in use (data/salt-fingerprint.json) for DVC")
    add_globals(p, suppress=True)
    p.set_defaults(func=_cmd_salt_fingerprint)

    p = sub.add_parser("serve", help="serve recommendations over HTTP on 127.0.0.1 (params `serve`)")
    add_globals(p, suppress=True)
    p.add_argument("--host", default=None, help="bind address (default: params serve.host, 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="port (default: params serve.port)")
    p.add_argument("--model-uri", default=None, help="models:/… or a bundle directory (default: the champion)")
    p.set_defaults(func=_cmd_serve)
    return parser


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
    for noisy in ("alembic", "mlflow", "urllib3", "numexpr", "great_expectations", "filelock"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if verbose else logging.WARNING)


def main(argv: Sequence[str] | None = None) -> int:
    """Console-script entry point. Returns the process exit status."""
    from ogsrl import env

    parser = build_parser()
    args = parser.parse_args(argv)
    env.setdefaults(Path(args.root))
    _setup_logging(args.verbose)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError) as exc:  # ConfigError and DataError are ValueErrors
        if args.traceback:
            raise
        from ogsrl import privacy

        message = " ".join(str(exc).split()) or type(exc).__name__
        message = privacy.scrub(message, privacy.secrets_from_env())  # no raw ids, dates or the salt on stderr
        print(f"ogsrl {args.command}: error: {message}", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
