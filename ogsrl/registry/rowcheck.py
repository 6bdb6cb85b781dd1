"""Registration privacy check: no bundled array may hold patient rows.

A served model travels to whoever can read the registry, so it must carry aggregates only (weights, moment matrices,
scalers), never row-level data. :func:`scan` reads every array in a bundle directory without pickle (``.npz`` /
``.npy``, torch ``.pt`` state dicts with ``weights_only``, numeric lists in ``.json``, tabular ``.parquet`` /
``.csv``) and counts its rows that equal a trajectory row, comparing

* each 2-D array with ``c`` columns (or its transpose) and each 1-D array of length ``c`` as one row,
* against the trajectory rows of the bundle's guardian inputs (state features + actions) and policy state features,
  raw and in the scaled units of every guardian saved in the bundle (a KDE stores scaled rows),
* with a per-column tolerance of ``tol · (1 + max |column|)`` (float32 storage of float64 values).

Registration fails when any array reaches ``limit`` matching rows (:func:`check`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

SPLITS = ("train", "val", "test")


@dataclass(frozen=True, slots=True)
class Reference:
    """Trajectory rows over some columns, in one representation (raw or a guardian's scaled units)."""

    name: str
    """what the rows are, e.g. ``guardian inputs (scaled)``"""
    rows: npt.NDArray[np.float64]
    """(N, c) reference rows"""


def _numeric_lists(obj: Any, where: str) -> Iterator[tuple[str, npt.NDArray[np.float64]]]:
    if isinstance(obj, Mapping):
        for k, v in obj.items():
            yield from _numeric_lists(v, f"{where}.{k}")
    elif isinstance(obj, list) and obj:
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in obj):
            yield where, np.asarray(obj, dtype=np.float64)
        elif all(isinstance(v, list) for v in obj) and len({len(v) for v in obj}) == 1 and all(
                isinstance(x, (int, float)) and not isinstance(x, bool) for v in obj for x in v):
            yield where, np.asarray(obj, dtype=np.float64)
        else:
            for i, v in enumerate(obj):
                yield from _numeric_lists(v, f"{where}[{i}]")


def _tensors(obj: Any, where: str) -> Iterator[tuple[str, npt.NDArray[np.float64]]]:
    import torch

    if isinstance(obj, torch.Tensor):
        if obj.is_floating_point() or obj.dtype in (torch.int32, torch.int64):
            yield where, obj.detach().cpu().to(torch.float64).numpy()
    elif isinstance(obj, Mapping):
        for k, v in obj.items():
            yield from _tensors(v, f"{where}.{k}")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from _tensors(v, f"{where}[{i}]")


def bundled_arrays(bundle: Path) -> Iterator[tuple[str, npt.NDArray[np.float64]]]:
    """``(file[:key], array)`` for every numeric array stored under ``bundle`` (nothing unpickled)."""
    for f in sorted(p for p in Path(bundle).rglob("*") if p.is_file()):
        rel = f.relative_to(bundle).as_posix()
        name = f.name.lower()
        if name.endswith(".npz"):
            with np.load(f, allow_pickle=False) as z:
                for k in z.files:
                    yield f"{rel}:{k}", np.asarray(z[k], dtype=np.float64)
        elif name.endswith(".npy"):
            yield rel, np.asarray(np.load(f, allow_pickle=False), dtype=np.float64)
        elif name.endswith((".pt", ".pth")):
            import torch

            yield from _tensors(torch.load(f, map_location="cpu", weights_only=True), rel)
        elif name.endswith(".json"):
            yield from _numeric_lists(json.loads(f.read_text(encoding="utf-8")), rel)
        elif name.endswith((".parquet", ".csv", ".csv.gz")):
            import pandas as pd

            frame = pd.read_parquet(f) if name.endswith(".parquet") else pd.read_csv(f)
            numeric = frame.select_dtypes("number")
            if numeric.shape[1]:
                yield rel, numeric.to_numpy(dtype=np.float64)


def bundled_scalers(bundle: Path) -> list[Any]:
    """The scaler of every guardian saved anywhere in the bundle (a served policy embeds its own copy)."""
    from ogsrl.guardian.scaling import Scaler

    out = []
    for f in sorted(Path(bundle).rglob("guardian.json")):
        meta = json.loads(f.read_text(encoding="utf-8"))
        if isinstance(meta, Mapping) and isinstance(meta.get("scaler"), Mapping):
            out.append(Scaler.from_dict(dict(meta["scaler"])))
    return out


def reference_rows(trajectories: Path, manifest: Mapping[str, Any], scalers: Sequence[Any] = ()) -> list[Reference]:
    """Trajectory rows (all splits present) over the bundle's guardian inputs and policy state columns, raw and in
    the units of each guardian ``scaler`` over the same columns."""
    import pyarrow.parquet as pq

    paths = [Path(trajectories) / f"{s}.parquet" for s in SPLITS]
    paths = [p for p in paths if p.is_file()]
    if not paths:
        return []
    sets = {"guardian inputs": tuple(manifest.get("guardian_features") or ()),
            "policy states": tuple(manifest.get("state_features") or ())}
    refs: list[Reference] = []
    for label, cols in sets.items():
        if not cols:
            continue
        have = set(pq.read_schema(paths[0]).names)
        if not set(cols) <= have:
            continue
        x = np.concatenate([np.column_stack([pq.read_table(p, columns=list(cols)).column(c).to_numpy(
            zero_copy_only=False).astype(np.float64) for c in cols]) for p in paths])
        refs.append(Reference(f"{label} (raw)", x))
        for i, scaler in enumerate(scalers):
            if tuple(getattr(scaler, "feature_names", ())) == cols:
                suffix = "" if i == 0 else f" {i + 1}"
                refs.append(Reference(f"{label} (guardian-scaled{suffix})",
                                      np.asarray(scaler.transform(x), dtype=np.float64)))
    return refs


def count_matches(array: npt.NDArray[np.float64], ref: Reference, tol: float = 1e-6) -> int:
    """Rows of ``array`` (or of its transpose) within the tolerance of some reference row."""
    from scipy.spatial import cKDTree

    c = ref.rows.shape[1]
    a = np.asarray(array, dtype=np.float64)
    if a.ndim == 1:
        a = a[None, :]
    if a.ndim != 2:
        return 0
    if a.shape[1] != c:
        if a.shape[0] != c:
            return 0
        a = a.T
    a = a[np.isfinite(a).all(axis=1)]
    if a.size == 0:
        return 0
    scale = 1.0 + np.abs(ref.rows).max(axis=0)
    tree = cKDTree(ref.rows / scale)
    dist, _ = tree.query(a / scale, k=1, p=np.inf, distance_upper_bound=tol)
    return int(np.count_nonzero(np.isfinite(dist)))


def scan(bundle: Path, refs: Sequence[Reference], tol: float = 1e-6) -> dict[str, Any]:
    """Per bundled array the most rows matching any reference: ``{"arrays", "reference_rows", "worst": [...]}``."""
    worst: list[dict[str, Any]] = []
    n_arrays = 0
    for where, arr in bundled_arrays(bundle):
        n_arrays += 1
        for ref in refs:
            n = count_matches(arr, ref, tol)
            if n:
                worst.append({"array": where, "reference": ref.name, "matching_rows": n})
    worst.sort(key=lambda d: -d["matching_rows"])
    return {"arrays": n_arrays, "reference_rows": int(sum(r.rows.shape[0] for r in refs)), "worst": worst}


def check(result: Mapping[str, Any], limit: int) -> None:
    """ValueError (one line) when an array holds ``limit`` or more rows equal to trajectory rows."""
    bad = [w for w in result["worst"] if w["matching_rows"] >= limit]
    if bad:
        w = bad[0]
        raise ValueError(f"bundle holds patient rows: {w['array']} has {w['matching_rows']} row(s) equal to "
                         f"trajectory rows ({w['reference']}; limit {limit}); nothing was registered")
