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


def test_discrete_id_column_is_one_hot_and_invalid_ids_are_flagged() -> None:
    rng = np.random.default_rng(1)
    x = np.column_stack([rng.normal(size=300), rng.integers(0, 3, size=300).astype(float)])
    s = Scaler.fit(x, ("s", "a"), ScalingConfig(quantile=0.0), discrete={"a": 3})
    z = s.transform(x)
    assert z.shape == (300, 4) and s.out_dim == 4 and s.out_names == ("s", "a=0", "a=1", "a=2")
    np.testing.assert_array_equal(z[:, 1:], np.where(x[:, 1:2] == np.arange(3), 1.0, -1.0))
    np.testing.assert_allclose(z[:, 0], 2 * (x[:, 0] - x[:, 0].min()) / np.ptp(x[:, 0]) - 1)
    np.testing.assert_allclose(s.inverse_transform(z), x, rtol=1e-12)
    np.testing.assert_allclose(s.transform_torch(torch.tensor(x)).numpy(), z, rtol=1e-12)
    q = np.array([[0.0, 2.0], [0.0, 3.0], [0.0, -1.0], [0.0, 0.5]])
    assert s.valid(q).tolist() == [True, False, False, False]
    assert s.valid_torch(torch.tensor(q)).tolist() == [True, False, False, False]
    assert np.all(s.transform(q)[1:, 1:] == -1.0)  # no indicator on for an invalid id
    box = s.sample_box(np.random.default_rng(0), 3000)
    assert box.shape == (3000, 4) and np.all((box[:, 1:] == 1.0).sum(axis=1) == 1)
    np.testing.assert_allclose((box[:, 1:] == 1.0).mean(axis=0), 1 / 3, atol=0.03)  # a uniform category
    back = Scaler.from_dict(s.to_dict())
    assert back.discrete == {"a": 3} and back.to_dict() == s.to_dict()
    old = {k: v for k, v in s.to_dict().items() if k not in ("levels", "source")}  # a file before one-hot
    assert Scaler.from_dict(old).out_dim == 2 and Scaler.from_dict(old).source == ("data", "data")
    bad = x.copy()
    bad[[5, 9], 1] = 3.0
    with pytest.raises(DataError, match=r"column 'a'.*offending rows: 5, 9"):
        Scaler.fit(bad, ("s", "a"), ScalingConfig(), discrete={"a": 3})


def test_schema_bounds_where_finite_else_data() -> None:
    x = _data()
    declared = {"flag": (0.0, 1.0), "const": (0.0, 10.0), "vol": (0.0, float("inf")), "lab": (0.0, 40.0)}
    s = Scaler.fit(x, NAMES, ScalingConfig(quantile=0.01, bounds="schema"), declared=declared)
    d = Scaler.fit(x, NAMES, ScalingConfig(quantile=0.01))
    assert s.source == ("data", "data", "data", "schema") and d.source == ("data",) * 4
    assert (s.lo[3], s.hi[3]) == (0.0, 40.0)
    np.testing.assert_array_equal(s.lo[:3], d.lo[:3])  # flag, constant and the unbounded column keep the data's
    np.testing.assert_allclose(s.transform(np.array([[0, 7, 1, 20.0]]))[0, 3], 0.0)
    with pytest.raises(ValueError, match="declared"):
        Scaler.fit(x, NAMES, ScalingConfig(bounds="schema"))
    with pytest.raises(ValueError, match="bounds"):
        ScalingConfig(bounds="wide")  # type: ignore[arg-type]
