"""Strict configuration: params.yaml → frozen dataclasses.

Library code never opens params.yaml itself; the CLI calls :func:`load_params` once and hands each stage the typed
config built by :func:`build`. Unknown keys, duplicate keys and values of the wrong type are errors that name the
dotted key, so a typo in params.yaml can never silently fall back to a default.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A params.yaml value is missing, unknown, duplicated or of the wrong type."""


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate mapping keys."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise ConfigError(
                f"duplicate key {key!r} at line {key_node.start_mark.line + 1} "
                f"(first defined at line {seen[key] + 1})"
            )
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load_params(path: str | Path) -> dict[str, Any]:
    """Read a params.yaml file, rejecting duplicate keys. Returns the raw nested mapping."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"params file not found: {path}")
    try:
        with path.open("r", encoding="utf-8") as fh:
            data = yaml.load(fh, Loader=_StrictLoader)  # noqa: S506 - strict SafeLoader subclass
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    return data


def section(params: Mapping[str, Any], dotted: str) -> Mapping[str, Any]:
    """Return the mapping at a dotted key, e.g. ``section(p, "world.model")``."""
    node: Any = params
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            raise ConfigError(f"params: missing section {dotted!r}")
        node = node[part]
    if not isinstance(node, Mapping):
        raise ConfigError(f"params: {dotted!r} must be a mapping, got {type(node).__name__}")
    return node


def _check_type(value: Any, tp: Any, where: str) -> Any:
    """Check (and minimally coerce: int→float, list→tuple) one value against a type annotation."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"params: {where} must be one of {list(args)}, got {value!r}")
        return value
    if origin in (typing.Union, types.UnionType):
        for arm in args:
            if arm is type(None):
                if value is None:
                    return None
                continue
            try:
                return _check_type(value, arm, where)
            except ConfigError:
                continue
        raise ConfigError(f"params: {where} has the wrong type ({value!r}); expected {tp}")
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if not isinstance(value, Mapping):
            raise ConfigError(f"params: {where} must be a mapping, got {type(value).__name__}")
        return build(tp, value, where)
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"params: {where} must be a list, got {type(value).__name__}")
        if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
            items = [_check_type(v, args[0], f"{where}[{i}]") for i, v in enumerate(value)]
        elif origin is tuple and args:
            if len(args) != len(value):
                raise ConfigError(f"params: {where} must have {len(args)} items, got {len(value)}")
            items = [_check_type(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args))]
        else:
            inner = args[0] if args else Any
            items = [_check_type(v, inner, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin in (dict, Mapping) or tp in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise ConfigError(f"params: {where} must be a mapping, got {type(value).__name__}")
        if args:
            return {
                _check_type(k, args[0], f"{where} key"): _check_type(v, args[1], f"{where}.{k}")
                for k, v in value.items()
            }
        return dict(value)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"params: {where} must be a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"params: {where} must be an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"params: {where} must be true or false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"params: {where} must be a string, got {value!r}")
        return value
    if isinstance(tp, type) and not isinstance(value, tp):
        raise ConfigError(f"params: {where} must be {tp.__name__}, got {value!r}")
    return value


def build(cls: type[T], mapping: Mapping[str, Any] | None, where: str = "") -> T:
    """Build a (frozen) dataclass from a mapping, strictly.

    Missing keys take the dataclass defaults; unknown keys and wrong types raise :class:`ConfigError` naming the
    dotted key. The dataclass's own ``__post_init__`` validation errors are re-raised as ConfigError with the key.
    """
    if not (dataclasses.is_dataclass(cls) and isinstance(cls, type)):
        raise TypeError(f"{cls!r} is not a dataclass type")
    mapping = dict(mapping or {})
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(mapping) - set(fields))
    if unknown:
        prefix = f"{where}." if where else ""
        raise ConfigError(
            f"params: unknown key(s) {', '.join(prefix + str(k) for k in unknown)}; "
            f"allowed: {', '.join(sorted(fields))}"
        )
    kwargs = {}
    for name, value in mapping.items():
        key = f"{where}.{name}" if where else name
        kwargs[name] = _check_type(value, hints[name], key)
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"params: {where or cls.__name__}: {exc}") from exc


@dataclasses.dataclass(frozen=True, slots=True)
class ComputeConfig:
    """The ``compute:`` section of params.yaml."""

    threads: int = 2
    """torch and BLAS threads of every stage, fixed so that its numbers do not depend on the machine's core count
    (0: the libraries' default, one per core)"""

    def __post_init__(self) -> None:
        if self.threads < 0:
            raise ValueError(f"threads must be >= 0, got {self.threads}")


def to_dict(cfg: Any) -> dict[str, Any]:
    """Dataclass → plain dict (tuples become lists) for logging and JSON."""

    def conv(v: Any) -> Any:
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            return {f.name: conv(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (list, tuple)):
            return [conv(x) for x in v]
        if isinstance(v, Mapping):
            return {k: conv(x) for k, x in v.items()}
        return v

    return conv(cfg)
