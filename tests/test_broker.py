"""Broker and actors as real processes: registration, purge, broker restart, bad input."""

from __future__ import annotations

import json
import os
import signal
import time
from datetime import datetime
from pathlib import Path

import msgpack
import pytest
import zmq

from bus.envelope import decode, encode
from bus.schema import decode_message, envelope_for
from bus.schema.system import Discover, Error, Ping, Pong, RegistrySnapshot
from tests.support import (
    BrokerPorts,
    Processes,
    actor_ids,
    free_port,
    metric,
    recv,
    status,
    wait_until,
)

HEARTBEAT_S = 0.3
LIVENESS = 3


def log_time(log: str, event: str, last: bool = False) -> float:
    """Wall time (seconds) of the first (or last) structured log line with ``event``."""
    stamps = [
        datetime.strptime(line.split(" ")[0], "%Y-%m-%dT%H:%M:%S.%fZ").timestamp()
        for line in log.splitlines()
        if f" {event}" in line and line[:4].isdigit()
    ]
    assert stamps, f"no {event!r} line in log"
    return stamps[-1] if last else stamps[0]


def start_stack(procs: Processes, tmp_path: Path, ports: BrokerPorts, actors: int):
    topo = str(ports.topology(tmp_path, heartbeat_ms=int(HEARTBEAT_S * 1000), liveness=LIVENESS))
    broker = procs.duplex("broker", "--topology", topo, name="broker")
    loops = [
        procs.duplex("run", "loopback", "--topology", topo, "--id", f"loop-{i}", name=f"loop{i}")
        for i in range(actors)
    ]
    return topo, broker, loops


def test_actors_register_are_purged_when_killed_and_return_after_broker_restart(
    procs: Processes, tmp_path: Path
) -> None:
    ports = BrokerPorts.pick()
    topo, broker, loops = start_stack(procs, tmp_path, ports, actors=2)
    wait_until(lambda: actor_ids(ports.endpoint) == {"loop-0", "loop-1"}, 15, "both actors listed")
    listed = status(ports.endpoint)
    assert listed is not None
    by_id = {a["actor_id"]: a for a in listed["actors"]}
    assert by_id["loop-0"]["kind"] == "loopback"
    assert by_id["loop-0"]["pid"] == loops[0].pid
    assert by_id["loop-0"]["endpoints"]["inbox"].startswith("tcp://127.0.0.1:")

    # Broker restart: same endpoints, new process; actors re-register on their own.
    broker.send_signal(signal.SIGKILL)
    broker.wait(timeout=5)
    time.sleep(HEARTBEAT_S * LIVENESS + 0.3)  # long enough for the actors to notice
    broker = procs.duplex("broker", "--topology", topo, name="broker2")
    wait_until(lambda: actor_ids(ports.endpoint) == {"loop-0", "loop-1"}, 10, "re-registration")
    # Each actor is back within two heartbeat intervals of the new broker being up.
    up = log_time(procs.log_of(broker), "broker started")
    for loop in loops:
        back = log_time(procs.log_of(loop), "registered", last=True)
        assert 0 <= back - up <= 2 * HEARTBEAT_S, back - up

    # kill -9 one actor: it is purged within interval x liveness + 1 s.
    os.kill(loops[0].pid, signal.SIGKILL)
    killed = time.monotonic()
    wait_until(
        lambda: actor_ids(ports.endpoint) == {"loop-1"},
        HEARTBEAT_S * LIVENESS + 1.0 + 1.0,
        "the killed actor to be purged",
    )
    assert time.monotonic() - killed <= HEARTBEAT_S * LIVENESS + 1.0 + 0.5

    # A graceful stop (SIGTERM) removes the actor at once rather than after the liveness window.
    loops[1].send_signal(signal.SIGTERM)
    assert loops[1].wait(timeout=5) == 0
    assert actor_ids(ports.endpoint) == set()
    assert "actor stopped" in procs.log_of(loops[1])


@pytest.mark.parametrize("woken_first", ["broker", "actors"])
def test_a_host_stall_longer_than_the_expiry_expires_nobody(
    procs: Processes, tmp_path: Path, woken_first: str
) -> None:
    """Every process stopped for longer than heartbeat x liveness (a stalled VM), then woken one
    by one in either order: nobody was silent while the others could listen, so the broker
    expires nobody and no actor drops its link (which would break every stream in flight)."""
    ports = BrokerPorts.pick()
    _topo, broker, loops = start_stack(procs, tmp_path, ports, actors=2)
    wait_until(lambda: actor_ids(ports.endpoint) == {"loop-0", "loop-1"}, 15, "both actors listed")
    time.sleep(2 * HEARTBEAT_S)
    for proc in (broker, *loops):
        proc.send_signal(signal.SIGSTOP)
    time.sleep(3 * HEARTBEAT_S * LIVENESS)
    order = (broker, *loops) if woken_first == "broker" else (*loops, broker)
    for proc in order:
        proc.send_signal(signal.SIGCONT)
        time.sleep(HEARTBEAT_S / 2)
    time.sleep(2 * HEARTBEAT_S * LIVENESS)  # time enough for an expiry or a reconnect to show
    assert actor_ids(ports.endpoint) == {"loop-0", "loop-1"}
    assert "actor expired" not in procs.log_of(broker)
    assert "broker stalled" in procs.log_of(broker)
    for loop in loops:
        assert "broker silent" not in procs.log_of(loop)
        assert procs.log_of(loop).count(" registered ") == 1


def test_broker_counts_garbage_and_keeps_serving(
    procs: Processes, tmp_path: Path, zctx: zmq.Context
) -> None:
    ports = BrokerPorts.pick()
    topo = ports.topology(tmp_path)
    metrics_port = free_port()
    broker = procs.duplex(
        "broker", "--topology", str(topo), "--metrics-port", str(metrics_port), name="broker"
    )
    metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
    wait_until(lambda: status(ports.endpoint) is not None, 15, "broker up")

    sock = zctx.socket(zmq.DEALER)
    sock.linger = 0
    sock.connect(ports.endpoint)
    garbage = [
        [os.urandom(64)],  # random bytes
        [msgpack.packb([2, "ping", "", "i", "s", 1, 1, "", {}])],  # wrong version
        [msgpack.packb([1, "ping", "", "i", "s", 1, 1, "", {}]), b"\0" * (2 * 1024 * 1024)],
        [*encode(envelope_for(Ping()))[:1], b"x", b"y"],  # too many frames
        [msgpack.packb([1, "no.such.type", "", "i", "s", 1, 1, "", {}])],  # unknown type
        [msgpack.packb([1, "discover", "", "i", "s", 1, 1, "", {"kind": 7}])],  # bad field
        # unknown fields named by a str and by bytes (found by tests/test_codec_properties.py:
        # sorting them for the error message raised TypeError and killed the broker)
        [msgpack.packb([1, "ping", "", "i", "s", 1, 1, "", {"a": 1, b"b": 2}])],
    ]
    for frames in garbage:
        sock.send_multipart(frames)
    codes = []
    for _ in garbage:
        reply = decode_message(decode(recv(sock)))
        assert isinstance(reply, Error)
        codes.append(reply.code)
    assert codes.count("UNSUPPORTED_TYPE") == 1 and codes.count("INVALID_MESSAGE") == 6

    wait_until(
        lambda: metric(metrics_url, "duplex_messages_invalid_total") >= len(garbage),
        5,
        "invalid messages counted",
    )
    assert metric(metrics_url, "duplex_messages_invalid_total", reason="oversized") == 1
    assert metric(metrics_url, "duplex_messages_invalid_total", reason="bad_version") == 1
    assert metric(metrics_url, "duplex_messages_invalid_total", reason="unknown_type") == 1

    # Still serving, on the same socket and on new ones.
    ping = envelope_for(Ping())
    sock.send_multipart(encode(ping))
    pong = decode(recv(sock))
    assert isinstance(decode_message(pong), Pong) and pong.reply_to == ping.id
    sock.send_multipart(encode(envelope_for(Discover())))
    assert isinstance(decode_message(decode(recv(sock))), RegistrySnapshot)
    assert broker.poll() is None
    assert "invalid message dropped" in procs.log_of(broker)


def test_a_flooding_client_is_rate_limited_and_others_are_still_served(
    procs: Processes, tmp_path: Path, zctx: zmq.Context
) -> None:
    ports = BrokerPorts.pick()
    metrics_port = free_port()
    procs.duplex(
        "broker",
        "--topology",
        str(ports.topology(tmp_path)),
        "--metrics-port",
        str(metrics_port),
        name="broker",
    )
    wait_until(lambda: status(ports.endpoint) is not None, 15, "broker up")
    flooder = zctx.socket(zmq.DEALER)
    flooder.linger = 0
    flooder.connect(ports.endpoint)
    for _ in range(5000):
        flooder.send_multipart(encode(envelope_for(Ping())))
    url = f"http://127.0.0.1:{metrics_port}/metrics"
    wait_until(lambda: metric(url, "duplex_broker_rate_limited_total") > 3000, 10, "drops counted")
    answered = 0
    while flooder.poll(200):
        flooder.recv_multipart()
        answered += 1
    assert 1000 <= answered < 2000  # the burst, plus what refilled while the flood arrived
    polite = zctx.socket(zmq.DEALER)
    polite.linger = 0
    polite.connect(ports.endpoint)
    ping = envelope_for(Ping())
    polite.send_multipart(encode(ping))
    assert decode(recv(polite)).reply_to == ping.id


def test_status_watch_prints_registrations_and_changes_as_they_happen(
    procs: Processes, tmp_path: Path
) -> None:
    ports = BrokerPorts.pick()
    topo = str(ports.topology(tmp_path))
    procs.duplex("broker", "--topology", topo, name="broker")
    first = procs.duplex("run", "loopback", "--topology", topo, "--id", "w-1", name="w1")
    wait_until(lambda: actor_ids(ports.endpoint) == {"w-1"}, 15, "w-1 registered")
    watcher = procs.duplex("status", "--watch", "--json", "--broker", ports.endpoint, name="watch")

    def changes() -> list[tuple[str, str]]:
        lines = procs.log_of(watcher).splitlines()
        return [(d["change"], d["actor_id"]) for d in map(json.loads, lines) if "change" in d]

    wait_until(lambda: ("added", "w-1") in changes(), 10, "the live actor listed")
    procs.duplex("run", "loopback", "--topology", topo, "--id", "w-2", name="w2")
    wait_until(lambda: ("added", "w-2") in changes(), 10, "the new actor announced")
    first.send_signal(signal.SIGTERM)
    wait_until(lambda: ("removed", "w-1") in changes(), 10, "the leaving actor announced")
    assert changes()[0] == ("added", "w-1")
