"""The router: rules as plain functions, then a real router choosing among real workers."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from actors.router import Health, Selector
from bus.schema.routing import RouteAssignment, RouteRelease, RouteRequest
from bus.schema.system import Error, Registration
from tests.support import BrokerPorts, Processes, status, wait_until
from transports.tts_client import TtsClient


def worker(
    actor_id: str,
    load: float = 0.0,
    voices: tuple[str, ...] = ("joe", "tone"),
    resident: tuple[str, ...] = ("joe",),
) -> Registration:
    return Registration(
        actor_id=actor_id,
        kind="tts_worker",
        host="h",
        pid=1,
        load=load,
        endpoints={"inbox": f"tcp://127.0.0.1:1/{actor_id}"},
        resident_models=resident,
        capabilities={"voices": list(voices), "languages": ["en_US"], "default_voice": "joe"},
    )


def test_voice_match_saturation_and_staleness() -> None:
    sel = Selector()
    workers = [worker("a", voices=("joe",)), worker("b", load=1.0), worker("c"), worker("d")]
    sel.health["d"] = Health(failures=2)
    picked = sel.choose(workers, RouteRequest(voice="tone"), "s1")
    assert picked is not None and picked.worker.actor_id == "c"  # a lacks it, b full, d stale
    assert picked.voice == "tone" and not picked.resident
    assert sel.choose(workers, RouteRequest(voice="nobody"), "s3") is None
    without_c = [w for w in workers if w.actor_id != "c"]
    assert sel.choose(without_c, RouteRequest(voice="tone"), "s2") is None
    tone = RouteRequest(voice="tone")  # only b, saturated, is left
    assert [w.actor_id for w in sel.eligible(without_c, tone, busy_too=True)] == ["b"]


def test_resident_first_then_least_loaded_and_affinity_until_the_worker_leaves() -> None:
    sel = Selector()
    workers = [worker("a", load=0.1, resident=()), worker("b", load=0.5), worker("c", load=0.3)]
    first = sel.choose(workers, RouteRequest(), "s1")
    assert first is not None and first.worker.actor_id == "c" and first.resident
    assert first.voice == "joe" and first.reason == "least_loaded"
    workers[2] = worker("c", load=0.8)  # plus the session just handed to it: still < 1
    again = sel.choose(workers, RouteRequest(), "s1")
    assert again is not None and again.worker.actor_id == "c" and again.reason == "affinity"
    sel.forget_worker("c")
    moved = sel.choose(workers[:2], RouteRequest(), "s1")
    assert moved is not None and moved.worker.actor_id == "b"


def test_round_robin_and_least_latency() -> None:
    workers = [worker("a"), worker("b"), worker("c")]
    rr = Selector(strategy="round_robin")
    picks = [rr.choose(workers, RouteRequest(), f"s{i}") for i in range(6)]
    assert [p.worker.actor_id for p in picks if p] == ["a", "b", "c", "a", "b", "c"]
    fast = Selector(strategy="least_latency")
    fast.health.update({"a": Health(0.020), "b": Health(0.002), "c": Health(0.010)})
    pick = fast.choose(workers, RouteRequest(), "s")
    assert pick is not None and pick.worker.actor_id == "b"


def test_router_routes_to_live_workers_and_reroutes_when_one_dies(
    procs: Processes, tmp_path: Path
) -> None:
    ports = BrokerPorts.pick()
    topo = str(
        ports.topology(
            tmp_path,
            extra=(
                "actors:\n  tts_worker:\n    default_voice: mock-440hz\n"
                "  router:\n    ping_interval_s: 0.2\n"
            ),
        )
    )
    procs.duplex("broker", "--topology", topo, name="broker")
    router = procs.duplex("run", "router", "--topology", topo, "--id", "router", name="router")
    workers = {
        wid: procs.duplex("run", "tts_worker", "--topology", topo, "--id", wid, name=wid)
        for wid in ("w1", "w2")
    }

    def inbox(actor_id: str) -> str | None:
        data = status(ports.endpoint) or {"actors": []}
        return next(
            (a["endpoints"]["inbox"] for a in data["actors"] if a["actor_id"] == actor_id), None
        )

    router_inbox = wait_until(lambda: inbox("router"), 30, "router registered")
    wait_until(lambda: inbox("w1") and inbox("w2"), 60, "both workers registered")
    assert router.poll() is None
    with TtsClient(router_inbox, session="call-1") as client:

        def route(**kw: object) -> RouteAssignment | Error:
            client.send(RouteRequest(**kw))  # type: ignore[arg-type]
            msg = client.recv(timeout_s=5)[1]
            assert isinstance(msg, RouteAssignment | Error), msg
            return msg

        first = wait_until(lambda: _assigned(route()), 10, "a route")
        assert first.worker_id in workers and first.voice == "mock-440hz"
        assert route().worker_id == first.worker_id  # affinity
        refused = route(voice="no-such-voice")
        assert isinstance(refused, Error) and refused.code == "NO_WORKER"

        os.kill(workers[first.worker_id].pid, signal.SIGKILL)
        killed = time.monotonic()
        moved = wait_until(
            lambda: _assigned(route(), not_worker=first.worker_id),
            10,
            "a route to the surviving worker",
        )
        assert moved.worker_id != first.worker_id
        assert time.monotonic() - killed < 3.0 + 1.0  # stale by ping, or purged by the broker
        client.send(RouteRelease())
        client.send(RouteRequest())
        assert isinstance(client.recv(timeout_s=5)[1], RouteAssignment)


def _assigned(msg: RouteAssignment | Error, not_worker: str = "") -> RouteAssignment | None:
    if isinstance(msg, RouteAssignment) and msg.worker_id != not_worker:
        return msg
    return None


def test_a_burst_of_requests_spreads_before_published_loads_catch_up() -> None:
    sel = Selector()
    workers = [worker("a"), worker("b")]  # both report load 0: the burst outruns the registry
    picks = [sel.choose(workers, RouteRequest(), f"s{i}") for i in range(10)]
    chosen = [p.worker.actor_id for p in picks if p]
    assert chosen.count("a") == chosen.count("b") == 5
