"""The shared interval type, episode padding and per-policy seeds."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ogsrl.ope.estimate import Estimate, cautious, consensus, hull, pad_by_stay, policy_seed

ROOT = str(Path(__file__).resolve().parents[2])  # this checkout's ogsrl, not an installed one


def test_estimate_round_trip_and_covers() -> None:
    e = Estimate(1.0, 0.5, 1.5, 30.0)
    assert Estimate.from_dict(e.to_dict()) == e and e.covers(0.5) and e.covers(1.5) and not e.covers(1.51)
    assert math.isnan(Estimate.from_dict({"value": 1, "ci_low": 0, "ci_high": 2}).ess)


def test_hull_spans_every_part_and_keeps_the_primary_value() -> None:
    fqe, wdr = Estimate(-98.0, -105.6, -90.4, 862.0), Estimate(-95.4, -101.0, -88.0, 861.5)
    h = hull(fqe, wdr)
    assert (h.value, h.ci_low, h.ci_high, h.ess) == (-98.0, -105.6, -88.0, 861.5)
    # covers whatever a part covers, and nothing a part does not reach
    assert h.covers(-89.0) and not fqe.covers(-89.0) and h.covers(-105.0) and not wdr.covers(-105.0)
    assert not h.covers(-87.9) and not h.covers(-105.7)
    assert math.isnan(hull(Estimate(1.0, 0.0, 2.0)).ess) and hull(Estimate(1.0, 0.0, 2.0), wdr).ess == 861.5


def test_consensus_is_the_mean_inside_the_hull() -> None:
    knn, mb, fqe = Estimate(-90.0, -95.0, -85.0), Estimate(-88.0, -92.0, -80.0, 30.0), Estimate(-94.0, -99.0, -91.0, 12.0)
    c = consensus([knn, mb, fqe])
    assert c.value == pytest.approx(-272.0 / 3) and (c.ci_low, c.ci_high, c.ess) == (-99.0, -80.0, 12.0)
    assert c.covers(-80.5) and c.covers(-98.5)  # whatever a part covers
    assert consensus([mb, knn]).value == consensus([knn, mb]).value == -89.0  # order does not matter
    with pytest.raises(ValueError, match="at least two estimates, got 1"):
        consensus([knn])
    with pytest.raises(ValueError, match="non-finite"):
        consensus([knn, Estimate(math.nan, -1.0, 1.0)])


def test_cautious_lowers_the_consensus_by_the_parts_spread() -> None:
    knn, mb, fqe = Estimate(-90.0, -95.0, -85.0), Estimate(-88.0, -92.0, -80.0, 30.0), Estimate(-95.0, -99.0, -91.0, 12.0)
    # mean -91, deviations 1, 3, -4: population sd sqrt(26 / 3)
    c = cautious([knn, mb, fqe], 2.0)
    assert c.value == pytest.approx(-91.0 - 2 * math.sqrt(26.0 / 3.0))
    assert (c.ci_low, c.ci_high, c.ess) == (-99.0, -80.0, 12.0)  # the consensus' hull and ESS
    assert cautious([knn, mb, fqe], 0.0) == consensus([knn, mb, fqe])
    # two policies with one mean: the one its estimators agree on scores higher
    agreed = [Estimate(-91.0, -95.0, -87.0)] * 3
    assert cautious(agreed, 1.0).value == -91.0 > cautious([knn, mb, fqe], 1.0).value
    for k in (-0.5, math.nan, math.inf):
        with pytest.raises(ValueError, match="k must be a finite number ≥ 0"):
            cautious(agreed, k)
    with pytest.raises(ValueError, match="at least two estimates"):
        cautious([knn], 1.0)


def test_pad_by_stay_records_source_rows() -> None:
    ep = pad_by_stay(np.array([7, 7, 3]), {"r": np.array([1.0, 2.0, 3.0])})
    assert ep.mask.tolist() == [[True, True], [True, False]]
    assert ep.rows.tolist() == [[0, 1], [2, -1]] and ep.values["r"].tolist() == [[1, 2], [3, 0]]
    with pytest.raises(ValueError, match="not contiguous"):
        pad_by_stay(np.array([1, 2, 1]), {})


def test_policy_seed_is_stable_and_keyed() -> None:
    a = np.random.default_rng(policy_seed(42, "soc/seed42")).random(3)
    assert np.array_equal(a, np.random.default_rng(policy_seed(42, "soc/seed42")).random(3))
    assert not np.array_equal(a, np.random.default_rng(policy_seed(42, "soc/seed43")).random(3))
    assert not np.array_equal(a, np.random.default_rng(policy_seed(41, "soc/seed42")).random(3))
    # stable across processes (no salted str hash): another interpreter with another hash seed draws the same
    code = ("import numpy as np; from ogsrl.ope.estimate import policy_seed; "
            "print(repr(np.random.default_rng(policy_seed(42, 'soc/seed42')).random()))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONHASHSEED": "123", "PYTHONPATH": ROOT}).stdout.strip()
    assert float(out) == a[0]
