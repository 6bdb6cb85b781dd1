from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import pytest

from ogsrl.config import ConfigError, build, load_params, section, to_dict


@dataclass(frozen=True, slots=True)
class _Inner:
    alpha: float = 0.5
    """a level"""

    def __post_init__(self) -> None:
        if not 0.0 < self.alpha < 1.0:
            raise ValueError(f"alpha must be in (0, 1), got {self.alpha}")


@dataclass(frozen=True, slots=True)
class _Outer:
    n: int = 3
    clip: tuple[float, float] = (2.5, 12.5)
    names: tuple[str, ...] = ("a",)
    mode: Literal["x", "y"] = "x"
    inner: _Inner = _Inner()
    maybe: float | None = None


def test_build_coerces_and_keeps_defaults() -> None:
    cfg = build(_Outer, {"clip": [1, 2], "names": ["p", "q"], "inner": {"alpha": 0.9}}, "sec")
    assert cfg.clip == (1.0, 2.0) and isinstance(cfg.clip[0], float)
    assert cfg.names == ("p", "q")
    assert cfg.inner.alpha == 0.9
    assert cfg.n == 3 and cfg.mode == "x" and cfg.maybe is None
    assert to_dict(cfg)["clip"] == [1.0, 2.0]


@pytest.mark.parametrize(
    ("mapping", "needle"),
    [
        ({"nn": 1}, "sec.nn"),
        ({"n": "3"}, "sec.n must be an integer"),
        ({"n": True}, "sec.n must be an integer"),
        ({"clip": [1.0]}, "sec.clip must have 2 items"),
        ({"clip": ["a", 2.0]}, "sec.clip[0] must be a number"),
        ({"mode": "z"}, "sec.mode must be one of"),
        ({"inner": {"alpha": 2.0}}, "alpha must be in (0, 1)"),
        ({"inner": {"beta": 1}}, "sec.inner.beta"),
    ],
)
def test_build_rejects_bad_values_naming_the_key(mapping: dict, needle: str) -> None:
    with pytest.raises(ConfigError, match=None) as err:
        build(_Outer, mapping, "sec")
    assert needle in str(err.value)


def test_load_params_rejects_duplicate_keys(tmp_path) -> None:
    p = tmp_path / "params.yaml"
    p.write_text("a:\n  b: 1\n  b: 2\n")
    with pytest.raises(ConfigError, match="duplicate key 'b' at line 3"):
        load_params(p)


def test_load_params_and_section(tmp_path) -> None:
    p = tmp_path / "params.yaml"
    p.write_text("a:\n  b:\n    c: 1\n")
    params = load_params(p)
    assert section(params, "a.b") == {"c": 1}
    with pytest.raises(ConfigError, match="missing section 'a.x'"):
        section(params, "a.x")
    with pytest.raises(ConfigError, match="not found"):
        load_params(tmp_path / "nope.yaml")


def test_paper_profile_differs_from_params_only_in_the_policy_runs() -> None:
    from pathlib import Path

    from ogsrl.agents.stage import policies_config

    root = Path(__file__).resolve().parents[1]
    default, paper = load_params(root / "params.yaml"), load_params(root / "params-paper.yaml")
    changed = ("seeds", "runs", "algorithms")
    assert {k: v for k, v in paper["policies"].items() if k not in changed} == \
        {k: v for k, v in default["policies"].items() if k not in changed}
    assert {k: v for k, v in paper.items() if k != "policies"} == {k: v for k, v in default.items() if k != "policies"}
    assert {k: v for k, v in paper["policies"]["algorithms"].items() if k in default["policies"]["algorithms"]} == \
        default["policies"]["algorithms"]
    cfg = policies_config(paper)
    assert set(cfg.runs) == {"soc", "mb_trpo", "mb_cpo", "gmb_trpo", "gmb_cpo", "gmb_ppo_lag", "cql", "ccql", "gcql",
                             "gccql"}
    assert cfg.seeds == (40, 42, 44, 54, 64) and paper["registry"]["run"] in cfg.runs
    assert set(policies_config(default).runs) == {"soc", "gmb_cpo"} and default["registry"]["run"] == "gmb_cpo"
