"""The base of every bus message: a frozen msgspec Struct that msgspec validates against its own
annotations (types, bounds, enums, nested messages, missing and unknown fields), in C."""

from __future__ import annotations

import enum
import sys
from collections.abc import Callable
from typing import Annotated, Any, ClassVar, Self, TypeVar, cast

import msgspec
import msgspec.inspect as mi

from bus.errors import ValidationError

MAX_TEXT_CHARS = 16_384
"""Bound on a string inside a tuple or map (:data:`Text`) or a free-form value."""

MAX_ITEMS = 1_024
"""Bound on the number of items of a list or map inside a free-form value."""

MAX_KEY_CHARS = 256
"""Bound on a map key (:data:`Key`)."""

MAX_DEPTH = 4
"""How deeply lists and maps may nest inside a free-form value."""


class Priority(enum.IntEnum):
    """Which queue a message waits in: control and system messages never wait behind data."""

    CONTROL = 0
    DATA = 1


def bounded(limit: int) -> msgspec.Meta:
    """The bound of a string, bytes, tuple or map field: ``text: Annotated[str, bounded(4096)]``
    holds at most 4096 characters (bytes, items); one over is refused as ``too_long``."""
    return msgspec.Meta(max_length=limit)


Text = Annotated[str, bounded(MAX_TEXT_CHARS)]
"""A string item of a tuple or a map value (a string field states its own bound)."""

Key = Annotated[str, bounded(MAX_KEY_CHARS)]
"""A map key."""

Finite = Annotated[float, msgspec.Meta(ge=-sys.float_info.max, le=sys.float_info.max)]
"""A float that is neither NaN nor infinite (an int is accepted and becomes a float)."""

FreeForm = dict[Key, Any]
"""A map of free-form values (capabilities, stats): None, bools, numbers, strings and lists and
maps of them, nested at most :data:`MAX_DEPTH` deep, no bytes. msgspec does not look inside
``Any``; :meth:`Message.from_wire` checks these values after it."""


class Message(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A typed bus message: a frozen (and, as every Struct, slotted) msgspec Struct that refuses
    unknown fields, declared ``@message class X(Message, frozen=True, kw_only=True)``: built by
    keyword only (msgspec does not inherit ``kw_only``; mypy wants ``frozen`` said again).
    ``from_wire`` validates every field against its annotation."""

    TYPE: ClassVar[str]
    """The envelope ``type`` of this message."""
    PRIORITY: ClassVar[Priority] = Priority.CONTROL
    """Control unless the message is bulk data (audio)."""
    PAYLOAD: ClassVar[str | None] = None
    """Name of a ``bytes`` field that travels as the raw payload frame instead of in the body."""

    def to_wire(self) -> tuple[dict[str, Any], bytes | None]:
        """The body map in field order, of builtin values only (str, int, float, bool, bytes,
        None, tuples, lists, dicts), and the raw payload (if the message has one)."""
        if _wire(type(self)).flat:  # twice as fast (the audio messages are flat)
            body = msgspec.structs.asdict(self)
        else:  # enums to their values, nested messages to maps
            body = msgspec.to_builtins(self, builtin_types=(bytes,))
        return body, (None if self.PAYLOAD is None else body.pop(self.PAYLOAD))

    @classmethod
    def from_wire(cls, body: dict[str, Any], payload: bytes | None = None) -> Self:
        """Build and validate a message from a body map (and payload), or raise ValidationError."""
        fields = body
        if cls.PAYLOAD is not None:
            if cls.PAYLOAD in body:  # it travels in its own frame: in the body it is unknown
                raise ValidationError("bad_field", f"{cls.TYPE}: unknown fields {[cls.PAYLOAD]}")
            if payload is None:
                raise ValidationError("bad_field", f"{cls.TYPE}: missing payload frame")
            fields = {**body, cls.PAYLOAD: payload}
        try:
            msg = msgspec.convert(fields, cls, strict=True)  # strict: no bool or float for int
        except msgspec.ValidationError as exc:  # __post_init__'s ValueErrors become these too
            reason = "too_long" if "of length <=" in str(exc) else "bad_field"
            raise ValidationError(reason, f"{cls.TYPE}: {exc}") from exc
        check = _wire(cls).free_form
        if check is not None:
            check(msg, "")
        return msg


MESSAGE_TYPES: dict[str, type[Message]] = {}
"""Every message class by its ``TYPE``; filled once at import by :func:`message`."""


M = TypeVar("M", bound=type[Message])


def message(cls: M) -> M:
    """Class decorator: register ``cls`` under its TYPE."""
    if cls.TYPE in MESSAGE_TYPES:
        raise RuntimeError(f"message type {cls.TYPE!r} registered twice")
    MESSAGE_TYPES[cls.TYPE] = cls
    return cls


Check = Callable[[Any, str], None]


class _Wire:
    """What a message class needs beyond msgspec, from its annotations on first use (when they
    resolve): whether its fields are plain already, and the check of its free-form values."""

    __slots__ = ("flat", "free_form")

    def __init__(self, cls: type[Message]) -> None:
        info = cast(mi.StructType, mi.type_info(cls))  # a Struct's type info is a StructType
        self.flat: bool = all(_is_plain(f.type) for f in info.fields)
        self.free_form = _free_form_check(info)


_WIRES: dict[type[Message], _Wire] = {}
"""Memo of :class:`_Wire` per message class."""


def _wire(cls: type[Message]) -> _Wire:
    wire = _WIRES.get(cls)
    if wire is None:
        wire = _WIRES[cls] = _Wire(cls)
    return wire


_PLAIN = (mi.StrType, mi.BytesType, mi.IntType, mi.FloatType, mi.BoolType, mi.NoneType, mi.DictType)
"""Field types whose values go into a body as they are (a map's values are plain or free-form)."""


def _is_plain(t: mi.Type) -> bool:
    if isinstance(t, mi.UnionType):
        return all(_is_plain(u) for u in t.types)
    return isinstance(t, _PLAIN)


def _free_form_check(t: mi.Type) -> Check | None:
    """The check of the free-form values inside a value of type ``t``; None if it has none."""
    if isinstance(t, mi.AnyType):
        return _check_plain
    if isinstance(t, mi.UnionType):  # ``X | None``: the only unions in the schema
        inner = [c for c in map(_free_form_check, t.types) if c is not None]
        if not inner:
            return None
        (check_inner,) = inner
        return lambda v, n: None if v is None else check_inner(v, n)
    if isinstance(t, mi.DictType):
        check_value = _free_form_check(t.value_type)
        if check_value is None:
            return None

        def check_map(v: dict[str, Any], n: str) -> None:
            for item in v.values():
                check_value(item, n)

        return check_map
    if isinstance(t, mi.VarTupleType | mi.ListType):
        check_item = _free_form_check(t.item_type)
        if check_item is None:
            return None

        def check_items(v: tuple[Any, ...], n: str) -> None:
            for item in v:
                check_item(item, n)

        return check_items
    if isinstance(t, mi.StructType):
        checks = [(f.name, c) for f in t.fields if (c := _free_form_check(f.type)) is not None]
        if not checks:
            return None

        def check_fields(v: Message, n: str) -> None:
            for name, check in checks:
                check(getattr(v, name), f"{n}.{name}" if n else name)

        return check_fields
    return None


def _check_plain(v: Any, n: str, depth: int = 0) -> None:
    """A free-form value: scalars, strings, lists and maps, nested a little."""
    if depth > MAX_DEPTH:
        raise ValidationError("bad_field", f"field {n!r}: nested too deeply")
    if v is None or isinstance(v, bool | int | float):
        return
    if isinstance(v, str):
        if len(v) > MAX_TEXT_CHARS:
            raise ValidationError("too_long", f"field {n!r}: string too long")
        return
    if isinstance(v, list) and len(v) <= MAX_ITEMS:
        for item in v:
            _check_plain(item, n, depth + 1)
        return
    if isinstance(v, dict) and len(v) <= MAX_ITEMS and all(isinstance(k, str) for k in v):
        for item in v.values():
            _check_plain(item, n, depth + 1)
        return
    raise ValidationError("bad_field", f"field {n!r}: expected a plain value, got {type(v)!r}")
