"""Robust input scaling: quantile map, binary and constant columns, log compression, torch agreement."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from ogsrl.errors import DataError
from ogsrl.guardian.scaling import Scaler, ScalingConfig, check_matrix

NAMES = ("flag", "const", "vol", "lab")


def _data(n: int = 2000) -> np.ndarray:
    rng = np.random.default_rng(0)
    return np.column_stack([
        (rng.random(n) < 0.002).astype(float),  # rare binary flag: quantile range is 0
        np.full(n, 7.0),
        rng.lognormal(5, 1.5, n),
        rng.normal(10, 2, n),
    ])


def test_quantiles_map_to_unit_interval_and_special_columns(caplog) -> None:
    x = _data()
    with caplog.at_level(logging.WARNING, logger="ogsrl.guardian.scaling"):
        s = Scaler.fit(x, NAMES, ScalingConfig(quantile=0.01, log1p_columns=("vol",)))
    assert "const" in caplog.text
    z = s.transform(x)
    assert set(np.unique(z[:, 0])) == {-1.0, 1.0} and s.two_valued.tolist() == [True, False, False, False]
    assert np.all(z[:, 1] == 0.0) and s.constant.tolist() == [False, True, False, False]
    for j in (2, 3):
        np.testing.assert_allclose(np.quantile(z[:, j], [0.01, 0.99]), [-1.0, 1.0], atol=1e-9)
    np.testing.assert_allclose(s.lo[2], np.quantile(np.log1p(x[:, 2]), 0.01))
    np.testing.assert_allclose(s.inverse_transform(z), x, rtol=1e-9)
    np.testing.assert_allclose(s.transform_torch(torch.tensor(x)).numpy(), z, rtol=1e-12)
    assert Scaler.from_dict(s.to_dict()).to_dict() == s.to_dict()


def test_min_max_scaling_and_box_sampling() -> None:
    x = _data()
    s = Scaler.fit(x, NAMES, ScalingConfig(quantile=0.0, log1p_columns=()))
    z = s.transform(x)
    np.testing.assert_allclose(z[:, 2:].min(axis=0), -1.0)
    np.testing.assert_allclose(z[:, 2:].max(axis=0), 1.0)
    box = s.sample_box(np.random.default_rng(0), 1000)
    assert set(np.unique(box[:, 0])) == {-1.0, 1.0} and np.all(box[:, 1] == 0.0)
    assert box[:, 2:].min() >= -1 and box[:, 2:].max() <= 1


def test_check_matrix_names_column_and_rows() -> None:
    x = _data(20)
    x[[4, 6], 2] = np.inf
    with pytest.raises(DataError, match=r"column 'vol'.*offending rows: 4, 6"):
        check_matrix(x, NAMES, "t")
    with pytest.raises(DataError, match="shape"):
        check_matrix(np.zeros((3, 2)), NAMES, "t")
    assert check_matrix(np.arange(4.0), NAMES, "t").shape == (1, 4)
