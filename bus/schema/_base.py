"""The base of every bus message: frozen dataclasses checked against their own annotations."""

from __future__ import annotations

import dataclasses
import enum
import math
import types
import typing
from collections.abc import Callable
from typing import Any, ClassVar, Self, TypeVar, cast, dataclass_transform

from bus.errors import ValidationError

MAX_TEXT_CHARS = 16_384
"""Default bound on any string field; a field can set its own with ``bounded(n)``."""

MAX_ITEMS = 1_024
"""Default bound on the number of items in a list or map field."""


class Priority(enum.IntEnum):
    """Which queue a message waits in: control and system messages never wait behind data."""

    CONTROL = 0
    DATA = 1


def bounded(limit: int, *, default: Any = dataclasses.MISSING) -> Any:
    """A dataclass field whose string, bytes or list value holds at most ``limit`` items."""
    if default is dataclasses.MISSING:
        return dataclasses.field(metadata={"max": limit})
    if isinstance(default, list | dict):
        return dataclasses.field(
            default_factory=lambda: type(default)(default), metadata={"max": limit}
        )
    return dataclasses.field(default=default, metadata={"max": limit})


class Message:
    """A typed bus message. Subclasses are frozen, slotted dataclasses registered with
    :func:`message`; ``from_wire`` validates every field against its annotation."""

    __slots__ = ()

    TYPE: ClassVar[str]
    """The envelope ``type`` of this message."""
    PRIORITY: ClassVar[Priority] = Priority.CONTROL
    """Control unless the message is bulk data (audio)."""
    PAYLOAD: ClassVar[str | None] = None
    """Name of a ``bytes`` field that travels as the raw payload frame instead of in the body."""

    def to_wire(self) -> tuple[dict[str, Any], bytes | None]:
        """The body map and the raw payload (if this message has one)."""
        body: dict[str, Any] = {}
        payload: bytes | None = None
        for name, _, _ in _spec(type(self)):
            value = getattr(self, name)
            if name == self.PAYLOAD:
                payload = value
            elif value is None or type(value) in _PLAIN:
                body[name] = value
            else:
                body[name] = _to_plain(value)
        return body, payload

    @classmethod
    def from_wire(cls, body: dict[str, Any], payload: bytes | None = None) -> Self:
        """Build and validate a message from a body map (and payload), or raise ValidationError."""
        values: dict[str, Any] = {}
        for name, check, required in _spec(cast(type[Message], cls)):
            if name == cls.PAYLOAD:
                if payload is None:
                    raise ValidationError("bad_field", f"{cls.TYPE}: missing payload frame")
                values[name] = check(payload, name)
            elif name in body:
                values[name] = check(body[name], name)
            elif required:
                raise ValidationError("bad_field", f"{cls.TYPE}: missing field {name!r}")
        # The payload field travels in its own frame: in the body it is as unknown as any.
        extra = set(body) - {n for n, _, _ in _spec(cast(type[Message], cls)) if n != cls.PAYLOAD}
        if extra:
            # Sorted by repr: msgpack map keys may be bytes as well as str, which do not compare.
            unknown = sorted(extra, key=repr)
            raise ValidationError("bad_field", f"{cls.TYPE}: unknown fields {unknown}")
        try:
            return cls(**values)
        except (TypeError, ValueError) as exc:  # __post_init__ checks raise ValueError
            raise ValidationError("bad_field", f"{cls.TYPE}: {exc}") from exc


_PLAIN = frozenset({str, int, float, bool, bytes})

MESSAGE_TYPES: dict[str, type[Message]] = {}
"""Every message class by its ``TYPE``; filled once at import by :func:`message`."""


M = TypeVar("M", bound=type[Message])


@dataclass_transform(frozen_default=True, field_specifiers=(dataclasses.field, bounded))
def message(cls: M) -> M:
    """Class decorator: make ``cls`` a frozen slotted dataclass and register its TYPE."""
    data_cls = dataclasses.dataclass(frozen=True, slots=True)(cls)
    if data_cls.TYPE in MESSAGE_TYPES:
        raise RuntimeError(f"message type {data_cls.TYPE!r} registered twice")
    MESSAGE_TYPES[data_cls.TYPE] = data_cls
    return cast(M, data_cls)


def _to_plain(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Message):
        return value.to_wire()[0]
    if isinstance(value, tuple | list):
        return [_to_plain(v) for v in value]
    return value


Check = Callable[[Any, str], Any]


_SPECS: dict[type[Message], tuple[tuple[str, Check, bool], ...]] = {}
"""Memo of each message class's field checks (built on first use, when hints resolve)."""


def _spec(cls: type[Message]) -> tuple[tuple[str, Check, bool], ...]:
    cached = _SPECS.get(cls)
    if cached is not None:
        return cached
    hints = typing.get_type_hints(cls)
    spec = []
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]  # registered classes are dataclasses
        limit = f.metadata.get("max")
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        spec.append((f.name, _checker(hints[f.name], limit), required))
    _SPECS[cls] = tuple(spec)
    return _SPECS[cls]


def _fail(name: str, expected: str, value: Any) -> ValidationError:
    return ValidationError(
        "bad_field", f"field {name!r}: expected {expected}, got {type(value).__name__}"
    )


def _checker(hint: Any, limit: int | None) -> Check:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (types.UnionType, typing.Union):
        inner = [a for a in args if a is not type(None)]
        if len(inner) != 1:
            raise TypeError(f"unsupported union {hint}")
        check_inner = _checker(inner[0], limit)
        return lambda v, n: None if v is None else check_inner(v, n)
    if hint is str:
        max_chars = limit or MAX_TEXT_CHARS

        def check_str(v: Any, n: str) -> str:
            if not isinstance(v, str):
                raise _fail(n, "string", v)
            if len(v) > max_chars:
                raise ValidationError("too_long", f"field {n!r}: {len(v)} chars > {max_chars}")
            return v

        return check_str
    if hint is bytes:
        max_bytes = limit or (1 << 20)

        def check_bytes(v: Any, n: str) -> bytes:
            if not isinstance(v, bytes | bytearray | memoryview):
                raise _fail(n, "bytes", v)
            if len(v) > max_bytes:
                raise ValidationError("too_long", f"field {n!r}: {len(v)} bytes > {max_bytes}")
            return bytes(v)

        return check_bytes
    if hint is bool:

        def check_bool(v: Any, n: str) -> bool:
            if not isinstance(v, bool):
                raise _fail(n, "bool", v)
            return v

        return check_bool
    if hint is int:

        def check_int(v: Any, n: str) -> int:
            if type(v) is not int:
                raise _fail(n, "int", v)
            return v

        return check_int
    if hint is float:

        def check_float(v: Any, n: str) -> float:
            if type(v) not in (int, float) or not math.isfinite(v):
                raise _fail(n, "finite number", v)
            return float(v)

        return check_float
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        enum_cls = hint

        def check_enum(v: Any, n: str) -> Any:
            try:
                return enum_cls(v)
            except ValueError:
                allowed = [e.value for e in enum_cls]
                raise ValidationError("bad_field", f"field {n!r}: {v!r} not in {allowed}") from None

        return check_enum
    if isinstance(hint, type) and issubclass(hint, Message):
        msg_cls = hint

        def check_nested(v: Any, n: str) -> Message:
            if not isinstance(v, dict):
                raise _fail(n, "map", v)
            return msg_cls.from_wire(v)

        return check_nested
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        check_item = _checker(args[0], None)
        max_items = limit or MAX_ITEMS

        def check_tuple(v: Any, n: str) -> tuple[Any, ...]:
            if not isinstance(v, list | tuple):
                raise _fail(n, "array", v)
            if len(v) > max_items:
                raise ValidationError("too_long", f"field {n!r}: {len(v)} items > {max_items}")
            return tuple(check_item(item, n) for item in v)

        return check_tuple
    if origin is dict and args and args[0] is str:
        check_value = _checker(args[1], None)
        max_items = limit or MAX_ITEMS

        def check_map(v: Any, n: str) -> dict[str, Any]:
            if not isinstance(v, dict):
                raise _fail(n, "map", v)
            if len(v) > max_items:
                raise ValidationError("too_long", f"field {n!r}: {len(v)} items > {max_items}")
            out = {}
            for key, item in v.items():
                if not isinstance(key, str) or len(key) > 256:
                    raise _fail(n, "string keys", key)
                out[key] = check_value(item, n)
            return out

        return check_map
    if hint is Any or hint is object:
        return _check_plain
    raise TypeError(f"unsupported field type {hint!r}")


def _check_plain(v: Any, n: str, depth: int = 0) -> Any:
    """Free-form values (capability maps): scalars, strings, lists and maps, nested a little."""
    if depth > 4:
        raise ValidationError("bad_field", f"field {n!r}: nested too deeply")
    if v is None or isinstance(v, bool | int | float):
        return v
    if isinstance(v, str):
        if len(v) > MAX_TEXT_CHARS:
            raise ValidationError("too_long", f"field {n!r}: string too long")
        return v
    if isinstance(v, list) and len(v) <= MAX_ITEMS:
        return [_check_plain(i, n, depth + 1) for i in v]
    if isinstance(v, dict) and len(v) <= MAX_ITEMS and all(isinstance(k, str) for k in v):
        return {k: _check_plain(i, n, depth + 1) for k, i in v.items()}
    raise _fail(n, "plain value", v)
