"""ogsrl.costs on hand-computed rows."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ogsrl import costs as C
from ogsrl.config import ConfigError, build

PARAMS_RULES = [
    {"name": "spo2_low", "feature": "spo2", "op": "<", "threshold": 92.0, "units": "%"},
    {"name": "urine_low", "feature": "urine_rate", "op": "<", "threshold": 0.5, "units": "mL/kg/h"},
    {"name": "tachy", "feature": "hr", "op": ">=", "threshold": 130, "units": "bpm"},
]


def states() -> pd.DataFrame:
    # urine_rate = urine_step / weight / 4: 160/80/4 = 0.5 (not < 0.5); 100/50/4 = 0.5; 40/80/4 = 0.125;
    # weight 10 kg is floored at 25 kg: 60/25/4 = 0.6
    return pd.DataFrame({"spo2": [91.9, 92.0, 99.0, 50.0], "urine_step": [160.0, 100.0, 40.0, 60.0],
                         "weight": [80.0, 50.0, 80.0, 10.0], "hr": [130.0, 129.9, 80.0, 150.0]},
                        index=[10, 11, 12, 13])


def test_build_from_params_and_apply() -> None:
    cfg = C.build_costs({"costs": {"rules": PARAMS_RULES}})
    assert cfg.columns == ("cost_spo2_low", "cost_urine_low", "cost_tachy")
    out = C.apply_cost_rules(states(), cfg.rules, step_h=4.0)
    assert list(out.columns) == [*cfg.columns, "cost_total"] and list(out.index) == [10, 11, 12, 13]
    np.testing.assert_array_equal(out["cost_spo2_low"], [1, 0, 0, 1])
    np.testing.assert_array_equal(out["cost_urine_low"], [0, 0, 1, 0])
    np.testing.assert_array_equal(out["cost_tachy"], [1, 0, 0, 1])
    np.testing.assert_array_equal(out["cost_total"], [2, 0, 1, 2])
    assert all(out[c].dtype == np.float32 for c in out.columns)
    # 2-hour steps double the rate: 160/80/2 = 1.0, 100/50/2 = 1.0, 40/80/2 = 0.25, 60/25/2 = 1.2
    np.testing.assert_array_equal(C.apply_cost_rules(states(), cfg.rules, 2.0)["cost_urine_low"], [0, 0, 1, 0])


def test_next_prefix_and_array_variant_agree() -> None:
    cfg = C.build_costs({"costs": {"rules": PARAMS_RULES}})
    nxt = states().add_prefix("next_")
    by_frame = C.apply_cost_rules(nxt, cfg.rules, prefix="next_")
    names = ["hr", "weight", "spo2", "urine_step"]
    x = states()[names].to_numpy()
    by_array = C.cost_matrix(x, names, cfg.rules)
    np.testing.assert_array_equal(by_array, by_frame[list(cfg.columns)].to_numpy())
    ens = C.cost_matrix(np.stack([x, x]), names, cfg.rules)  # (E, B, S) → (E, B, R)
    assert ens.shape == (2, 4, 3) and ens.dtype == np.float32


def test_default_params_section_matches_defaults() -> None:
    assert C.build_costs({}).columns == ("cost_spo2_low", "cost_urine_low")


@pytest.mark.parametrize(("rule", "message"), [
    ({"name": "s", "feature": "spo2", "op": "<", "threshold": 0.92, "units": "fraction"}, "'%'"),
    ({"name": "s", "feature": "spo3", "op": "<", "threshold": 92, "units": "%"}, "unknown cost feature"),
    ({"name": "s", "feature": "spo2", "op": "=<", "threshold": 92, "units": "%"}, "op '=<'"),
    ({"name": "Bad Name", "feature": "spo2", "op": "<", "threshold": 92, "units": "%"}, "identifier"),
    ({"name": "s", "feature": "spo2", "op": "<", "threshold": "92", "units": "%"}, "must be a number"),
    ({"name": "s", "feature": "urine_rate", "op": "<", "threshold": 0.5, "units": "mL/h"}, "mL/kg/h"),
    ({"name": "s", "feature": "spo2", "op": "<", "threshold": 92, "units": "%", "colour": 1}, "unknown key"),
])
def test_invalid_rules_are_rejected(rule: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        C.build_costs({"costs": {"rules": [rule]}})


def test_duplicate_or_empty_rules_rejected() -> None:
    with pytest.raises(ConfigError, match="duplicate cost rule"):
        C.build_costs({"costs": {"rules": [PARAMS_RULES[0], PARAMS_RULES[0]]}})
    with pytest.raises(ConfigError, match="at least one"):
        build(C.CostsConfig, {"rules": []}, "costs")


def test_missing_or_nan_inputs_raise() -> None:
    cfg = C.build_costs({})
    with pytest.raises(ValueError, match="'weight'"):
        C.apply_cost_rules(states().drop(columns="weight"), cfg.rules)
    bad = states()
    bad.loc[12, "spo2"] = np.nan
    with pytest.raises(ValueError, match=r"'spo2' has NaN values \(rows \[2\]\)"):
        C.apply_cost_rules(bad, cfg.rules)
    with pytest.raises(ValueError, match="absent"):
        C.cost_matrix(np.zeros((2, 1)), ["spo2"], cfg.rules)
    with pytest.raises(ValueError, match="last axis"):
        C.cost_matrix(np.zeros((2, 3)), ["spo2"], cfg.rules)
