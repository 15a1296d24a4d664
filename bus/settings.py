"""Typed actor settings: one frozen dataclass per actor, built from its ``actors.KIND`` map in
topology.yaml (CLI flags and environment variables are merged into that map before).

An unknown key or a value of the wrong type fails at start with a message that names the key
and what is allowed, instead of a typo passing silently and a default applying.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from bus.topology import TopologyError

T = TypeVar("T")


class SettingsError(TopologyError):
    """An actor's settings name an unknown key or hold a value of the wrong type."""


def load_settings(cls: type[T], settings: Mapping[str, Any], *, kind: str) -> T:
    """``cls`` (a dataclass whose every field has a default) built from ``settings``.

    Values are checked against the field annotations: ``bool``, ``int``, ``float`` (an int is
    accepted), ``str``, ``Path`` (from a string), ``tuple[X, ...]`` (from a list),
    ``dict[str, Any]``, ``X | None`` and ``Literal[...]``.
    """
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(settings) - set(fields))
    if unknown:
        raise SettingsError(
            f"actors.{kind}: unknown setting{'s' if len(unknown) > 1 else ''} "
            f"{', '.join(map(repr, unknown))}; allowed: {', '.join(sorted(fields)) or 'none'}"
        )
    hints = typing.get_type_hints(cls)
    values = {
        name: _coerce(hints[name], value, f"actors.{kind}.{name}")
        for name, value in settings.items()
    }
    try:
        return cls(**values)
    except (TypeError, ValueError) as exc:  # a __post_init__ range check
        raise SettingsError(f"actors.{kind}: {exc}") from exc


def _coerce(hint: Any, value: Any, where: str) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (types.UnionType, typing.Union):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        errors = []
        for option in inner:
            try:
                return _coerce(option, value, where)
            except SettingsError as exc:
                errors.append(str(exc))
        raise SettingsError(errors[0] if len(errors) == 1 else f"{where}: {value!r} fits no type")
    if origin is typing.Literal:
        if value not in args:
            raise SettingsError(f"{where}: {value!r} is not one of {', '.join(map(repr, args))}")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise SettingsError(f"{where}: expected true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise SettingsError(f"{where}: expected a whole number, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise SettingsError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise SettingsError(f"{where}: expected a string, got {value!r}")
        return value
    if hint is Path:
        if not isinstance(value, str | Path):
            raise SettingsError(f"{where}: expected a path, got {value!r}")
        return Path(value)
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise SettingsError(f"{where}: expected a list, got {value!r}")
        item = args[0] if args else Any
        return tuple(_coerce(item, v, f"{where}[{i}]") for i, v in enumerate(value))
    if origin is dict or hint is dict:
        if not isinstance(value, Mapping):
            raise SettingsError(f"{where}: expected a map, got {value!r}")
        return dict(value)
    if hint is Any:
        return value
    raise TypeError(f"{where}: unsupported setting type {hint!r}")
