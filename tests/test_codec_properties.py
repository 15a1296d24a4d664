"""Properties of the bus codec (bus/envelope.py + bus/schema), checked with hypothesis.

Whatever frames arrive, decoding them ends in a valid message or a typed error (DecodeError,
ValidationError), never another exception: a peer cannot crash an actor's receive loop. And every
registered message type, built from its own field types, survives encode → decode unchanged.
"""

from __future__ import annotations

import enum
import os
import types
import typing
from typing import Any

import msgpack
import msgspec
import msgspec.inspect as mi
import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from bus.audio_format import BOT
from bus.envelope import PROTOCOL_VERSION, Envelope, decode, encode
from bus.errors import DecodeError, ValidationError
from bus.schema import MESSAGE_TYPES, Message, decode_message, envelope_for
from bus.schema._base import MAX_ITEMS, MAX_TEXT_CHARS
from bus.schema.asr import Answer, RequestAudio
from bus.schema.audio import AudioFrame
from bus.schema.tts import TtsFrame

pytestmark = pytest.mark.timeout(60)

FAST = settings(
    # A few seconds in all; DUPLEX_CODEC_EXAMPLES=5000 searches harder (a minute or so).
    max_examples=int(os.environ.get("DUPLEX_CODEC_EXAMPLES", "300")),
    deadline=None,  # a shared 2-core host stalls now and then; examples are bounded instead
    suppress_health_check=[HealthCheck.too_slow],
)

INT64 = st.integers(-(2**63), 2**64 - 1)
"""Every integer msgpack can carry."""

plain_scalars = st.none() | st.booleans() | INT64 | st.floats() | st.text(max_size=20)
msgpack_values = st.recursive(
    plain_scalars | st.binary(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(max_size=8) | st.binary(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
"""Anything msgpack encodes (str and bytes map keys, as ``strict_map_key`` lets through)."""


def _nested(depth: int) -> st.SearchStrategy[Any]:
    scalars = (
        st.none()
        | st.booleans()
        | INT64
        | st.floats(allow_nan=False)  # NaN is valid, but unequal to itself
        | st.text(max_size=12)
    )
    if depth == 0:
        return scalars
    inner = _nested(depth - 1)
    return (
        scalars
        | st.lists(inner, max_size=3)
        | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    )


free_form = _nested(3)
"""Valid values of a ``dict[str, Any]`` field (capabilities, stats): nested a little."""


def decodes_or_refuses(frames: list[bytes]) -> Message | None:
    """The message in ``frames``, or None when the codec refused them with a typed error."""
    try:
        msg = decode_message(decode(frames))
    except DecodeError as exc:  # ValidationError is one
        event(f"refused: {exc.reason}")
        return None
    event("decoded")
    return msg


# ------------------------------------------------------------------ messages from their types


ABSENT: dict[Any, Any] = {type(None): None, msgspec.UnsetType: msgspec.UNSET}
"""The second member of a field's union, and its one value: ``None``, or ``UNSET`` (a field
added since the wire format was pinned, left out of the body when unset)."""


def _strategy(hint: Any, limit: int | None) -> st.SearchStrategy[Any]:
    """Values valid for a field of type ``hint`` bounded by ``limit`` (as bus/schema/_base.py
    checks them), kept small so that examples are quick."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (types.UnionType, typing.Union):  # ``X | None``, or ``X | UnsetType``
        (inner,) = [a for a in args if a not in ABSENT]
        (absent,) = [a for a in args if a in ABSENT]
        return st.just(ABSENT[absent]) | _strategy(inner, limit)
    if hint is str:
        return st.text(max_size=min(limit or MAX_TEXT_CHARS, 40))
    if hint is bytes:
        return st.binary(max_size=min(limit or 1 << 20, 64))
    if hint is bool:
        return st.booleans()
    if hint is int:
        return INT64
    if hint is float:
        return st.floats(allow_nan=False, allow_infinity=False)
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return st.sampled_from(list(hint))
    if isinstance(hint, type) and issubclass(hint, Message):
        return messages_of(hint)
    if origin is tuple:
        return st.lists(_strategy(args[0], None), max_size=min(limit or MAX_ITEMS, 3)).map(tuple)
    if origin is dict:
        return st.dictionaries(
            st.text(max_size=12),
            _strategy(args[1], None) if args[1] is not Any else free_form,
            max_size=min(limit or MAX_ITEMS, 3),
        )
    raise TypeError(f"no strategy for {hint!r}")


@st.composite
def _audio_frames(draw: st.DrawFn) -> AudioFrame:
    channels = draw(st.integers(1, 8))
    samples = draw(st.integers(0, 40))
    return AudioFrame(
        sample_rate=draw(st.integers(8000, 192_000)),
        sequence=draw(st.integers(0, 2**63 - 1)),
        stream_sample=draw(st.integers(0, 2**63 - 1)),
        pcm=draw(st.binary(min_size=2 * channels * samples, max_size=2 * channels * samples)),
        channels=channels,
    )


CONSTRAINED: dict[type[Message], st.SearchStrategy[Any]] = {
    AudioFrame: _audio_frames(),
    TtsFrame: st.builds(
        TtsFrame,
        utterance_id=st.text(max_size=128),
        sequence=INT64,
        pcm=st.binary(min_size=BOT.frame_bytes, max_size=BOT.frame_bytes),
        words=INT64,
    ),
    RequestAudio: st.builds(
        RequestAudio,
        sequence=st.integers(0, 2**63 - 1),
        pcm=st.binary(max_size=4096).map(lambda b: b[: len(b) // 2 * 2]),
        answer=st.sampled_from(Answer),
        language=st.text(max_size=16),
    ),
}
"""Messages whose ``__post_init__`` ties fields together: built whole."""


def fields_of(cls: type[Message]) -> list[tuple[str, Any, int | None]]:
    """Each field of ``cls``: its name, its type without bounds, and its own bound if any."""
    hints = typing.get_type_hints(cls)  # without the Annotated bounds
    out = []
    for f in typing.cast(mi.StructType, mi.type_info(cls)).fields:
        t = f.type
        if isinstance(t, mi.UnionType):  # ``X | None``
            (t,) = [u for u in t.types if not isinstance(u, mi.NoneType)]
        out.append((f.name, hints[f.name], getattr(t, "max_length", None)))
    return out


def messages_of(cls: type[Message]) -> st.SearchStrategy[Any]:
    """Valid instances of ``cls``, every field drawn from its annotation."""
    if cls in CONSTRAINED:
        return CONSTRAINED[cls]
    fields = {name: _strategy(hint, limit) for name, hint, limit in fields_of(cls)}
    return st.builds(cls, **fields)


any_message = st.sampled_from(sorted(MESSAGE_TYPES)).flatmap(
    lambda t: messages_of(MESSAGE_TYPES[t])
)


def test_every_registered_message_type_has_a_strategy() -> None:
    for cls in MESSAGE_TYPES.values():
        messages_of(cls).validate()  # raises for a field type the strategies do not know


@FAST
@given(any_message, st.text(max_size=128), st.text(max_size=128), st.text(max_size=128))
def test_every_message_type_roundtrips_through_the_envelope(
    msg: Message, session: str, src: str, reply_to: str
) -> None:
    env = envelope_for(msg, session=session, src=src, reply_to=reply_to)
    back = decode(encode(env))
    assert decode_message(back) == msg
    assert (back.type, back.session, back.src, back.reply_to) == (msg.TYPE, session, src, reply_to)
    assert (back.id, back.mono_ns, back.wall_ns) == (env.id, env.mono_ns, env.wall_ns)


# ------------------------------------------------------------------ hostile input


def _header(type_: Any, body: Any) -> bytes:
    header = [PROTOCOL_VERSION, type_, "", "x", "", 1, 1, "", body]
    packed: bytes = msgpack.packb(header, use_bin_type=True)
    return packed


@st.composite
def _one_field_off(draw: st.DrawFn) -> list[bytes]:
    """The frames of a valid message with one header element (or the payload) replaced."""
    msg = draw(any_message)
    header_frame, *payload = encode(envelope_for(msg))
    header = msgpack.unpackb(header_frame)
    spot = draw(st.integers(0, len(header)))
    if spot == len(header):
        payload = [draw(st.binary(max_size=2 * BOT.frame_bytes))]
    else:
        header[spot] = draw(msgpack_values | st.text(min_size=60, max_size=140))
    return [msgpack.packb(header, use_bin_type=True), *payload]


frame = (
    st.binary(max_size=64)
    | st.builds(lambda v: msgpack.packb(v, use_bin_type=True), msgpack_values)
    | st.builds(  # a 9-element header whose every element is arbitrary
        lambda values: msgpack.packb(values, use_bin_type=True),
        st.lists(msgpack_values, min_size=9, max_size=9),
    )
    | any_message.map(lambda m: encode(envelope_for(m))[0])
)


@FAST
@given(st.lists(frame, max_size=3) | _one_field_off())
def test_any_frames_decode_to_a_message_or_a_typed_error(frames: list[bytes]) -> None:
    decodes_or_refuses(frames)


field_names = st.sampled_from(
    sorted({name for cls in MESSAGE_TYPES.values() for name, _, _ in fields_of(cls)})
)
body_keys = field_names | st.text(max_size=8) | st.binary(max_size=8)


@FAST
@given(
    st.sampled_from(sorted(MESSAGE_TYPES)),
    st.dictionaries(body_keys, msgpack_values, max_size=6),
    st.none() | st.binary(max_size=2 * BOT.frame_bytes),
)
# Found by this test: unknown fields named by a str and by bytes raised TypeError (sorting them).
@example(type_="control.pause", body={"actor_id": None, b"": None}, payload=None)
def test_any_body_under_a_real_type_decodes_to_a_message_or_a_typed_error(
    type_: str, body: dict[Any, Any], payload: bytes | None
) -> None:
    frames = [_header(type_, body)] + ([] if payload is None else [payload])
    msg = decodes_or_refuses(frames)
    assert msg is None or type(msg) is MESSAGE_TYPES[type_]


@FAST
@given(any_message, st.dictionaries(body_keys, msgpack_values, min_size=1, max_size=3))
def test_a_valid_body_with_fields_changed_decodes_to_a_message_or_a_typed_error(
    msg: Message, changes: dict[Any, Any]
) -> None:
    env = envelope_for(msg)
    env = msgspec.structs.replace(env, body={**env.body, **changes})
    decoded = decodes_or_refuses(encode(env))
    assert decoded is None or type(decoded) is type(msg)


BOUNDED = [
    (cls, name, hint, limit)
    for cls in MESSAGE_TYPES.values()
    for name, hint, limit in fields_of(cls)
    if limit is not None
]


def test_most_fields_are_bounded() -> None:
    assert len(BOUNDED) > 40


@settings(max_examples=3, deadline=None)
@pytest.mark.parametrize(
    ("cls", "name", "hint", "limit"), BOUNDED, ids=[f"{c.TYPE}.{n}" for c, n, _, _ in BOUNDED]
)
@given(data=st.data())
def test_every_bounded_field_refuses_one_item_over_its_bound(
    cls: type[Message], name: str, hint: Any, limit: int, data: st.DataObject
) -> None:
    if typing.get_origin(hint) in (types.UnionType, typing.Union):
        (hint,) = [a for a in typing.get_args(hint) if a not in ABSENT]
    over: Any = {
        str: "x" * (limit + 1),
        bytes: bytes(limit + 1),
        tuple: [""] * (limit + 1),
        dict: {str(i): "" for i in range(limit + 1)},
    }[typing.get_origin(hint) or hint]
    body, payload = data.draw(messages_of(cls)).to_wire()
    if name == cls.PAYLOAD:
        payload = over
    else:
        body = {**body, name: over}
    with pytest.raises(DecodeError) as refused:
        decode_message(decode(encode(Envelope(type=cls.TYPE, body=body, payload=payload))))
    assert refused.value.reason == "too_long", refused.value


@FAST
@given(st.sampled_from([c for c in MESSAGE_TYPES.values() if c.PAYLOAD]).flatmap(messages_of))
def test_a_body_that_also_carries_the_payload_field_is_refused(msg: Message) -> None:
    env = envelope_for(msg)
    assert msg.PAYLOAD is not None and env.payload is not None
    env = msgspec.structs.replace(env, body={**env.body, msg.PAYLOAD: env.payload})
    with pytest.raises(ValidationError, match="unknown fields"):
        decode_message(decode(encode(env)))


def _unbounded(t: mi.Type, where: str) -> list[str]:
    """Where inside ``t`` a string, bytes, array or map has no bound (``Any`` is allowed only
    as a map value: free-form values, bounded by bus/schema/_base.py's own check)."""
    if isinstance(t, mi.UnionType):
        return [w for u in t.types for w in _unbounded(u, where)]
    if isinstance(t, mi.StructType):
        return [w for f in t.fields for w in _unbounded(f.type, f"{where}.{f.name}")]
    if isinstance(t, mi.StrType | mi.BytesType) and t.max_length is None:
        return [where]
    if isinstance(t, mi.VarTupleType | mi.ListType):
        return ([where] if t.max_length is None else []) + _unbounded(t.item_type, where + "[]")
    if isinstance(t, mi.DictType):
        keys = _unbounded(t.key_type, where + "{key}")
        values = [] if isinstance(t.value_type, mi.AnyType) else _unbounded(t.value_type, where)
        return ([where] if t.max_length is None else []) + keys + values
    if isinstance(t, mi.AnyType):
        return [where]
    return []


def test_every_string_bytes_array_and_map_of_every_message_is_bounded() -> None:
    for cls in MESSAGE_TYPES.values():
        assert _unbounded(mi.type_info(cls), cls.TYPE) == []


def _plain(value: Any) -> Any:
    """A field value as the hand-written codec put it in the body (bus/schema/_base.py's
    ``_to_plain`` before msgspec)."""
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Message):
        return {name: _plain(v) for name, v in _set_fields(value) if name != value.PAYLOAD}
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _set_fields(msg: Message) -> list[tuple[str, Any]]:
    """Each field and its value, but those ``UNSET`` (fields added since the hand-written
    codec, left out of the body until set)."""
    values = [(name, getattr(msg, name)) for name in msg.__struct_fields__]
    return [(name, value) for name, value in values if value is not msgspec.UNSET]


@FAST
@given(any_message, st.text(max_size=128), st.text(max_size=128))
def test_every_message_encodes_to_the_bytes_of_the_hand_written_codec(
    msg: Message, session: str, src: str
) -> None:
    """msgspec's encoder against msgpack's, which bus/envelope.py used before msgspec."""
    env = envelope_for(msg, session=session, src=src)
    body = _plain(msg)
    assert _plain(env.body) == body  # the same values, but tuples where the old codec made lists
    header = [env.version, env.type, session, env.id, src, env.mono_ns, env.wall_ns, "", body]
    payload = [] if msg.PAYLOAD is None else [getattr(msg, msg.PAYLOAD)]
    assert encode(env) == [msgpack.packb(header, use_bin_type=True), *payload]
