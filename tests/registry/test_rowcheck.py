"""No patient rows in a registered model: only the certified guardian is bundled, a KDE is refused, and a scan of
every bundled array fails registration when it finds trajectory rows."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "serve"))
import ogsrl_fakes as fakes  # noqa: E402

from ogsrl.guardian.christoffel import ChristoffelConfig, ChristoffelGuardian  # noqa: E402
from ogsrl.guardian.conformal import CalibrationConfig  # noqa: E402
from ogsrl.guardian.kde import KDEConfig, KDEGuardian  # noqa: E402
from ogsrl.registry import bundle as bundle_mod, rowcheck, stage  # noqa: E402

NAMES = (*fakes.STATE, "fluid_ml", "nee_max")
RULES = [{"name": "spo2_low", "feature": "spo2", "op": "<", "threshold": 92.0, "units": "%"}]


def _rows(n: int, seed: int) -> np.ndarray:
    cols = fakes.trajectory_rows(n, seed)
    return np.column_stack([cols[c] for c in NAMES])


@pytest.fixture()
def guardian_dir(tmp_path: Path) -> Path:
    """The calibrate_guardian layout: christoffel/ and kde/ (both fitted on the same rows) + certificate.json."""
    fit, cal = _rows(600, 1), _rows(300, 2)
    out = tmp_path / "guardian"
    chris = ChristoffelGuardian(NAMES, ChristoffelConfig(degree=2), CalibrationConfig(rule="conformal", unit="row"))
    chris.fit(fit).calibrate(cal).save(out / "christoffel")
    KDEGuardian(NAMES, KDEConfig(max_eval=600)).fit(fit).calibrate(fit).save(out / "kde")
    (out / "certificate.json").write_text((out / "christoffel/certificate.json").read_text())
    pd.DataFrame({c: fit[:, j] for j, c in enumerate(NAMES)}).to_parquet(tmp_path / "train.parquet")
    return out


def _bundle(tmp_path: Path, guardian: Path, name: str = "bundle") -> Path:
    root = tmp_path / "proj"
    if not root.exists():
        fakes.make_project(root, guardian=False)
    dest = tmp_path / name
    bundle_mod.build_bundle(dest, policy_dir=root / "data/models/policies/soc/seed42", guardian_dir=guardian,
                            cost_rules=RULES, policy_loader="ogsrl_fakes:load_policy")
    return dest


def test_only_the_certified_christoffel_guardian_is_bundled_and_it_holds_no_rows(tmp_path: Path,
                                                                                  guardian_dir: Path) -> None:
    bundle = _bundle(tmp_path, guardian_dir)
    assert sorted(p.name for p in (bundle / "guardian").iterdir()) == ["arrays.npz", "certificate.json",
                                                                      "guardian.json"]
    assert json.loads((bundle / "guardian/guardian.json").read_text())["kind"] == "christoffel"
    refs = rowcheck.reference_rows(tmp_path, json.loads((bundle / "bundle.json").read_text()),
                                   rowcheck.bundled_scalers(bundle))
    assert [r.name for r in refs] == ["guardian inputs (raw)", "guardian inputs (guardian-scaled)",
                                      "policy states (raw)"]
    assert refs[0].rows.shape == (600, 5) and refs[2].rows.shape == (600, 3)
    result = rowcheck.scan(bundle, refs)
    assert result["arrays"] >= 4 and result["worst"] == []  # whitener, scaler lo/hi, policy weights: no rows
    rowcheck.check(result, 1)


def test_a_kde_or_an_under_determined_christoffel_guardian_is_refused(tmp_path: Path, guardian_dir: Path) -> None:
    (guardian_dir / "certificate.json").write_text((guardian_dir / "kde/certificate.json").read_text())
    with pytest.raises(ValueError, match="KDE guardian stores its 600 training rows"):
        _bundle(tmp_path, guardian_dir)
    # a KDE embedded elsewhere in the bundle (e.g. in a served policy's directory) is refused too
    (guardian_dir / "certificate.json").write_text((guardian_dir / "christoffel/certificate.json").read_text())
    root = tmp_path / "proj"
    policy = root / "data/models/policies/soc/seed42"
    import shutil

    shutil.copytree(guardian_dir / "kde", policy / "guardian")
    with pytest.raises(ValueError, match="policy/guardian/guardian.json: a KDE guardian stores its training rows"):
        _bundle(tmp_path, guardian_dir, "b1")
    shutil.rmtree(policy / "guardian")
    few = ChristoffelGuardian(NAMES, ChristoffelConfig(degree=2), CalibrationConfig(rule="conformal", unit="row"))
    few.fit(_rows(40, 3)).calibrate(_rows(300, 4)).save(tmp_path / "few")  # 40·5 numbers, 126 moments
    with pytest.raises(ValueError, match="summarises only 40 fit rows .* need at least 51 rows"):
        _bundle(tmp_path, tmp_path / "few", "b2")


def test_scan_finds_raw_and_scaled_rows_in_any_format(tmp_path: Path, guardian_dir: Path) -> None:
    bundle = _bundle(tmp_path, guardian_dir)
    guardian = bundle_mod.load_bundle(bundle).guardian
    refs = rowcheck.reference_rows(tmp_path, json.loads((bundle / "bundle.json").read_text()),
                                   rowcheck.bundled_scalers(bundle))
    fit = refs[0].rows
    scaled = guardian.scaler.transform(fit[10:17])  # training rows in the bundled guardian's units, as a KDE keeps
    np.savez(bundle / "guardian/leak.npz", centres=scaled)
    (bundle / "policy/rows.json").write_text(json.dumps({"x": fit[:3].tolist()}))
    import torch

    torch.save({"w": torch.tensor(fit[:2].T, dtype=torch.float32)}, bundle / "policy/extra.pt")  # transposed, f32
    result = rowcheck.scan(bundle, refs)
    found = {(w["array"], w["reference"]): w["matching_rows"] for w in result["worst"]}
    assert found == {("guardian/leak.npz:centres", "guardian inputs (guardian-scaled)"): 7,
                     ("policy/rows.json.x", "guardian inputs (raw)"): 3,
                     ("policy/extra.pt.w", "guardian inputs (raw)"): 2}
    with pytest.raises(ValueError, match=r"bundle holds patient rows: guardian/leak.npz:centres has 7 row\(s\)"):
        rowcheck.check(result, 1)
    rowcheck.check(result, 8)  # the limit is the number of rows an array may hold


def test_register_refuses_a_bundle_with_patient_rows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import mlflow

    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    root = tmp_path / "proj"
    params = fakes.make_project(root)
    train = pd.read_parquet(root / "data/trajectories/train.parquet")
    (root / "data/models/guardian/cache.json").write_text(json.dumps(
        {"rows": train[list(NAMES)].to_numpy()[:4].tolist()}))  # a guardian that kept a few of its rows
    with pytest.raises(ValueError, match=r"guardian/cache.json.rows has 4 row\(s\) equal to trajectory rows"):
        stage.register(params, root)
    client = mlflow.MlflowClient(tracking_uri=params["mlflow"]["tracking_uri"])
    assert client.search_registered_models() == []  # nothing was registered
    (root / "data/models/guardian/cache.json").unlink()
    out = stage.register(params, root)
    assert out["row_check"] == {"arrays": out["row_check"]["arrays"], "reference_rows": 80, "passed": True}
