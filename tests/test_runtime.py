"""The actor runtime in one process: two actors of a kind, requests, typed failures, priority,
registration updates seen by a watcher, bad input on an inbox."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import msgpack
import pytest
import zmq
import zmq.asyncio

from actors.loopback import TOPIC_IN, TOPIC_OUT, Loopback
from bus.audio_format import BOT, MIC
from bus.broker import Broker
from bus.envelope import decode, encode
from bus.errors import PeerGone, RemoteError, RequestTimeout
from bus.inbound import Via
from bus.runtime import Actor, Inbound
from bus.schema import decode_message, envelope_for
from bus.schema.audio import AudioFrame
from bus.schema.control import Pause, Stop
from bus.schema.system import (
    Describe,
    Description,
    Discover,
    Error,
    Ping,
    Pong,
    RegistryChange,
)
from bus.schema.tts import TtsText
from bus.topology import ActorConfig, BrokerConfig
from tests.support import BrokerPorts


def run(coro_fn: Callable[[], Awaitable[None]], timeout: float = 30.0) -> None:
    """Run an async test body with a hard timeout."""
    asyncio.run(asyncio.wait_for(coro_fn(), timeout))


def configs(heartbeat_ms: int = 200) -> tuple[BrokerConfig, Callable[..., ActorConfig]]:
    ports = BrokerPorts.pick()
    broker = BrokerConfig(
        control=f"tcp://127.0.0.1:{ports.control}",
        events_in=f"tcp://127.0.0.1:{ports.events_in}",
        events_out=f"tcp://127.0.0.1:{ports.events_out}",
        heartbeat_ms=heartbeat_ms,
        liveness=3,
        metrics_port=None,
    )

    def actor(kind: str, **kw: Any) -> ActorConfig:
        return ActorConfig(
            kind=kind, broker=broker.control, heartbeat_ms=heartbeat_ms, metrics_port=None, **kw
        )

    return broker, actor


@contextlib.asynccontextmanager
async def running(*runnables: Broker | Actor) -> AsyncIterator[None]:
    tasks = [asyncio.create_task(r.run()) for r in runnables]
    try:
        yield
    finally:
        for r in reversed(runnables):
            r.stop()
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 10)


async def until(predicate: Callable[[], Any], timeout: float, what: str) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.01)


async def all_up(gateway: Any, *others: Actor, kinds: tuple[str, ...] = ()) -> None:
    """The gateway and ``others`` registered, and the gateway sees a live actor of each of
    ``kinds`` (by default: a TTS worker and a supervisor)."""
    everyone = (gateway, *others)
    await until(lambda: all(a.registered.is_set() for a in everyone), 20, "all up")
    for kind in kinds or ("tts_worker", "supervisor"):
        await until(lambda k=kind: gateway.registry.alive(k), 10, f"{kind} seen")


class Recorder(Actor):
    """Records what reaches on_message; audio handling is slowed to build a backlog."""

    def __init__(self, config: ActorConfig, audio_cost_s: float = 0.0) -> None:
        super().__init__(config)
        self.audio_cost_s = audio_cost_s
        self.seen: list[str] = []
        self.subscribe(b"audio.")

    async def on_message(self, inbound: Inbound) -> None:
        msg = inbound.message
        if isinstance(msg, AudioFrame):
            self.seen.append(f"audio{msg.sequence}")
            if self.audio_cost_s:
                await asyncio.sleep(self.audio_cost_s)
        elif isinstance(msg, Pause):
            self.seen.append("pause")
            await self.reply(inbound, Pong())
        elif isinstance(msg, Stop):
            raise RuntimeError("handler bug")  # on_failure logs it; the actor lives on
        else:
            await super().on_message(inbound)


def test_two_actors_of_one_kind_in_one_process_request_and_reply() -> None:
    async def body() -> None:
        broker_cfg, actor = configs()
        a, b = Loopback(actor("loopback")), Loopback(actor("loopback"))
        async with running(Broker(broker_cfg), a, b):
            await asyncio.wait_for(asyncio.gather(a.registered.wait(), b.registered.wait()), 5)
            await until(lambda: a.registry.get(b.id) and b.registry.get(a.id), 5, "mirrors")
            assert a.id != b.id
            assert isinstance(await a.request(b.id, Ping(), timeout=2), Pong)
            desc = await b.request(a.id, Describe(), timeout=2)
            assert isinstance(desc, Description) and desc.registration.actor_id == a.id
            # The loopback echoes frames sent to its inbox, payload intact.
            n = BOT.frame_samples
            frame = AudioFrame(
                sample_rate=BOT.sample_rate, sequence=3, stream_sample=n, pcm=b"\x01\x02" * n
            )
            assert await a.request(b.id, frame, timeout=2) == frame

    run(body)


def test_requests_fail_with_typed_errors() -> None:
    async def body() -> None:
        broker_cfg, actor = configs()
        a = Loopback(actor("loopback"))
        b = Recorder(actor("recorder"))
        async with running(Broker(broker_cfg), a, b):
            await until(lambda: a.registry.get(b.id), 5, "b visible to a")
            with pytest.raises(PeerGone):
                await a.request("nobody-here", Ping(), timeout=1)
            with pytest.raises(RemoteError) as info:
                await a.request(b.id, Stop(), timeout=2)  # b's handler raises
            assert info.value.code == "INTERNAL"
            with pytest.raises(RemoteError) as info:
                await a.request(b.id, TtsText(utterance_id="u", text="hi"), timeout=2)
            assert info.value.code == "UNSUPPORTED_TYPE"
            silent = AudioFrame(
                sample_rate=MIC.sample_rate, sequence=0, stream_sample=0, pcm=b"\0\0"
            )
            with pytest.raises(RequestTimeout):
                await a.request(b.id, silent, timeout=0.3)  # b records audio, answers nothing
            assert isinstance(await a.request(b.id, Ping(), timeout=2), Pong)  # b still serves

            # The peer leaves while a request waits: PeerGone, long before the timeout.
            started = asyncio.get_running_loop().time()
            pending = asyncio.ensure_future(a.request(b.id, silent, timeout=10))
            await asyncio.sleep(0.05)
            b.stop()
            with pytest.raises(PeerGone):
                await pending
            assert asyncio.get_running_loop().time() - started < 3

    run(body)


def test_control_messages_overtake_queued_audio() -> None:
    """A pause sent after 300 queued audio frames is handled long before the last of them."""

    async def body() -> None:
        broker_cfg, actor = configs()
        slow = Recorder(actor("recorder"), audio_cost_s=0.002)
        sender = Loopback(actor("loopback"))
        async with running(Broker(broker_cfg), slow, sender):
            await until(lambda: sender.registry.get(slow.id), 5, "recorder visible")
            for seq in range(300):
                frame = AudioFrame(
                    sample_rate=MIC.sample_rate,
                    sequence=seq,
                    stream_sample=seq * MIC.frame_samples,
                    pcm=bytes(MIC.frame_bytes),
                )
                await sender.send(slow.id, frame)
            reply = await sender.request(slow.id, Pause(), timeout=5)
            assert isinstance(reply, Pong)
            position = slow.seen.index("pause")
            # Each frame costs 2 ms: in order, the pause would wait 0.6 s behind all 300.
            assert position < 150, position
            await until(lambda: len(slow.seen) == 301, 5, "all audio handled after the pause")
            audio = [s for s in slow.seen if s != "pause"]
            assert audio == [f"audio{i}" for i in range(300)]  # data order is kept

    run(body)


def test_registration_update_reaches_a_watcher_and_events_flow_through_the_proxy() -> None:
    async def body() -> None:
        broker_cfg, actor = configs()
        worker = Loopback(actor("loopback"))
        watcher = Recorder(actor("recorder"))
        changes: list[tuple[RegistryChange, str, float]] = []
        watcher.registry.listen(lambda c, r: changes.append((c, r.actor_id, r.load)))
        watcher.subscribe(TOPIC_OUT)
        async with running(Broker(broker_cfg), worker, watcher):
            await until(lambda: watcher.registry.get(worker.id), 5, "worker visible")
            await worker.update_registration(load=0.75, resident_models=("piper:joe",))
            await until(lambda: (RegistryChange.UPDATED, worker.id, 0.75) in changes, 5, "update")
            reg = watcher.registry.get(worker.id)
            assert reg is not None and reg.resident_models == ("piper:joe",)

            # Audio through the broker's proxy: watcher -> loopback.in -> worker -> loopback.out.
            await asyncio.sleep(0.2)  # let the SUB subscriptions reach the proxy
            n = MIC.frame_samples
            frame = AudioFrame(
                sample_rate=MIC.sample_rate, sequence=1, stream_sample=n, pcm=b"\x05\x00" * n
            )
            await watcher.publish(TOPIC_IN, frame, session="s-1")
            await until(lambda: "audio1" in watcher.seen, 5, "echoed frame")

            worker.stop()
            await until(lambda: any(c[0] is RegistryChange.REMOVED for c in changes), 5, "removal")

    run(body)


def test_bad_messages_to_an_actor_inbox_are_counted_and_refused(zctx: zmq.Context) -> None:
    async def body() -> None:
        broker_cfg, actor = configs()
        target = Loopback(actor("loopback"))
        async with running(Broker(broker_cfg), target):
            await asyncio.wait_for(target.registered.wait(), 5)
            sock = zctx.socket(zmq.DEALER)
            sock.linger = 0
            sock.connect(target.endpoints["inbox"])
            bad = [
                [b"\xff\x00garbage"],
                [msgpack.packb([1, "no.such", "", "i", "s", 1, 1, "", {}])],
                [
                    msgpack.packb(
                        [
                            1,
                            "audio.frame",
                            "",
                            "i",
                            "s",
                            1,
                            1,
                            "",
                            {"sample_rate": MIC.sample_rate, "sequence": 0, "stream_sample": 0},
                        ]
                    ),
                    b"odd",
                ],
            ]
            for frames in bad:
                sock.send_multipart(frames)
            codes = []
            for _ in bad:
                await until(lambda: sock.poll(0), 5, "an error reply")
                reply = decode_message(decode(sock.recv_multipart()))
                assert isinstance(reply, Error)
                codes.append(reply.code)
            assert sorted(codes) == ["INVALID_MESSAGE", "INVALID_MESSAGE", "UNSUPPORTED_TYPE"]
            assert target.stats["invalid"] == 3
            sample = target.metrics.registry.get_sample_value(
                "duplex_messages_invalid_total", {"reason": "bad_field"}
            )
            assert sample == 1
            ping = envelope_for(Ping())
            sock.send_multipart(encode(ping))
            await until(lambda: sock.poll(0), 5, "pong")
            assert isinstance(decode_message(decode(sock.recv_multipart())), Pong)

    run(body)


def test_a_peer_socket_closed_within_a_serving_round_is_skipped_not_a_crash() -> None:
    """The serve loop lists the sockets with messages, then drains them one by one; handling
    one (a registry REMOVED after a stall) can close another's peer socket. Draining that one
    used to raise ZMQError ENOTSOCK and stop the actor (a router did so in a full run)."""

    async def body() -> None:
        broker_cfg, actor = configs()
        a, b = Loopback(actor("loopback")), Loopback(actor("loopback"))
        async with running(Broker(broker_cfg), a, b):
            await until(lambda: a.registry.get(b.id), 5, "b visible to a")
            await a.send(b.id, Ping())
            sock = a._peers.get(b.id)
            assert sock is not None
            a._peers.forget(b.id)  # what a REMOVED does, between listing and draining
            await a._drain(sock, Via.PEER)
            assert isinstance(await a.request(b.id, Ping(), timeout=2), Pong)  # a still serves

    run(body)


class SlowToLearn(Actor):
    """Answers every Pause by *sending* to its author (not replying on the connection), and
    gets its first registry snapshot half a second late."""

    def __init__(self, config: ActorConfig) -> None:
        super().__init__(config)
        self.snapshot_late = True

    async def request_broker(self, msg: Any, *, timeout: float | None = None) -> Any:
        if isinstance(msg, Discover) and self.snapshot_late:
            self.snapshot_late = False
            await asyncio.sleep(0.5)
        return await super().request_broker(msg, timeout=timeout)

    async def on_message(self, inbound: Inbound) -> None:
        if isinstance(inbound.message, Pause):
            self.send_or_warn(inbound.env.src, Stop(), inbound.env.session)


class Eager(Actor):
    """Writes to every peer of kind ``slow`` the moment the registry shows it."""

    def __init__(self, config: ActorConfig) -> None:
        super().__init__(config)
        self.answers: list[str] = []
        self.registry.listen(self._on_change)

    def _on_change(self, change: RegistryChange, reg: Any) -> None:
        if change is RegistryChange.ADDED and reg.kind == "slow":
            self.send_or_warn(reg.actor_id, Pause(), "s1")

    async def on_message(self, inbound: Inbound) -> None:
        if isinstance(inbound.message, Stop):
            self.answers.append(inbound.env.session)


def test_what_reaches_a_new_actor_before_it_knows_its_peers_waits_for_the_registry() -> None:
    """A peer that saw an actor register writes to it at once; the actor, which only learns
    of that peer from its first snapshot, holds the message until it has it and so can answer
    by the peer's inbox (else: PeerGone, and the answer is lost)."""

    async def body() -> None:
        broker_cfg, actor = configs()
        eager = Eager(actor("eager"))
        async with running(Broker(broker_cfg), eager):
            await eager.registered.wait()
            slow = SlowToLearn(actor("slow"))
            async with running(slow):
                await until(lambda: eager.answers, 5, "the answer")
                assert eager.answers == ["s1"]
                assert slow.stats["received"] >= 1

    run(body)
