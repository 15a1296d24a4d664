"""Bus benchmark: hop latency actor→actor (through the broker's proxy and direct), each beside
raw pyzmq measured in the same run; echo throughput; re-registration after a broker restart;
the message codec against the same frames encoded and decoded with no validation (``codec``, see
scripts/bus_codecs.py).

Prints one JSON object on stdout; progress goes to stderr. Starts its own broker and actors on
free loopback ports, so it does not disturb a running stack.

Method. Every measured hop carries a 1920-byte payload (one 20 ms 48 kHz frame). A ping-pong
client sends one frame, an echo peer in another process sends it back, and each leg is timed
one way with the host-wide monotonic clock: leg 1 = echo's stamp - send time, leg 2 = receive
time - echo's stamp. For Duplex the client is an Actor and the echo is ``duplex run loopback``:
each leg is a full actor→actor hop (envelope encode, sockets, decode, validate, dispatch). For
raw pyzmq the client and echo are blocking pyzmq loops sending the same frame with an 8-byte
stamp, over the same broker proxy (or a plain DEALER/ROUTER pair for direct).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import json
import os
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import zmq

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from actors.loopback import TOPIC_IN, TOPIC_OUT  # noqa: E402
from bus import lifecycle  # noqa: E402
from bus.audio_format import BOT  # noqa: E402
from bus.client import BrokerClient  # noqa: E402
from bus.errors import BusError  # noqa: E402
from bus.runtime import Actor, Inbound, Via  # noqa: E402
from bus.schema.audio import AudioFrame  # noqa: E402
from bus.topology import ActorConfig  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bus_codecs  # noqa: E402
from benchkit import free_port, progress, summary  # noqa: E402

log = progress("bench_bus")


def summary_us(samples_ns: list[int]) -> dict[str, float]:
    return summary(samples_ns, unit="us", scale=1e-3, quantiles=(50, 99))


FRAME = bytes(BOT.frame_bytes)


class Stack:
    """A broker and loopback actors as subprocesses on free ports."""

    def __init__(self, heartbeat_ms: int) -> None:
        self.ports = [free_port() for _ in range(3)]
        self.heartbeat_ms = heartbeat_ms
        self.procs: list[subprocess.Popen[bytes]] = []
        self.broker: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"tcp://127.0.0.1:{self.ports[0]}"

    def _duplex(self, *args: str) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cli", *args, "--log-level", "warning"],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.procs.append(proc)
        return proc

    def start_broker(self) -> None:
        control, events_in, events_out = self.ports
        self.broker = self._duplex(
            "broker",
            "--control",
            f"tcp://127.0.0.1:{control}",
            "--events-in",
            f"tcp://127.0.0.1:{events_in}",
            "--events-out",
            f"tcp://127.0.0.1:{events_out}",
            "--heartbeat-ms",
            str(self.heartbeat_ms),
            "--no-metrics",
        )

    def start_loopback(self, actor_id: str) -> None:
        self._duplex(
            "run", "loopback", "--broker", self.endpoint, "--id", actor_id, "--metrics-port", "0"
        )

    def kill_broker(self) -> None:
        assert self.broker is not None
        self.broker.send_signal(signal.SIGKILL)
        self.broker.wait()

    def actors(self, timeout_s: float = 0.2) -> set[str] | None:
        try:
            with BrokerClient(self.endpoint, timeout_s=timeout_s) as client:
                return {a.actor_id for a in client.discover().actors}
        except BusError:
            return None

    def wait_for(self, ids: set[str], timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while self.actors() != ids:
            if time.monotonic() > deadline:
                raise SystemExit(f"bench_bus: actors {sorted(ids)} did not register in time")
            time.sleep(0.02)

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()


class PingClient(Actor):
    """Sends frames to the loopback and times both legs of every echo."""

    def __init__(self, config: ActorConfig) -> None:
        super().__init__(config)
        self.subscribe(TOPIC_OUT)
        self.waiting: asyncio.Future[tuple[int, int]] | None = None
        self.expected = -1
        self.received = 0

    async def on_message(self, inbound: Inbound) -> None:
        if inbound.via in (Via.EVENTS, Via.PEER) and isinstance(inbound.message, AudioFrame):
            self.received += 1
            waiting = self.waiting
            if (
                waiting is not None
                and not waiting.done()
                and inbound.message.sequence == self.expected
            ):
                waiting.set_result((inbound.env.mono_ns, time.monotonic_ns()))


async def duplex_hops(stack: Stack, trials: int, throughput_n: int) -> dict[str, Any]:
    cfg = ActorConfig(
        kind="bench", broker=stack.endpoint, metrics_port=None, heartbeat_ms=stack.heartbeat_ms
    )
    client = PingClient(cfg)
    task = asyncio.create_task(client.run())
    try:
        await asyncio.wait_for(client.registered.wait(), 10)
        for _ in range(1000):  # the registry snapshot follows registration closely
            if client.registry.alive("loopback"):
                break
            await asyncio.sleep(0.01)
        peer = client.registry.alive("loopback")[0].actor_id
        loop = asyncio.get_running_loop()

        async def via_proxy(seq: int) -> tuple[int, int, int]:
            client.waiting, client.expected = loop.create_future(), seq
            sent = time.monotonic_ns()
            frame = AudioFrame(
                sample_rate=BOT.sample_rate,
                sequence=seq,
                stream_sample=seq * BOT.frame_samples,
                pcm=FRAME,
            )
            await client.publish(TOPIC_IN, frame)
            echo_ns, recv_ns = await asyncio.wait_for(client.waiting, 5)
            return sent, echo_ns, recv_ns

        # Warm up until the subscription has reached the proxy.
        for seq in range(200):
            try:
                await via_proxy(seq)
                break
            except TimeoutError:
                continue
        proxy: list[int] = []
        for seq in range(trials):
            sent, echo_ns, recv_ns = await via_proxy(seq)
            proxy += [echo_ns - sent, recv_ns - echo_ns]

        direct: list[int] = []
        for seq in range(trials + 50):
            client.waiting, client.expected = loop.create_future(), seq
            frame = AudioFrame(
                sample_rate=BOT.sample_rate,
                sequence=seq,
                stream_sample=seq * BOT.frame_samples,
                pcm=FRAME,
            )
            sent = time.monotonic_ns()
            await client.send(peer, frame)  # the loopback answers on our peer socket
            echo_ns, recv_ns = await asyncio.wait_for(client.waiting, 5)
            if seq >= 50:  # the first sends connect the peer socket
                direct += [echo_ns - sent, recv_ns - echo_ns]

        # Echo throughput through the proxy with a bounded window (PUB/SUB drops past HWM).
        window, sent_n = 256, 0
        client.received = 0
        started = time.monotonic()
        while client.received < throughput_n:
            while sent_n - client.received < window and sent_n < throughput_n:
                frame = AudioFrame(
                    sample_rate=BOT.sample_rate, sequence=sent_n, stream_sample=0, pcm=FRAME
                )
                await client.publish(TOPIC_IN, frame)
                sent_n += 1
            await asyncio.sleep(0)
            if time.monotonic() - started > 60:
                break
        elapsed = time.monotonic() - started
        return {
            "proxy": proxy,
            "direct": direct,
            "echo_msgs_per_s": round(client.received / elapsed),
        }
    finally:
        client.stop()
        await asyncio.wait_for(task, 10)


def raw_echo(mode: str, endpoints: list[str]) -> None:
    """Child process: a blocking pyzmq echo that stamps each frame with its own clock."""
    ctx = zmq.Context()
    if mode == "proxy":
        sub = ctx.socket(zmq.SUB)
        sub.connect(endpoints[1])
        sub.subscribe(b"raw.in")
        pub = ctx.socket(zmq.PUB)
        pub.connect(endpoints[0])
        while True:
            _topic, _stamp, payload = sub.recv_multipart()
            pub.send_multipart([b"raw.out", time.monotonic_ns().to_bytes(8, "little"), payload])
    else:
        router = ctx.socket(zmq.ROUTER)
        router.bind(endpoints[0])
        while True:
            ident, _stamp, payload = router.recv_multipart()
            router.send_multipart([ident, time.monotonic_ns().to_bytes(8, "little"), payload])


def raw_hops(stack: Stack, trials: int) -> dict[str, list[int]]:
    _control, events_in, events_out = stack.ports
    ins, outs = f"tcp://127.0.0.1:{events_in}", f"tcp://127.0.0.1:{events_out}"
    direct_ep = f"tcp://127.0.0.1:{free_port()}"
    me = [sys.executable, str(Path(__file__))]
    echo_proxy = subprocess.Popen([*me, "--raw-echo", "proxy", ins, outs])
    echo_direct = subprocess.Popen([*me, "--raw-echo", "direct", direct_ep])
    ctx = zmq.Context()
    try:
        pub = ctx.socket(zmq.PUB)
        pub.connect(ins)
        sub = ctx.socket(zmq.SUB)
        sub.connect(outs)
        sub.subscribe(b"raw.out")
        for _ in range(500):  # until both subscriptions reach the proxy
            pub.send_multipart([b"raw.in", bytes(8), FRAME])
            if sub.poll(20):
                sub.recv_multipart()
                break
        while sub.poll(50):
            sub.recv_multipart()
        proxy: list[int] = []
        for _ in range(trials):
            sent = time.monotonic_ns()
            pub.send_multipart([b"raw.in", sent.to_bytes(8, "little"), FRAME])
            _t, stamp, _p = sub.recv_multipart()
            recv_ns = time.monotonic_ns()
            echo_ns = int.from_bytes(stamp, "little")
            proxy += [echo_ns - sent, recv_ns - echo_ns]
        dealer = ctx.socket(zmq.DEALER)
        dealer.connect(direct_ep)
        direct: list[int] = []
        for i in range(trials + 50):
            sent = time.monotonic_ns()
            dealer.send_multipart([sent.to_bytes(8, "little"), FRAME])
            stamp, _p = dealer.recv_multipart()
            recv_ns = time.monotonic_ns()
            echo_ns = int.from_bytes(stamp, "little")
            if i >= 50:
                direct += [echo_ns - sent, recv_ns - echo_ns]
        return {"proxy": proxy, "direct": direct}
    finally:
        for proc in (echo_proxy, echo_direct):
            proc.kill()
            proc.wait()
        ctx.destroy(linger=0)


def reregistration(stack: Stack, actors: set[str]) -> dict[str, float]:
    stack.kill_broker()
    time.sleep(stack.heartbeat_ms / 1000 * 4)  # every actor has noticed the broker is gone
    launched = time.monotonic()
    stack.start_broker()
    while stack.actors(timeout_s=0.05) is None:
        if time.monotonic() - launched > 20:
            raise SystemExit("bench_bus: the restarted broker never answered")
    answering = time.monotonic()
    stack.wait_for(actors, timeout_s=20)
    back = time.monotonic()
    return {
        "actors": len(actors),
        "heartbeat_ms": stack.heartbeat_ms,
        "broker_start_s": round(answering - launched, 3),
        "all_reregistered_after_broker_up_s": round(back - answering, 3),
    }


def _loop_name() -> str:
    try:
        version = importlib.metadata.version("uvloop")
    except importlib.metadata.PackageNotFoundError:
        return "asyncio"
    return f"uvloop {version}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=2000, help="ping-pongs per path")
    parser.add_argument("--throughput", type=int, default=20000, help="frames for throughput")
    parser.add_argument("--actors", type=int, default=4, help="actors in the restart test")
    parser.add_argument("--heartbeat-ms", type=int, default=1000)
    parser.add_argument(
        "--codec-iterations", type=int, default=20000, help="round trips per message and codec"
    )
    parser.add_argument("--codec-only", action="store_true", help="only the codec section")
    parser.add_argument("--quick", action="store_true", help="small run (CI smoke test)")
    parser.add_argument("--raw-echo", nargs="+", help=argparse.SUPPRESS)
    parser.add_argument("--codec-echo", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.raw_echo:
        raw_echo(args.raw_echo[0], args.raw_echo[1:])
        return
    if args.codec_echo:
        bus_codecs.echo(args.codec_echo)
        return
    if args.quick:
        args.trials, args.throughput, args.actors = 200, 2000, 2
        args.codec_iterations = 1000
    if args.codec_only:
        print(json.dumps({"benchmark": "bench_bus", **_machine(), **_codec(args)}, indent=2))
        return
    stack = Stack(args.heartbeat_ms)
    try:
        stack.start_broker()
        # One echo for the hop tests (every loopback answers loopback.in), more for the restart.
        stack.start_loopback("bench-loop-0")
        stack.wait_for({"bench-loop-0"}, timeout_s=30)
        log("stack up: broker + 1 loopback actor; raw pyzmq baseline")
        raw = raw_hops(stack, args.trials)
        log("duplex actor hops")
        ours = lifecycle.run(duplex_hops(stack, args.trials, args.throughput))
        ids = {f"bench-loop-{i}" for i in range(args.actors)}
        for actor_id in sorted(ids - {"bench-loop-0"}):
            stack.start_loopback(actor_id)
        stack.wait_for(ids, timeout_s=30)
        log(f"broker restart with {args.actors} actors")
        restart = reregistration(stack, ids)
    finally:
        stack.close()
    result: dict[str, Any] = {
        "benchmark": "bench_bus",
        **_machine(),
        "payload_bytes": len(FRAME),
        "trials": args.trials,
    }
    for path in ("proxy", "direct"):
        duplex_s, raw_s = summary_us(ours[path]), summary_us(raw[path])
        result[f"hop_{path}"] = {
            "duplex": duplex_s,
            "raw_pyzmq": raw_s,
            "ratio_p50": round(duplex_s["p50_us"] / raw_s["p50_us"], 2),
            "ratio_p99": round(duplex_s["p99_us"] / raw_s["p99_us"], 2),
        }
    result["echo_msgs_per_s_via_proxy"] = ours["echo_msgs_per_s"]
    result["broker_restart"] = restart
    result["targets"] = {
        "hop_p99_under_1ms": result["hop_proxy"]["duplex"]["p99_us"] < 1000
        and result["hop_direct"]["duplex"]["p99_us"] < 1000,
        "within_1_5x_raw_p99": result["hop_proxy"]["ratio_p99"] <= 1.5
        and result["hop_direct"]["ratio_p99"] <= 1.5,
        "reregistered_within_2_heartbeats": restart["all_reregistered_after_broker_up_s"]
        <= 2 * args.heartbeat_ms / 1000,
    }
    result.update(_codec(args))
    print(json.dumps(result, indent=2))


def _machine() -> dict[str, Any]:
    return {
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "libzmq": zmq.zmq_version(),
            "event_loop": _loop_name(),
        }
    }


def _codec(args: argparse.Namespace) -> dict[str, Any]:
    log("codec: the runtime's against unvalidated msgpack, in process and in a DEALER/ROUTER hop")
    codec = bus_codecs.section(
        iterations=args.codec_iterations, hop_trials=args.trials, free_port=free_port
    )
    return {"codec": codec}


if __name__ == "__main__":
    main()
