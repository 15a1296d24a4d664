"""The codec section of bench_bus: the runtime's hand-written codec (bus/envelope.py + the
annotation checks of bus/schema/_base.py) weighed against msgspec (typed ``msgspec.Struct``s,
validation in C) on the same msgpack wire format.

The msgspec side mirrors four messages field for field, in the same order and with the same
bounds: ``audio.frame`` (640 bytes of PCM, 20 ms at 16 kHz), ``tts.frame`` (1920 bytes),
``heartbeat`` and ``tts.start`` with text. Its header is the same 9-element array, decoded with
the body left raw (``msgspec.Raw``), then the body decoded by the type the header names; the
payload frame is checked in Python as the runtime's ``__post_init__`` checks it. Differences
left in: a ``dict[str, Any]`` field's values are any msgpack value to msgspec, where the
runtime also bounds their nesting and string lengths.

Measured: (1) encode + decode + validate of one message, in process, as the runtime does it
(``envelope_for`` → ``encode`` → ``decode`` → ``decode_message``); (2) the same inside a hop: a
pyzmq DEALER/ROUTER ping-pong with an echo process that decodes every message and encodes its
answer with the same codec, each leg timed one way (sender's clock before encoding → the
answer's envelope stamp, taken after decoding; that stamp → decoded at the sender), beside the
same frames echoed with no codec at all. The codecs take turns message by message, so both see
the same host.
"""

from __future__ import annotations

import gc
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Annotated, Any

import msgspec
import zmq

from bus.audio_format import BOT
from bus.envelope import (
    MAX_HEADER_BYTES,
    MAX_ID_CHARS,
    MAX_PAYLOAD_BYTES,
    PROTOCOL_VERSION,
    decode,
    encode,
    new_id,
)
from bus.errors import DecodeError, ValidationError
from bus.schema import Message, decode_message, envelope_for
from bus.schema.audio import MAX_FRAME_BYTES, AudioFrame
from bus.schema.system import Heartbeat
from bus.schema.tts import TtsFrame, TtsStart

Meta = msgspec.Meta
Id = Annotated[str, Meta(max_length=MAX_ID_CHARS)]
Bounded128 = Annotated[str, Meta(max_length=128)]


class Header(msgspec.Struct, array_like=True, frozen=True):
    """The envelope header (bus/envelope.py), its body left undecoded until its type is known."""

    version: int
    type: Annotated[str, Meta(min_length=1, max_length=64)]
    session: Id
    id: Id
    src: Id
    mono_ns: int
    wall_ns: int
    reply_to: Id
    body: msgspec.Raw


class Body(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """A message body: the message's fields but the one that travels as the payload frame."""


class AudioFrameBody(Body, frozen=True):
    sample_rate: Annotated[int, Meta(ge=8000, le=192_000)]
    sequence: Annotated[int, Meta(ge=0)]
    stream_sample: Annotated[int, Meta(ge=0)]
    channels: Annotated[int, Meta(ge=1, le=8)] = 1


class TtsFrameBody(Body, frozen=True):
    utterance_id: Bounded128
    sequence: int
    words: int = 0


class HeartbeatBody(Body, frozen=True):
    registry_version: int = 0


class TtsStartBody(Body, frozen=True):
    utterance_id: Bounded128
    voice: Bounded128 = ""
    options: Annotated[dict[Annotated[str, Meta(max_length=256)], Any], Meta(max_length=32)] = {}
    credit: int = 0
    text: Annotated[str, Meta(max_length=4096)] = ""
    final: bool = False


def _pcm_ok(body: Body, payload: bytes | None) -> bool:
    if isinstance(body, AudioFrameBody):
        return (
            payload is not None
            and len(payload) <= MAX_FRAME_BYTES
            and len(payload) % (2 * body.channels) == 0
        )
    if isinstance(body, TtsFrameBody):
        return payload is not None and len(payload) == BOT.frame_bytes
    return True


BODIES: dict[str, type[Body]] = {
    AudioFrame.TYPE: AudioFrameBody,
    TtsFrame.TYPE: TtsFrameBody,
    Heartbeat.TYPE: HeartbeatBody,
    TtsStart.TYPE: TtsStartBody,
}
_ENCODER = msgspec.msgpack.Encoder()
_HEADER = msgspec.msgpack.Decoder(Header)
_DECODERS = {name: msgspec.msgpack.Decoder(cls) for name, cls in BODIES.items()}


def msgspec_encode(
    type_: str, body: Body, payload: bytes | None, *, src: str = "", reply_to: str = ""
) -> list[bytes]:
    """Frames of a message, stamped now: the bytes bus/envelope.py ``encode`` makes."""
    header = _ENCODER.encode(
        (
            PROTOCOL_VERSION,
            type_,
            "",
            new_id(),
            src,
            time.monotonic_ns(),
            time.time_ns(),
            reply_to,
            body,
        )
    )
    return [header] if payload is None else [header, payload]


def msgspec_decode(frames: Sequence[bytes]) -> tuple[Header, Body, bytes | None]:
    """Header, validated body and payload of ``frames``, or the runtime's typed errors."""
    if not frames or len(frames) > 2:
        raise DecodeError("bad_frames", f"expected 1 or 2 frames, got {len(frames)}")
    if len(frames[0]) > MAX_HEADER_BYTES:
        raise DecodeError("oversized", f"header of {len(frames[0])} bytes")
    payload = bytes(frames[1]) if len(frames) == 2 else None
    if payload is not None and len(payload) > MAX_PAYLOAD_BYTES:
        raise DecodeError("oversized", f"payload of {len(payload)} bytes")
    try:
        header = _HEADER.decode(frames[0])
    except msgspec.DecodeError as exc:  # ValidationError is one
        raise DecodeError("bad_header", str(exc)) from exc
    if header.version != PROTOCOL_VERSION:
        raise DecodeError("bad_version", f"protocol version {header.version!r}")
    decoder = _DECODERS.get(header.type)
    if decoder is None:
        raise ValidationError("unknown_type", f"unknown message type {header.type!r}")
    try:
        body = decoder.decode(header.body)
    except msgspec.DecodeError as exc:
        raise ValidationError("bad_field", f"{header.type}: {exc}") from exc
    if not _pcm_ok(body, payload):
        raise ValidationError("bad_field", f"{header.type}: bad payload frame")
    return header, body, payload


# ------------------------------------------------------------------ the messages measured

PCM_20MS_16K = bytes(range(256)) * 2 + bytes(128)
"""640 bytes: 20 ms of 16 kHz mono s16le, the microphone frame."""
TEXT = (
    "Here is a long answer that keeps going for a while, so that there is plenty of time to "
    "interrupt it. It talks about seven different things, one after another, without a pause."
)


def samples() -> dict[str, tuple[Message, Body, bytes | None]]:
    """Each measured message as the runtime's dataclass and as its msgspec mirror."""
    return {
        AudioFrame.TYPE: (
            AudioFrame(
                sample_rate=16_000, sequence=4242, stream_sample=1_357_440, pcm=PCM_20MS_16K
            ),
            AudioFrameBody(sample_rate=16_000, sequence=4242, stream_sample=1_357_440),
            PCM_20MS_16K,
        ),
        TtsFrame.TYPE: (
            TtsFrame(utterance_id="a1b2c3d4", sequence=17, pcm=bytes(BOT.frame_bytes), words=3),
            TtsFrameBody(utterance_id="a1b2c3d4", sequence=17, words=3),
            bytes(BOT.frame_bytes),
        ),
        Heartbeat.TYPE: (Heartbeat(registry_version=12), HeartbeatBody(registry_version=12), None),
        TtsStart.TYPE: (
            TtsStart(
                utterance_id="a1b2c3d4",
                voice="piper-en_US-joe-medium",
                options={"speed": 1.0},
                credit=50,
                text=TEXT,
                final=True,
            ),
            TtsStartBody(
                utterance_id="a1b2c3d4",
                voice="piper-en_US-joe-medium",
                options={"speed": 1.0},
                credit=50,
                text=TEXT,
                final=True,
            ),
            None,
        ),
    }


def current_roundtrip(msg: Message) -> Message:
    return decode_message(decode(encode(envelope_for(msg, src="bench"))))


def msgspec_roundtrip(type_: str, body: Body, payload: bytes | None) -> Body:
    return msgspec_decode(msgspec_encode(type_, body, payload, src="bench"))[1]


def wire_check() -> dict[str, dict[str, bool]]:
    """Per message: the same bytes for the same envelope, and each side decodes the other's."""
    out = {}
    for type_, (msg, body, payload) in samples().items():
        ours = encode(envelope_for(msg, src="bench"))
        header = decode(ours)
        theirs = msgspec_encode(type_, body, payload, src="bench")
        same = [
            _ENCODER.encode(
                (
                    header.version,
                    header.type,
                    header.session,
                    header.id,
                    header.src,
                    header.mono_ns,
                    header.wall_ns,
                    header.reply_to,
                    body,
                )
            ),
            *([] if payload is None else [payload]),
        ]
        out[type_] = {
            "same_bytes": same == ours,
            "msgspec_decodes_current": msgspec_decode(ours)[1] == body,
            "current_decodes_msgspec": decode_message(decode(theirs)) == msg,
        }
    return out


def _time_each(run: Callable[[], object], n: int) -> list[int]:
    gc.collect()
    clock, out = time.perf_counter_ns, []
    for _ in range(n):
        started = clock()
        run()
        out.append(clock() - started)
    return out


def _us(values_ns: Sequence[int], quantiles: Sequence[int]) -> dict[str, float]:
    ordered = sorted(values_ns)

    def pick(q: int) -> float:
        return round(ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))] / 1e3, 2)

    figures = {f"p{q}_us": pick(q) for q in quantiles}
    figures["mean_us"] = round(statistics.fmean(ordered) / 1e3, 2)
    figures["max_us"] = round(ordered[-1] / 1e3, 2)
    figures["samples"] = len(ordered)
    return figures


def roundtrips(iterations: int, rounds: int = 5) -> dict[str, dict[str, Any]]:
    """Encode + decode + validate per message, microseconds; the codecs take turns in rounds."""
    out: dict[str, dict[str, Any]] = {}
    for type_, (msg, body, payload) in samples().items():
        current: list[int] = []
        fast: list[int] = []
        for _ in range(rounds):
            current += _time_each(partial(current_roundtrip, msg), iterations // rounds)
            fast += _time_each(
                partial(msgspec_roundtrip, type_, body, payload), iterations // rounds
            )
        cur, ms = _us(current, (50,)), _us(fast, (50,))
        out[type_] = {
            "current": cur,
            "msgspec": ms,
            "speedup_p50": round(cur["p50_us"] / ms["p50_us"], 2),
            "speedup_mean": round(cur["mean_us"] / ms["mean_us"], 2),
        }
    return out


# ------------------------------------------------------------------ the hop


def echo(endpoint: str) -> None:
    """Child process: a ROUTER that answers each message with the codec it was sent with."""
    ctx = zmq.Context()
    router = ctx.socket(zmq.ROUTER)
    router.bind(endpoint)
    while True:
        ident, mode, *frames = router.recv_multipart()
        if mode == b"current":
            env = decode(frames)
            msg = decode_message(env)
            reply = encode(envelope_for(msg, src="echo", reply_to=env.id))
        elif mode == b"msgspec":
            header, body, payload = msgspec_decode(frames)
            reply = msgspec_encode(header.type, body, payload, src="echo", reply_to=header.id)
        else:
            reply = [time.monotonic_ns().to_bytes(8, "little"), *frames]
        router.send_multipart([ident, mode, *reply])


def hops(trials: int, free_port: Callable[[], int]) -> dict[str, dict[str, Any]]:
    """Hop latency per message and codec, both legs of every ping-pong, microseconds."""
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    child = subprocess.Popen(
        [
            sys.executable,
            str(Path(__file__).resolve().parent / "bench_bus.py"),
            "--codec-echo",
            endpoint,
        ]
    )
    ctx = zmq.Context()
    try:
        dealer = ctx.socket(zmq.DEALER)
        dealer.connect(endpoint)
        legs: dict[tuple[str, str], list[int]] = {}
        messages = samples()
        prepared = {t: encode(envelope_for(m)) for t, (m, _, _) in messages.items()}
        for trial in range(trials + 50):  # the first ones connect and warm up
            for type_, (msg, body, payload) in messages.items():
                for mode in ("current", "msgspec", "no_codec"):
                    sent = time.monotonic_ns()
                    if mode == "current":
                        frames = encode(envelope_for(msg, src="bench"))
                    elif mode == "msgspec":
                        frames = msgspec_encode(type_, body, payload, src="bench")
                    else:
                        frames = prepared[type_]
                    dealer.send_multipart([mode.encode(), *frames])
                    if not dealer.poll(5000):
                        raise SystemExit("bench_bus: the codec echo did not answer")
                    _mode, *reply = dealer.recv_multipart()
                    if mode == "current":
                        env = decode(reply)
                        decode_message(env)
                        echo_ns = env.mono_ns
                    elif mode == "msgspec":
                        echo_ns = msgspec_decode(reply)[0].mono_ns
                    else:
                        echo_ns = int.from_bytes(reply[0], "little")
                    done = time.monotonic_ns()
                    if trial >= 50:
                        legs.setdefault((type_, mode), []).extend((echo_ns - sent, done - echo_ns))
        out: dict[str, dict[str, Any]] = {}
        for (type_, mode), values in legs.items():
            out.setdefault(type_, {})[mode] = _us(values, (50, 99))
        for figures in out.values():
            figures["msgspec_saves_p50_us"] = round(
                figures["current"]["p50_us"] - figures["msgspec"]["p50_us"], 2
            )
        return out
    finally:
        child.kill()
        child.wait()
        ctx.destroy(linger=0)


def section(*, iterations: int, hop_trials: int, free_port: Callable[[], int]) -> dict[str, Any]:
    """The ``codec`` section of bench_bus's JSON."""
    return {
        "msgspec": msgspec.__version__,
        "wire": wire_check(),
        "iterations": iterations,
        "roundtrip_us": roundtrips(iterations),
        "hop_trials": hop_trials,
        "hop_us": hops(hop_trials, free_port),
    }
