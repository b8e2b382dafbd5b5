"""Frozen dataclass configs <-> plain dicts and TOML, with one-line errors naming the bad key."""

from __future__ import annotations

import dataclasses
import sys
import types
import typing
from pathlib import Path
from typing import Any, TypeVar, get_args, get_origin, get_type_hints

import tomli_w

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

T = TypeVar("T")


class ConfigError(ValueError):
    """A config key, type or value that is not allowed; the message is one line for the user."""


def to_dict(config: Any) -> dict[str, Any]:
    """A dataclass as nested dicts of TOML-friendly values (tuples become lists, None is dropped)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value):
            value = to_dict(value)
        elif isinstance(value, tuple):
            value = list(value)
        if value is not None:  # TOML has no null; absent means None
            out[f.name] = value
    return out


def from_dict(cls: type[T], data: dict[str, Any], prefix: str = "") -> T:
    """Build ``cls`` from ``data``, refusing unknown keys and wrong types with a ConfigError."""
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if key not in fields:
            raise ConfigError(
                f"unknown config key {name!r}; allowed under {prefix or 'top level'}: "
                f"{', '.join(sorted(fields))}"
            )
        kwargs[key] = coerce(hints[key], value, name)
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (ValueError, TypeError) as err:
        raise ConfigError(f"{prefix.rstrip('.') or cls.__name__}: {err}") from None


def coerce(hint: Any, value: Any, name: str) -> Any:
    """Check ``value`` against the type hint ``hint``; convert lists to tuples and ints to floats."""
    origin, args = get_origin(hint), get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in (a for a in args if a is not type(None)):
            try:
                return coerce(option, value, name)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0])
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{name}={value!r} is not allowed; choose one of {', '.join(map(repr, args))}")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{name}={value!r} must be a list, e.g. [1, 2]")
        item_type = args[0]
        return tuple(coerce(item_type, v, f"{name}[{i}]") for i, v in enumerate(value))
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise ConfigError(f"{name} must be a table of keys, got {value!r}")
        return from_dict(hint, value, prefix=f"{name}.")
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint in (int, float, str, bool):
        if type(value) is not hint:
            raise ConfigError(f"{name}={value!r} has the wrong type; expected {hint.__name__}")
        return value
    raise ConfigError(f"{name}: unsupported config type {hint!r}")  # a programming error, not user's


def parse_override(assignment: str) -> tuple[list[str], Any]:
    """``"optim.lr=1e-3"`` -> (["optim", "lr"], 0.001); values are TOML, bare words are strings."""
    key, sep, raw = assignment.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {assignment!r} is not KEY=VALUE (e.g. optim.lr=1e-3)")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return key.strip().split("."), value


def apply_override(data: dict[str, Any], path: list[str], value: Any) -> None:
    """Set ``data[path[0]][path[1]]… = value`` in nested dicts, creating tables as needed."""
    node = data
    for part in path[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"config key {'.'.join(path)!r}: {part!r} is a value, not a table")
        node = child
    node[path[-1]] = value


def merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Recursive dict merge: tables merge, values replace."""
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def read_toml(path: str | Path) -> dict[str, Any]:
    """A TOML file as nested dicts; a one-line ConfigError naming the file if it is absent or unreadable."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file {str(path)!r} does not exist") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"config file {str(path)!r} is not valid TOML: {err}") from None
    except OSError as err:
        raise ConfigError(f"config file {str(path)!r} could not be read: {err.strerror or err}") from None


def dumps_toml(data: dict[str, Any]) -> str:
    return tomli_w.dumps(data)
