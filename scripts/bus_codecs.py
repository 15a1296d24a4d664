"""The codec section of bench_bus: the runtime's codec (bus/envelope.py + bus/schema, msgspec
Structs validated in C) weighed against the floor of any msgpack codec, the same frames encoded
and decoded with no validation at all.

Four messages: ``audio.frame`` (640 bytes of PCM, 20 ms at 16 kHz), ``tts.frame`` (1920 bytes),
``heartbeat`` and ``tts.start`` with text. The sides:

- ``runtime``: ``envelope_for`` → ``encode`` → ``decode`` → ``decode_message``, as every actor
  does it: header checked, body validated into a typed message, free-form values checked;
- ``msgspec_unvalidated``: the header array stamped now (fresh id, both clocks) with the
  message's body map, encoded with msgspec and decoded back to plain Python values: no
  envelope, no checks, no typed message (the floor: what validation and the typed API cost is
  the difference);
- ``msgpack_unvalidated``: the same with msgpack (pyzmq's usual companion, and what
  bus/envelope.py used before msgspec).

Measured: (1) one encode + decode in process, microseconds; (2) the same inside a hop: a pyzmq
DEALER/ROUTER ping-pong with an echo process that decodes every message and encodes its answer
with the same codec, each leg timed one way (sender's clock before encoding → the answer's
stamp, taken after decoding; that stamp → decoded at the sender), beside the same frames echoed
with no codec at all. The sides take turns message by message, so all see the same host.

``wire`` checks, per message, that the runtime's frames are the bytes msgpack makes of the same
envelope, and that the runtime decodes msgpack's frames to the same message.
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
from typing import Any

import msgpack
import msgspec
import zmq

from bus.audio_format import BOT
from bus.envelope import PROTOCOL_VERSION, decode, encode, new_id
from bus.schema import Message, decode_message, envelope_for
from bus.schema.audio import AudioFrame
from bus.schema.system import Heartbeat
from bus.schema.tts import TtsFrame, TtsStart

SIDES = ("runtime", "msgspec_unvalidated", "msgpack_unvalidated")
"""The codecs measured, in the order they take turns."""

_ENCODER = msgspec.msgpack.Encoder()
_DECODER = msgspec.msgpack.Decoder()

PCM_20MS_16K = bytes(range(256)) * 2 + bytes(128)
"""640 bytes: 20 ms of 16 kHz mono s16le, the microphone frame."""
TEXT = (
    "Here is a long answer that keeps going for a while, so that there is plenty of time to "
    "interrupt it. It talks about seven different things, one after another, without a pause."
)


def samples() -> dict[str, Message]:
    """Each measured message by its type."""
    return {
        AudioFrame.TYPE: AudioFrame(
            sample_rate=16_000, sequence=4242, stream_sample=1_357_440, pcm=PCM_20MS_16K
        ),
        TtsFrame.TYPE: TtsFrame(
            utterance_id="a1b2c3d4", sequence=17, pcm=bytes(BOT.frame_bytes), words=3
        ),
        Heartbeat.TYPE: Heartbeat(registry_version=12),
        TtsStart.TYPE: TtsStart(
            utterance_id="a1b2c3d4",
            voice="piper-en_US-joe-medium",
            options={"speed": 1.0},
            credit=50,
            text=TEXT,
            final=True,
        ),
    }


def _header(type_: str, body: dict[str, Any], src: str, reply_to: str) -> list[Any]:
    """The header array (bus/envelope.py's layout), stamped now."""
    return [
        PROTOCOL_VERSION,
        type_,
        "",
        new_id(),
        src,
        time.monotonic_ns(),
        time.time_ns(),
        reply_to,
        body,
    ]


def _msgspec_encode(header: list[Any], payload: bytes | None) -> list[bytes]:
    frame = _ENCODER.encode(header)
    return [frame] if payload is None else [frame, payload]


def _msgpack_encode(header: list[Any], payload: bytes | None) -> list[bytes]:
    frame: bytes = msgpack.packb(header, use_bin_type=True)
    return [frame] if payload is None else [frame, payload]


def _msgspec_decode(frames: Sequence[bytes]) -> tuple[list[Any], bytes | None]:
    return _DECODER.decode(frames[0]), (frames[1] if len(frames) == 2 else None)


def _msgpack_decode(frames: Sequence[bytes]) -> tuple[list[Any], bytes | None]:
    header = msgpack.unpackb(frames[0], raw=False, strict_map_key=True, use_list=True)
    return header, (frames[1] if len(frames) == 2 else None)


UNVALIDATED: dict[str, tuple[Callable[..., list[bytes]], Callable[..., Any]]] = {
    "msgspec_unvalidated": (_msgspec_encode, _msgspec_decode),
    "msgpack_unvalidated": (_msgpack_encode, _msgpack_decode),
}
"""Encoder and decoder of each floor side."""


def runtime_roundtrip(msg: Message) -> Message:
    return decode_message(decode(encode(envelope_for(msg, src="bench"))))


def unvalidated_roundtrip(
    side: str, type_: str, body: dict[str, Any], payload: bytes | None
) -> tuple[list[Any], bytes | None]:
    encoder, decoder = UNVALIDATED[side]
    result: tuple[list[Any], bytes | None] = decoder(
        encoder(_header(type_, body, "bench", ""), payload)
    )
    return result


def wire_check() -> dict[str, dict[str, bool]]:
    """Per message: the runtime's bytes are msgpack's, and the runtime decodes msgpack's."""
    out = {}
    for type_, msg in samples().items():
        env = envelope_for(msg, session="s", src="bench", reply_to="r")
        header = [
            env.version,
            env.type,
            env.session,
            env.id,
            env.src,
            env.mono_ns,
            env.wall_ns,
            env.reply_to,
            env.body,
        ]
        theirs = _msgpack_encode(header, env.payload)
        back = decode(theirs)
        out[type_] = {
            "same_bytes_as_msgpack": encode(env) == theirs,
            "decodes_msgpack_frames": back == env and decode_message(back) == msg,
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
    """Encode + decode per message and side, microseconds; the sides take turns in rounds."""
    out: dict[str, dict[str, Any]] = {}
    for type_, msg in samples().items():
        body, payload = msg.to_wire()
        runs: dict[str, Callable[[], object]] = {
            "runtime": partial(runtime_roundtrip, msg),
            **{
                side: partial(unvalidated_roundtrip, side, type_, body, payload)
                for side in UNVALIDATED
            },
        }
        times: dict[str, list[int]] = {side: [] for side in SIDES}
        for _ in range(rounds):
            for side in SIDES:
                times[side] += _time_each(runs[side], iterations // rounds)
        figures: dict[str, Any] = {side: _us(times[side], (50,)) for side in SIDES}
        floor = figures["msgspec_unvalidated"]["p50_us"]
        figures["validation_costs_p50_us"] = round(figures["runtime"]["p50_us"] - floor, 2)
        out[type_] = figures
    return out


# ------------------------------------------------------------------ the hop


def echo(endpoint: str) -> None:
    """Child process: a ROUTER that answers each message with the codec it was sent with."""
    ctx = zmq.Context()
    router = ctx.socket(zmq.ROUTER)
    router.bind(endpoint)
    while True:
        ident, mode, *frames = router.recv_multipart()
        side = mode.decode()
        if side == "runtime":
            env = decode(frames)
            msg = decode_message(env)
            reply = encode(envelope_for(msg, src="echo", reply_to=env.id))
        elif side in UNVALIDATED:
            encoder, decoder = UNVALIDATED[side]
            header, payload = decoder(frames)
            reply = encoder(_header(header[1], header[8], "echo", header[3]), payload)
        else:
            reply = [time.monotonic_ns().to_bytes(8, "little"), *frames]
        router.send_multipart([ident, mode, *reply])


def hops(trials: int, free_port: Callable[[], int]) -> dict[str, dict[str, Any]]:
    """Hop latency per message and side, both legs of every ping-pong, microseconds."""
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
        wire = {t: m.to_wire() for t, m in messages.items()}
        prepared = {t: encode(envelope_for(m)) for t, m in messages.items()}
        for trial in range(trials + 50):  # the first ones connect and warm up
            for type_, msg in messages.items():
                for side in (*SIDES, "no_codec"):
                    sent = time.monotonic_ns()
                    if side == "runtime":
                        frames = encode(envelope_for(msg, src="bench"))
                    elif side in UNVALIDATED:
                        body, payload = wire[type_]
                        frames = UNVALIDATED[side][0](_header(type_, body, "bench", ""), payload)
                    else:
                        frames = prepared[type_]
                    dealer.send_multipart([side.encode(), *frames])
                    if not dealer.poll(5000):
                        raise SystemExit("bench_bus: the codec echo did not answer")
                    _side, *reply = dealer.recv_multipart()
                    if side == "runtime":
                        env = decode(reply)
                        decode_message(env)
                        echo_ns = env.mono_ns
                    elif side in UNVALIDATED:
                        echo_ns = UNVALIDATED[side][1](reply)[0][5]
                    else:
                        echo_ns = int.from_bytes(reply[0], "little")
                    done = time.monotonic_ns()
                    if trial >= 50:
                        legs.setdefault((type_, side), []).extend((echo_ns - sent, done - echo_ns))
        out: dict[str, dict[str, Any]] = {}
        for (type_, side), values in legs.items():
            out.setdefault(type_, {})[side] = _us(values, (50, 99))
        for figures in out.values():
            figures["validation_costs_p50_us"] = round(
                figures["runtime"]["p50_us"] - figures["msgspec_unvalidated"]["p50_us"], 2
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
        "msgpack": ".".join(map(str, msgpack.version)),
        "wire": wire_check(),
        "iterations": iterations,
        "roundtrip_us": roundtrips(iterations),
        "hop_trials": hop_trials,
        "hop_us": hops(hop_trials, free_port),
    }
