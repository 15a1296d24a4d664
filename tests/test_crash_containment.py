"""``duplex run``'s watcher: a crashed actor is dropped from the registry at once and restarted
(counting its restarts, naming its predecessor), a crash loop gives up, a stop still stops.
Real broker and actor processes, hard timeouts."""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Collection
from pathlib import Path

import pytest
import zmq

from bus.client import BrokerClient
from bus.envelope import decode, encode
from bus.errors import BusError, RemoteError
from bus.registry import Registry
from bus.schema import decode_message, envelope_for
from bus.schema.system import (
    REGISTRY_TOPIC,
    Gone,
    Ready,
    Registered,
    Registration,
    RegistryChange,
    RegistryEvent,
)
from bus.topology import CurveConfig, load_topology
from tests.support import (
    BrokerPorts,
    Processes,
    duplex,
    free_port,
    metric,
    recv,
    status,
    wait_until,
)

pytestmark = pytest.mark.timeout(60)

EXPIRY_S = 5.0
"""heartbeat 1 s x liveness 5: what a dead actor would cost without ``gone``."""


def start_broker(procs: Processes, tmp: Path) -> tuple[BrokerPorts, str]:
    ports = BrokerPorts.pick()
    topo = str(ports.topology(tmp, heartbeat_ms=1000, liveness=5))
    procs.duplex("broker", "--topology", topo, name="broker")
    wait_until(lambda: live(ports.endpoint) is not None, 15, "the broker up")
    return ports, topo


def live(endpoint: str, curve: CurveConfig | None = None) -> dict[str, Registration] | None:
    """The registry by actor id, or None while the broker does not answer."""
    try:
        with BrokerClient(endpoint, timeout_s=0.5, curve_config=curve) as client:
            return {r.actor_id: r for r in client.discover().actors}
    except BusError:
        return None


def the_actor(endpoint: str, but_not: Collection[str] = ()) -> Registration | None:
    """The one live registration whose id is not in ``but_not``, if there is one."""
    found = [r for r in (live(endpoint) or {}).values() if r.actor_id not in but_not]
    return found[0] if len(found) == 1 else None


def registry_events(zctx: zmq.Context[zmq.Socket[bytes]], ports: BrokerPorts) -> zmq.Socket[bytes]:
    sub = zctx.socket(zmq.SUB)
    sub.connect(f"tcp://127.0.0.1:{ports.events_out}")
    sub.subscribe(REGISTRY_TOPIC)
    return sub


def next_events(sub: zmq.Socket[bytes], count: int, timeout: float = 5.0) -> list[RegistryEvent]:
    events = []
    while len(events) < count:
        _topic, *frames = recv(sub, timeout)
        event = decode_message(decode(frames))
        assert isinstance(event, RegistryEvent)
        events.append(event)
    return events


def changes_until(
    sub: zmq.Socket[bytes], last: tuple[RegistryChange, str]
) -> list[tuple[RegistryChange, str, str]]:
    """(change, actor id, reason) of each registry event, up to and with ``last``."""
    seen: list[tuple[RegistryChange, str, str]] = []
    while not seen or seen[-1][:2] != last:
        (event,) = next_events(sub, 1)
        seen.append((event.change, event.registration.actor_id, event.reason))
    return seen


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_killed_actor_is_dropped_at_once_and_its_restart_names_it(
    procs: Processes, tmp_path: Path, zctx: zmq.Context[zmq.Socket[bytes]]
) -> None:
    ports, topo = start_broker(procs, tmp_path)
    sub = registry_events(zctx, ports)
    watcher = procs.duplex("run", "loopback", "--topology", topo, name="watcher", watched=True)
    first = wait_until(lambda: the_actor(ports.endpoint), 15, "the actor registered")
    assert first.pid != watcher.pid and (first.restarts or 0) == 0
    assert first.actor_id.startswith(f"loopback-{first.host}-{watcher.pid}-")

    os.kill(first.pid, signal.SIGKILL)
    killed = time.monotonic()
    wait_until(
        lambda: first.actor_id not in (live(ports.endpoint) or {first.actor_id: 0}), 3, "drop"
    )
    # The watcher's `gone`, not the expiry: well inside EXPIRY_S (1.03 s once on a loaded CI
    # machine), and the REMOVED change below names the exit.
    dropped_s = time.monotonic() - killed
    assert dropped_s < 3.0 < EXPIRY_S, dropped_s
    second = wait_until(lambda: the_actor(ports.endpoint), 15, "the successor registered")
    assert second.actor_id != first.actor_id and second.pid != first.pid
    assert (second.restarts, second.replaces) == (1, first.actor_id)
    changes = changes_until(sub, (RegistryChange.ADDED, second.actor_id))
    assert [c for c in changes if c != (RegistryChange.ADDED, first.actor_id, "")] == [
        (RegistryChange.REMOVED, first.actor_id, "exited"),
        (RegistryChange.ADDED, second.actor_id, ""),
    ]

    assert watcher.poll() is None
    listed = status(ports.endpoint)
    assert listed is not None
    assert [(a["actor_id"], a["restarts"]) for a in listed["actors"]] == [(second.actor_id, 1)]
    assert metric(second.endpoints["metrics"], "duplex_actor_restarts", kind="loopback") == 1
    table = duplex("status", "--broker", ports.endpoint).stdout.splitlines()
    assert table[1].split()[5] == "RESTARTS" and table[2].split()[5] == "1", table
    log = procs.log_of(watcher)
    assert "actor crashed actor_id=" in log and 'how="signal SIGKILL"' in log, log
    assert "crashes=1" in log and "restarts=1" in log, log


def test_with_curve_and_a_given_id_the_successor_keeps_the_id_and_gone_still_gets_through(
    procs: Processes, tmp_path: Path
) -> None:
    keys = tmp_path / "keys"
    assert duplex("keys", "broker", "--dir", str(keys)).returncode == 0
    made = duplex("keys", "actor", "--dir", str(keys), "--allow", str(keys / "allowed"))
    assert made.returncode == 0, made.stderr
    ports = BrokerPorts.pick()
    curve = f"curve:\n  enabled: true\n  keys_dir: {keys}\n  allow_dir: {keys / 'allowed'}\n"
    topo = ports.topology(tmp_path, heartbeat_ms=1000, liveness=5, extra=curve)
    secured = load_topology(topo).broker.curve
    broker = procs.duplex("broker", "--topology", str(topo), name="broker")
    watcher = procs.duplex(
        "run", "loopback", "--topology", str(topo), "--id", "fixed", name="w", watched=True
    )
    first = wait_until(lambda: (live(ports.endpoint, secured) or {}).get("fixed"), 15, "fixed")
    os.kill(first.pid, signal.SIGKILL)

    def successor() -> Registration | None:
        found = (live(ports.endpoint, secured) or {}).get("fixed")
        return found if found is not None and found.pid != first.pid else None

    second = wait_until(successor, 15, "the successor registered")
    assert (second.restarts, second.replaces) == (1, "fixed")
    # The watcher's gone got through CURVE (a successor's READY would have dropped it too).
    assert f"actor exited actor_id=fixed pid={first.pid}" in procs.log_of(broker)
    assert "broker dropped it actor_id=fixed" in procs.log_of(watcher)


def test_a_crash_loop_ends_the_watcher_with_status_1_and_says_so(
    procs: Processes, tmp_path: Path
) -> None:
    ports, topo = start_broker(procs, tmp_path)
    watcher = procs.duplex(
        "run", "loopback", "--topology", topo, "--max-crashes", "2", "--backoff", "0.1",
        name="watcher", watched=True,
    )  # fmt: skip
    killed: set[str] = set()

    def next_child() -> Registration | bool:
        return the_actor(ports.endpoint, but_not=killed) or watcher.poll() is not None

    while isinstance(actor := wait_until(next_child, 15, "a new child, or the end"), Registration):
        assert len(killed) < 4, killed
        os.kill(actor.pid, signal.SIGKILL)
        killed.add(actor.actor_id)
        wait_until(lambda: not killed & set(live(ports.endpoint) or {}), 2, "the drop")
    assert watcher.wait(timeout=10) == 1
    assert len(killed) == 3  # two crashes tolerated within the window, the third is one too many
    log = procs.log_of(watcher)
    assert "error duplex.watcher crash loop, giving up kind=loopback crashes=3" in log, log
    assert "delay_s=0.1" in log and "delay_s=0.2" in log, log  # the backoff doubles
    assert live(ports.endpoint) == {}


def test_an_actor_that_cannot_start_is_not_retried(tmp_path: Path) -> None:
    started = time.monotonic()
    result = duplex(
        "run", "loopback", "--broker", "tcp://127.0.0.1:1", "--bind", "tcp://999.0.0.1:*"
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("Error: loopback could not start:")
    assert result.stderr.count("actor started") == 1 and "restarting" not in result.stderr
    assert time.monotonic() - started < 10


def test_sigterm_to_the_watcher_stops_the_actor_and_the_watcher_with_status_0(
    procs: Processes, tmp_path: Path
) -> None:
    ports, topo = start_broker(procs, tmp_path)
    watcher = procs.duplex("run", "loopback", "--topology", topo, name="watcher", watched=True)
    actor = wait_until(lambda: the_actor(ports.endpoint), 15, "the actor registered")
    watcher.send_signal(signal.SIGTERM)
    assert watcher.wait(timeout=10) == 0
    assert not alive(actor.pid)
    assert live(ports.endpoint) == {}  # it said disconnect on its way out
    log = procs.log_of(watcher)
    assert "actor stopped" in log and "crashed" not in log and "restarting" not in log, log


def test_a_stop_during_the_backoff_ends_the_watcher_at_once(procs: Processes) -> None:
    nowhere = f"tcp://127.0.0.1:{free_port()}"  # no broker: gone times out, the restart goes on
    watcher = procs.duplex(
        "run", "loopback", "--broker", nowhere, "--metrics-port", "0", "--backoff", "30",
        name="watcher", watched=True,
    )  # fmt: skip
    started = wait_until(
        lambda: re.search(r"actor started .* pid=(\d+)", procs.log_of(watcher)), 15, "the child"
    )
    wait_until(lambda: "actor starting" in procs.log_of(watcher), 15, "the actor running")
    os.kill(int(started[1]), signal.SIGKILL)
    wait_until(lambda: "restarting" in procs.log_of(watcher), 5, "the backoff")
    asked = time.monotonic()
    watcher.send_signal(signal.SIGTERM)
    assert watcher.wait(timeout=10) == 0
    assert time.monotonic() - asked < 3  # not the 30 s backoff
    log = procs.log_of(watcher)
    assert "broker not told" in log and log.count("actor started") == 1, log


def test_a_child_that_does_not_stop_is_killed_after_the_stop_timeout(
    procs: Processes, tmp_path: Path
) -> None:
    ports, topo = start_broker(procs, tmp_path)
    watcher = procs.duplex(
        "run", "loopback", "--topology", topo, "--stop-timeout", "1", name="w", watched=True
    )
    actor = wait_until(lambda: the_actor(ports.endpoint), 15, "the actor registered")
    os.kill(actor.pid, signal.SIGSTOP)  # it cannot act on the SIGTERM passed on
    asked = time.monotonic()
    watcher.send_signal(signal.SIGTERM)
    assert watcher.wait(timeout=10) == 0
    assert 1.0 <= time.monotonic() - asked < 5
    assert not alive(actor.pid)
    log = procs.log_of(watcher)
    assert "actor did not stop in time, killing it" in log, log
    assert "crashed" not in log, log  # the SIGKILL was the watcher's own


def test_the_actor_dies_with_its_watcher(procs: Processes, tmp_path: Path) -> None:
    ports, topo = start_broker(procs, tmp_path)
    watcher = procs.duplex("run", "loopback", "--topology", topo, name="watcher", watched=True)
    actor = wait_until(lambda: the_actor(ports.endpoint), 15, "the actor registered")
    watcher.send_signal(signal.SIGKILL)
    watcher.wait(timeout=5)
    try:
        wait_until(lambda: not alive(actor.pid), 5, "the orphaned actor to die")
    finally:
        if alive(actor.pid):  # the fixture only reaps what it started: the watcher
            os.kill(actor.pid, signal.SIGKILL)


def test_no_restart_runs_the_actor_in_this_process_as_before(
    procs: Processes, tmp_path: Path
) -> None:
    ports, topo = start_broker(procs, tmp_path)
    proc = procs.duplex("run", "loopback", "--topology", topo, "--id", "here", name="here")
    assert "--no-restart" in proc.args  # type: ignore[operator]
    actor = wait_until(lambda: the_actor(ports.endpoint), 15, "the actor registered")
    assert (actor.actor_id, actor.pid) == ("here", proc.pid)
    assert (actor.restarts or 0, actor.replaces or "") == (0, "")
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=5) == -signal.SIGKILL  # nobody restarts it
    assert "duplex.watcher" not in procs.log_of(proc)


# ---------------------------------------------------------------------- the broker's side


def ready(
    zctx: zmq.Context[zmq.Socket[bytes]], endpoint: str, reg: Registration
) -> zmq.Socket[bytes]:
    """A DEALER that registered ``reg`` (the broker answered ``registered``)."""
    dealer = zctx.socket(zmq.DEALER)
    dealer.connect(endpoint)
    dealer.send_multipart(encode(envelope_for(Ready(registration=reg))))
    assert isinstance(decode_message(decode(recv(dealer))), Registered)
    return dealer


def test_a_ready_that_replaces_a_live_actor_removes_it_first(
    procs: Processes, tmp_path: Path, zctx: zmq.Context[zmq.Socket[bytes]]
) -> None:
    ports, _topo = start_broker(procs, tmp_path)
    sub = registry_events(zctx, ports)
    old = Registration(actor_id="a-1", kind="loopback", host="h", pid=101)
    dealer = ready(zctx, ports.endpoint, old)
    deadline = time.monotonic() + 5
    while not sub.poll(200):  # READY again (an update) until the subscription shows it through
        assert time.monotonic() < deadline, "no registry event reached the subscriber"
        dealer.send_multipart(encode(envelope_for(Ready(registration=old))))
        recv(dealer)
    while sub.poll(200):
        sub.recv_multipart()
    new = Registration(
        actor_id="a-2", kind="loopback", host="h", pid=102, restarts=1, replaces="a-1"
    )
    again = ready(zctx, ports.endpoint, new)
    changes = [(e.change, e.registration.actor_id, e.reason) for e in next_events(sub, 2)]
    assert changes == [
        (RegistryChange.REMOVED, "a-1", "replaced"),
        (RegistryChange.ADDED, "a-2", ""),
    ]
    assert set(live(ports.endpoint) or {}) == {"a-2"}
    # READY again from the same process (after a broker restart) removes nothing.
    again.send_multipart(encode(envelope_for(Ready(registration=new))))
    assert isinstance(decode_message(decode(recv(again))), Registered)
    (event,) = next_events(sub, 1)
    assert (event.change, event.registration.actor_id) == (RegistryChange.UPDATED, "a-2")


def test_gone_drops_an_actor_only_when_its_pid_matches(
    procs: Processes, tmp_path: Path, zctx: zmq.Context[zmq.Socket[bytes]]
) -> None:
    ports, _topo = start_broker(procs, tmp_path)
    ready(zctx, ports.endpoint, Registration(actor_id="b", kind="loopback", host="h", pid=201))
    with BrokerClient(ports.endpoint, timeout_s=2) as client:
        with pytest.raises(RemoteError, match="NOT_REGISTERED"):
            client.request(Gone(actor_id="b", pid=999, reason="signal SIGKILL"))
        assert set(live(ports.endpoint) or {}) == {"b"}
        with pytest.raises(RemoteError, match="NOT_REGISTERED"):
            client.request(Gone(actor_id="nobody", pid=201))
        event = client.request(Gone(actor_id="b", pid=201, reason="signal SIGKILL"))
    assert isinstance(event, RegistryEvent)
    assert (event.change, event.registration.actor_id, event.reason) == (
        RegistryChange.REMOVED,
        "b",
        "exited",
    )
    assert live(ports.endpoint) == {}


def test_the_registry_keeps_a_process_that_names_its_own_id_as_predecessor() -> None:
    """With ``--id`` given the successor has its predecessor's id: a READY sent again by the
    successor itself must not remove it."""
    registry = Registry("e", expiry_s=3.0)
    first = Registration(actor_id="x", kind="k", host="h", pid=1)
    registry.register(first, b"1", 0.0)
    successor = Registration(actor_id="x", kind="k", host="h", pid=2, restarts=1, replaces="x")
    removed = registry.remove_predecessor(successor)
    assert removed is not None and removed.reason == "replaced"
    registry.register(successor, b"2", 0.0)
    assert registry.remove_predecessor(successor) is None
    assert registry.remove_actor("x", 1, "exited") is None  # a late gone for the first
    assert [e.registration.pid for e in registry.entries()] == [2]
