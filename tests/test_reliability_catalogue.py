"""The reliability catalogue: bad inputs across every stage, each one a test, and the table docs/reliability.md shows.

Every CLI case runs ``ogsrl <command>`` (in-process, the console script's own ``main``) on a copy of one tiny project
(40 simulated stays, generated and extracted once per session) after planting one defect, and asserts that

* the exit status is non-zero (2: bad input),
* stderr ends with exactly one ``ogsrl <command>: error: …`` line, no traceback, naming the table / column / key /
  rows the case lists,
* every file under the project that existed before is byte-identical afterwards and no file appeared (except the
  validation report a failed validation gate writes by design, where the case says so).

Serving cases send one malformed request to a running server and assert the HTTP status, a one-line JSON error naming
the field, and that the next good request is still answered.

``python tests/test_reliability_catalogue.py`` rewrites the catalogue section of docs/reliability.md from
:data:`CASES`; a test fails while the two differ.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "reliability.md"
BEGIN = "<!-- catalogue:begin (generated from tests/test_reliability_catalogue.py: CASES) -->"
END = "<!-- catalogue:end -->"


# ---- defects ------------------------------------------------------------------------------------------------------


def _csv(root: Path, table: str) -> Path:
    return root / "data" / "raw" / f"{table}.csv.gz"


def _edit_csv(table: str, fn: Callable[[Any], Any]) -> Callable[[Path], None]:
    def apply(root: Path) -> None:
        import pandas as pd

        path = _csv(root, table)
        frame = fn(pd.read_csv(path, dtype=str, keep_default_na=False))
        frame.to_csv(path, index=False, compression="gzip")
    return apply


def _edit_split(split: str, fn: Callable[[Any], Any]) -> Callable[[Path], None]:
    def apply(root: Path) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        path = root / "data" / "trajectories" / f"{split}.parquet"
        table = pq.read_table(path)
        frame = fn(table.to_pandas())
        out = pa.Table.from_pandas(frame, preserve_index=False).replace_schema_metadata(table.schema.metadata)
        pq.write_table(out, path)
    return apply


def _params(**dotted: Any) -> Callable[[Path], None]:
    def apply(root: Path) -> None:
        path = root / "params.yaml"
        params = yaml.safe_load(path.read_text(encoding="utf-8"))
        for key, value in dotted.items():
            node = params
            *parents, leaf = key.split(".")
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = value
        path.write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    return apply


def _params_text(fn: Callable[[str], str]) -> Callable[[Path], None]:
    def apply(root: Path) -> None:
        path = root / "params.yaml"
        path.write_text(fn(path.read_text(encoding="utf-8")), encoding="utf-8")
    return apply


def _write(rel: str, data: bytes | str) -> Callable[[Path], None]:
    def apply(root: Path) -> None:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data.encode() if isinstance(data, str) else data)
    return apply


def _remove(rel: str) -> Callable[[Path], None]:
    def apply(root: Path) -> None:
        path = root / rel
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    return apply


def _truncate(rel: str, keep: float = 0.5) -> Callable[[Path], None]:
    def apply(root: Path) -> None:
        path = root / rel
        data = path.read_bytes()
        path.write_bytes(data[: int(len(data) * keep)])
    return apply


def _edit_json(rel: str, fn: Callable[[dict], dict]) -> Callable[[Path], None]:
    def apply(root: Path) -> None:
        path = root / rel
        path.write_text(json.dumps(fn(json.loads(path.read_text(encoding="utf-8")))), encoding="utf-8")
    return apply


def _both(*fns: Callable[[Path], None]) -> Callable[[Path], None]:
    def apply(root: Path) -> None:
        for fn in fns:
            fn(root)
    return apply


def _set(col: str, value: Any, rows: slice = slice(0, 1)) -> Callable[[Any], Any]:
    def fn(frame: Any) -> Any:
        frame.loc[frame.index[rows], col] = value
        return frame
    return fn


def _drop(col: str) -> Callable[[Any], Any]:
    return lambda frame: frame.drop(columns=[col])


def _dup_first(frame: Any) -> Any:
    import pandas as pd

    return pd.concat([frame, frame.iloc[:1]], ignore_index=True)


POLICY = "data/models/policies/soc/seed42"
BUNDLE = "bundle"


# ---- the table ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One bad input: where it goes, what the user sees, what must not change."""

    id: str
    """short unique id (the pytest id)"""
    area: str
    """raw tables | trajectory contract | params | artefacts | serving"""
    defect: str
    """the bad input, in words"""
    command: tuple[str, ...]
    """``ogsrl`` arguments (CLI cases), or ``("POST", path)`` / ``("GET", path)`` (serving cases)"""
    apply: Callable[[Path], None] | None
    """plants the defect in a copy of the project (CLI cases)"""
    expect: tuple[str, ...]
    """fragments the one error line (CLI) or the JSON error (serving) must contain"""
    may_change: tuple[str, ...] = ()
    """files a failure writes by design (a failed validation gate's report)"""
    body: bytes | None = None
    """serving: the request body"""
    status: int = 0
    """serving: the expected HTTP status"""
    headers: dict[str, str] = field(default_factory=dict)
    """serving: extra request headers"""


RAW_REPORT = ("data/reports/validation_raw.json", "data/reports/validation/raw")
TRAJ_REPORT = ("data/reports/validation_trajectories.json", "data/reports/validation/trajectories")

CASES: tuple[Case, ...] = (
    # raw tables
    Case("raw-table-missing", "raw tables", "`icu/icustays.csv.gz` deleted", ("extract",),
         _remove("data/raw/icu/icustays.csv.gz"), ("icustays",)),
    Case("raw-column-missing", "raw tables", "`chartevents` without its `valuenum` column", ("extract",),
         _edit_csv("icu/chartevents", _drop("valuenum")), ("chartevents", "valuenum")),
    Case("raw-gzip-truncated", "raw tables", "`labevents.csv.gz` cut in half (corrupt gzip)", ("extract",),
         _truncate("data/raw/hosp/labevents.csv.gz"), ("labevents",)),
    Case("raw-not-gzip", "raw tables", "`patients.csv.gz` holds plain text, not gzip", ("extract",),
         _write("data/raw/hosp/patients.csv.gz", "subject_id,gender\n1,F\n"), ("patients",)),
    Case("raw-duplicate-stay", "raw tables", "a duplicated `icustays` row (same `stay_id` twice)", ("validate-raw",),
         _edit_csv("icu/icustays", _dup_first), ("icustays", "stay_id"), RAW_REPORT),
    Case("raw-non-numeric", "raw tables", "`patients.anchor_age` = `abc` in one row", ("validate-raw",),
         _edit_csv("hosp/patients", _set("anchor_age", "abc")), ("patients", "anchor_age"), RAW_REPORT),
    Case("raw-outtime-before-intime", "raw tables", "an ICU stay whose `outtime` precedes its `intime`",
         ("validate-raw",), _edit_csv("icu/icustays", _set("outtime", "2100-01-01 00:00:00")),
         ("icustays", "outtime"), RAW_REPORT),
    Case("raw-empty-table", "raw tables", "`icustays` with its header only", ("extract",),
         _edit_csv("icu/icustays", lambda f: f.iloc[:0]), ("icustays", "0 rows")),
    Case("mimic-path-missing", "raw tables", "`data.source: mimic-iv` with `data.mimic_path` not a directory",
         ("generate",), _params(**{"data.source": "mimic-iv", "data.mimic_path": "no/such/dir"}),
         ("data.mimic_path", "not a directory")),
    Case("mimic-table-missing", "raw tables", "`data.source: mimic-iv` on a download without `icustays`",
         ("generate",), _both(_remove("data/raw/icu/icustays.csv.gz"), _remove("data/raw/SOURCE.json"),
                              _params(**{"data.source": "mimic-iv", "data.mimic_path": "data/raw"})),
         ("icustays",)),
    Case("trajectories-path-missing", "raw tables", "`data.source: trajectories` with a missing parquet",
         ("generate",), _params(**{"data.source": "trajectories", "data.trajectories_path": "nope.parquet"}),
         ("data.trajectories_path", "nope.parquet")),
    # trajectory contract
    Case("traj-column-missing", "trajectory contract", "`train.parquet` without the `reward` column",
         ("validate-trajectories",), _edit_split("train", _drop("reward")), ("reward",), TRAJ_REPORT),
    Case("traj-nan-state", "trajectory contract", "a NaN `map` in `test.parquet`", ("validate-trajectories",),
         _edit_split("test", _set("map", float("nan"))), ("map",), TRAJ_REPORT),
    Case("traj-negative-dose", "trajectory contract", "`fluid_ml` = −100 in one `train.parquet` row",
         ("validate-trajectories",), _edit_split("train", _set("fluid_ml", -100.0)), ("fluid_ml",), TRAJ_REPORT),
    Case("traj-duplicate-step", "trajectory contract", "a duplicated (`stay_key`, `step`) row in `val.parquet`",
         ("validate-trajectories",), _edit_split("val", _dup_first), ("step",), TRAJ_REPORT),
    Case("traj-cost-not-binary", "trajectory contract", "`cost_spo2_low` = 2 in one `train.parquet` row",
         ("validate-trajectories",), _edit_split("train", _set("cost_spo2_low", 2.0)), ("cost_spo2_low",),
         TRAJ_REPORT),
    Case("traj-split-missing", "trajectory contract", "`train.parquet` deleted before `fit-world-model`",
         ("fit-world-model",), _remove("data/trajectories/train.parquet"), ("train.parquet",)),
    Case("traj-not-parquet", "trajectory contract", "`train.parquet` holds text, not parquet", ("fit-behaviour",),
         _write("data/trajectories/train.parquet", "not a parquet file\n"), ("train.parquet",)),
    # params
    Case("params-unknown-key", "params", "`synth.stayz: 10` (a typo)", ("generate",), _params(**{"synth.stayz": 10}),
         ("synth.stayz",)),
    Case("params-wrong-type", "params", "`synth.stays: many`", ("generate",), _params(**{"synth.stays": "many"}),
         ("synth.stays",)),
    Case("params-duplicate-key", "params", "`synth:` twice in params.yaml", ("generate",),
         _params_text(lambda t: t + "\nsynth:\n  stays: 3\n"), ("duplicate key", "synth")),
    Case("params-invalid-yaml", "params", "an unclosed `[` in params.yaml", ("generate",),
         _params_text(lambda t: t + "\nbroken: [1, 2\n"), ("invalid YAML",)),
    Case("params-split-sum", "params", "`cohort.split: [0.6, 0.2, 0.3]` (sums to 1.1)", ("extract",),
         _params(**{"cohort.split": [0.6, 0.2, 0.3]}), ("split",)),
    Case("params-gate-tolerance", "params", "`registry.gate.tolerance.costs` (unknown check kind)", ("promote",),
         _params(**{"registry.gate.tolerance": {"costs": 1.0}}), ("registry.gate", "tolerance.costs")),
    Case("params-unknown-algorithm", "params", "a run with `algorithm: dqn`", ("train-policies",),
         _params(**{"policies.runs": {"soc": {"algorithm": "bc"}, "x": {"algorithm": "dqn"}}}), ("dqn",)),
    Case("params-file-missing", "params", "`--params` naming a file that does not exist", ("--params",
         "missing.yaml", "generate"), None, ("params file not found", "missing.yaml")),
    # artefacts
    Case("policy-config-corrupt", "artefacts", "a policy's `config.json` is not JSON", ("truth", "--policy", POLICY,
         "--episodes", "2"), _write(f"{POLICY}/config.json", "{not json"),
         ("policy at", "config.json", "JSONDecodeError")),
    Case("policy-weights-missing", "artefacts", "a policy without `weights.pt`", ("truth", "--policy", POLICY,
         "--episodes", "2"), _remove(f"{POLICY}/weights.pt"), ("weights.pt",)),
    Case("policy-weights-corrupt", "artefacts", "a policy's `weights.pt` cut in half", ("truth", "--policy", POLICY,
         "--episodes", "2"), _truncate(f"{POLICY}/weights.pt"), ("policy at", "weights cannot be loaded")),
    Case("policy-unknown-kind", "artefacts", "a policy `config.json` of kind `magic`", ("truth", "--policy", POLICY,
         "--episodes", "2"), _edit_json(f"{POLICY}/config.json", lambda d: {**d, "kind": "magic"}), ("magic",)),
    Case("policy-feature-mismatch", "artefacts", "a policy's `feature_names` one short of its weights",
         ("truth", "--policy", POLICY, "--episodes", "2"),
         _edit_json(f"{POLICY}/config.json", lambda d: {**d, "feature_names": d["feature_names"][:-1]}),
         ("policy at", "the files disagree", "HurdleActor")),
    Case("behaviour-missing", "artefacts", "`evaluate` before `fit-behaviour` (no π̂_b)", ("evaluate",),
         _remove("data/models/behaviour"), ("behaviour model missing",)),
    Case("bundle-format", "artefacts", "a served bundle whose `bundle.json` says format 99", ("serve", "--model-uri",
         BUNDLE, "--port", "0"), _edit_json(f"{BUNDLE}/bundle.json", lambda d: {**d, "format": 99}),
         ("bundle format 99",)),
    Case("bundle-not-a-bundle", "artefacts", "`--model-uri` naming a folder without `bundle.json`",
         ("serve", "--model-uri", "data/raw", "--port", "0"), None, ("bundle.json",)),
    Case("bundle-guardian-kind", "artefacts", "a bundled guardian of unknown kind (`guardian.json` kind `magic`)",
         ("serve", "--model-uri", BUNDLE, "--port", "0"), _both(
             _edit_json(f"{BUNDLE}/bundle.json",
                        lambda d: {**d, "guardian_loader": "ogsrl.registry.loaders:load_guardian"}),
             _edit_json(f"{BUNDLE}/guardian/guardian.json", lambda d: {**d, "kind": "magic"})),
         ("guardian.json", "unknown guardian kind 'magic'")),
    Case("bundle-loader-missing", "artefacts", "a bundle naming a loader module that does not exist",
         ("serve", "--model-uri", BUNDLE, "--port", "0"),
         _edit_json(f"{BUNDLE}/bundle.json", lambda d: {**d, "policy_loader": "nope.module:load"}),
         ("nope.module:load",)),
    Case("bundle-guardian-features", "artefacts", "a bundled guardian whose columns differ from `bundle.json`",
         ("serve", "--model-uri", BUNDLE, "--port", "0"),
         _edit_json(f"{BUNDLE}/bundle.json", lambda d: {**d, "guardian_features": ["gcs"]}), ("guardian",)),
    Case("alias-missing", "artefacts", "`lineage models:/ogsrl-policy@champion` on an empty registry",
         ("lineage", "models:/ogsrl-policy@champion"), None, ("ogsrl-policy",)),
    # serving requests
    Case("req-bad-json", "serving", "a body that is not JSON", ("POST", "/recommend"), None, ("JSON",),
         body=b"{states: nope", status=400),
    Case("req-no-states", "serving", "a JSON object without `states`", ("POST", "/recommend"), None, ("states",),
         body=b'{"rows": []}', status=400),
    Case("req-missing-column", "serving", "a state without `spo2`", ("POST", "/recommend"), None, ("spo2",),
         body=b'{"states": [{"gcs": 15, "fluid_cum": 1000}]}', status=422),
    Case("req-unit-mismatch", "serving", "`units: {spo2: fraction}` (the model uses %)", ("POST", "/recommend"), None,
         ("spo2",), body=b'{"states": [{"gcs": 15, "spo2": 97, "fluid_cum": 1000}], "units": {"spo2": "fraction"}}',
         status=422),
    Case("req-too-many-rows", "serving", "more states than `serve.max_rows`", ("POST", "/recommend"), None,
         ("6 states", "at most 5"),
         body=json.dumps({"states": [{"gcs": 15, "spo2": 97, "fluid_cum": 1000}] * 6}).encode(),
         status=413),
    Case("req-unknown-path", "serving", "`POST /predict` (no such endpoint)", ("POST", "/predict"), None,
         ("/predict",), body=b"{}", status=404),
)
"""Every catalogue entry, in the order docs/reliability.md lists them."""


def render(cases: tuple[Case, ...] = CASES) -> str:
    """The catalogue section of docs/reliability.md."""
    lines = [BEGIN, "", "| # | area | bad input | command | the error names |", "|---|---|---|---|---|"]
    for i, c in enumerate(cases, 1):
        cmd = f"`{c.command[0]} {c.command[1]}`" if c.area == "serving" else f"`ogsrl {' '.join(c.command)}`"
        names = ", ".join(f"`{e}`" for e in c.expect)
        lines.append(f"| {i} | {c.area} | {c.defect} | {cmd} | {names} |")
    return "\n".join([*lines, "", END])


# ---- the project the CLI cases break ------------------------------------------------------------------------------


def _tree(root: Path) -> dict[str, str]:
    """relative path → sha256 of every file under ``root``."""
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """generate → validate-raw → extract → validate-trajectories on 40 stays, a trained SOC clone, π̂_b, and a
    served bundle (fake policy and guardian) under ``bundle/``."""
    from tests.conftest import _tiny_params, _write_params

    from ogsrl import cli

    root = tmp_path_factory.mktemp("catalogue") / "project"
    params = _tiny_params(**{"policies.runs": {"soc": {"algorithm": "bc"}}, "policies.algorithms.bc.max_epochs": 2,
                             "ope.behaviour.max_epochs": 2})
    _write_params(root, params)
    (root / "data").mkdir()
    shutil.copy2(REPO / "data" / "salt-fingerprint.json", root / "data" / "salt-fingerprint.json")
    for stage in ("generate", "validate-raw", "extract", "validate-trajectories", "fit-behaviour",
                  "train-policies"):
        assert cli.main(["--root", str(root), "--no-track", stage]) == 0, stage
    sys.path.insert(0, str(REPO / "tests" / "serve"))
    import ogsrl_fakes as fakes

    from ogsrl.registry import bundle as bundle_mod

    fake = root / "fake"
    fakes.save_policy(fake / "policy", weights=[[0.0, 0.0, 0.01], [0.1, 0.0, 0.0]], bias=[100.0, 0.0])
    fakes.save_guardian(fake / "guardian", (*fakes.STATE, "fluid_ml", "nee_max"), low=[3, 85, 0, 0, 0],
                        high=[15, 100, 20000, 10000, 5])
    bundle_mod.build_bundle(root / BUNDLE, policy_dir=fake / "policy", guardian_dir=fake / "guardian", cost_rules=[],
                            policy_loader="ogsrl_fakes:load_policy", guardian_loader="ogsrl_fakes:load_guardian")
    shutil.rmtree(fake)
    return root


@pytest.fixture()
def broken(project: Path, tmp_path: Path) -> Iterator[Path]:
    root = tmp_path / "p"
    shutil.copytree(project, root)
    yield root


CLI_CASES = [c for c in CASES if c.area != "serving"]
SERVE_CASES = [c for c in CASES if c.area == "serving"]


@pytest.mark.parametrize("case", CLI_CASES, ids=[c.id for c in CLI_CASES])
def test_cli_case(case: Case, broken: Path, capsys: pytest.CaptureFixture[str],
                  monkeypatch: pytest.MonkeyPatch) -> None:
    from ogsrl import cli

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{(broken / 'mlflow.db').as_posix()}")
    monkeypatch.chdir(broken)
    from ogsrl.serve import server as srv

    monkeypatch.setattr(srv.ThreadingHTTPServer, "serve_forever",
                        lambda self, *a: pytest.fail("the broken model was served"))
    if case.apply is not None:
        case.apply(broken)
    before = _tree(broken)
    capsys.readouterr()
    rc = cli.main(["--root", str(broken), "--no-track", *case.command])
    err = capsys.readouterr().err
    after = _tree(broken)

    assert rc == cli.EXIT_BAD_INPUT, f"exit {rc}; stderr tail: {err[-2000:]}"
    assert "Traceback" not in err
    errors = [ln for ln in err.splitlines() if ": error: " in ln]
    assert len(errors) == 1 and errors[0] == err.rstrip("\n").splitlines()[-1], err[-2000:]
    line = errors[0]
    for fragment in case.expect:
        assert fragment in line, f"{fragment!r} not in {line!r}"
    allowed = lambda rel: any(rel == p or rel.startswith(p + "/") for p in case.may_change)  # noqa: E731
    changed = sorted(k for k in before.keys() | after.keys()
                     if before.get(k) != after.get(k) and not allowed(k) and k != "mlflow.db")
    assert changed == [], f"outputs changed or appeared: {changed[:10]}"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    import threading

    sys.path.insert(0, str(REPO / "tests" / "serve"))
    import ogsrl_fakes as fakes

    from ogsrl.registry import bundle as bundle_mod
    from ogsrl.serve import server as srv

    tmp = tmp_path_factory.mktemp("serve")
    root = tmp / "proj"
    fakes.make_project(root)
    bundle_mod.build_bundle(tmp / "bundle", policy_dir=root / "data/models/policies/soc/seed42",
                            guardian_dir=root / "data/models/guardian", cost_rules=[],
                            policy_loader="ogsrl_fakes:load_policy", guardian_loader="ogsrl_fakes:load_guardian")
    rec, _ = srv.load_recommender(str(tmp / "bundle"), tmp)
    s = srv.make_server(rec, srv.ServeConfig(port=0, max_rows=5), {"uri": "test"})
    t = threading.Thread(target=s.serve_forever, daemon=True)
    t.start()
    try:
        yield s.server_address[:2]
    finally:
        s.shutdown()
        s.server_close()
        t.join(timeout=5)


def _http(addr: tuple[str, int], method: str, path: str, body: bytes | None,
          headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    import http.client

    conn = http.client.HTTPConnection(*addr, timeout=10)
    try:
        conn.request(method, path, body=body, headers={"Content-Type": "application/json", **(headers or {})})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


@pytest.mark.parametrize("case", SERVE_CASES, ids=[c.id for c in SERVE_CASES])
def test_serving_case(case: Case, served: tuple[str, int]) -> None:
    status, raw = _http(served, case.command[0], case.command[1], case.body, case.headers)
    assert status == case.status, raw[:500]
    doc = json.loads(raw)
    message = doc["error"]
    assert isinstance(message, str) and "\n" not in message and "Traceback" not in message
    for fragment in case.expect:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    ok, raw = _http(served, "POST", "/recommend", b'{"states": [{"gcs": 15, "spo2": 97, "fluid_cum": 1000}]}')
    assert ok == 200 and len(json.loads(raw)["predictions"]) == 1  # still serving


def test_catalogue_size_and_ids() -> None:
    assert len(CASES) >= 30
    assert len({c.id for c in CASES}) == len(CASES)
    assert {c.area for c in CASES} == {"raw tables", "trajectory contract", "params", "artefacts", "serving"}


def test_doc_shows_the_catalogue_table() -> None:
    text = DOC.read_text(encoding="utf-8")
    assert BEGIN in text and END in text, "docs/reliability.md lacks the catalogue markers"
    section = text[text.index(BEGIN): text.index(END) + len(END)]
    assert section == render(), "docs/reliability.md is stale: run `python tests/test_reliability_catalogue.py`"


def write_doc() -> None:
    """Replace the catalogue section of docs/reliability.md with :func:`render`."""
    text = DOC.read_text(encoding="utf-8")
    start, stop = text.index(BEGIN), text.index(END) + len(END)
    DOC.write_text(text[:start] + render() + text[stop:], encoding="utf-8")


if __name__ == "__main__":
    write_doc()
