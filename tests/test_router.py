"""The router: rules as plain functions, then a real router choosing among real workers."""

from __future__ import annotations

import os
import shutil
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from actors.router import Health, Selector
from bus.schema.routing import RouteAssignment, RouteRelease, RouteRequest
from bus.schema.system import Error, Registration
from tests.support import BrokerPorts, Processes, status, wait_until
from transports.tts_client import TtsClient

VOICEPACKS = Path(__file__).resolve().parent.parent / "voicepacks"
MOCK = "mock-440hz"
PIPER = "piper-en_US-joe-medium"


def worker(
    actor_id: str,
    load: float = 0.0,
    voices: tuple[str, ...] = ("joe", "tone"),
    resident: tuple[str, ...] = ("joe",),
    device: str = "cpu",
) -> Registration:
    return Registration(
        actor_id=actor_id,
        kind="tts_worker",
        host="h",
        pid=1,
        load=load,
        endpoints={"inbox": f"tcp://127.0.0.1:1/{actor_id}"},
        resident_models=resident,
        capabilities={
            "voices": list(voices),
            "languages": ["en_US"],
            "default_voice": "joe",
            "device": device,
        },
    )


def test_only_live_unsaturated_workers_with_the_voice_are_eligible() -> None:
    sel = Selector()
    workers = [worker("a", voices=("joe",)), worker("b", load=1.0), worker("c"), worker("d")]
    sel.health["d"] = Health(failures=2)
    picked = sel.choose(workers, RouteRequest(voice="tone"), "s1")
    assert picked is not None and picked.worker.actor_id == "c"  # a lacks it, b full, d stale
    assert picked.voice == "tone" and not picked.resident
    assert sel.choose(workers, RouteRequest(voice="nobody"), "s2") is None
    assert sel.eligible(workers, RouteRequest(voice="nobody"), busy_too=True) == []
    without_c = [w for w in workers if w.actor_id != "c"]  # only b, saturated, has the voice
    assert sel.choose(without_c, RouteRequest(voice="tone"), "s3") is None
    eligible = sel.eligible(without_c, RouteRequest(voice="tone"), busy_too=True)
    assert [w.actor_id for w in eligible] == ["b"]


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


def test_a_preferred_device_class_comes_first_while_one_of_it_can_take_the_request() -> None:
    sel = Selector(prefer_device="cuda")
    workers = [worker("cpu-idle"), worker("gpu-busy", load=0.6, device="cuda:1")]
    pick = sel.choose(workers, RouteRequest(), "s1")
    assert pick is not None and pick.worker.actor_id == "gpu-busy"  # though the CPU one idles
    workers[1] = worker("gpu-busy", load=1.0, device="cuda:1")  # saturated: passed over
    pick = sel.choose(workers, RouteRequest(), "s2")
    assert pick is not None and pick.worker.actor_id == "cpu-idle"
    plain = Selector().choose([worker("cpu-idle"), worker("gpu", load=0.6, device="cuda:0")],
                              RouteRequest(), "s3")  # fmt: skip
    assert plain is not None and plain.worker.actor_id == "cpu-idle"  # no preference: load


def test_round_robin_and_least_latency() -> None:
    workers = [worker("a"), worker("b"), worker("c")]
    rr = Selector(strategy="round_robin")
    picks = [rr.choose(workers, RouteRequest(), f"s{i}") for i in range(6)]
    assert [p.worker.actor_id for p in picks if p] == ["a", "b", "c", "a", "b", "c"]
    fast = Selector(strategy="least_latency")
    fast.health.update({"a": Health(0.020), "b": Health(0.002), "c": Health(0.010)})
    pick = fast.choose(workers, RouteRequest(), "s")
    assert pick is not None and pick.worker.actor_id == "b"


@pytest.mark.timeout(90)
def test_router_routes_to_live_workers_with_the_voice_and_reroutes_when_one_dies(
    procs: Processes, tmp_path: Path
) -> None:
    ports = BrokerPorts.pick()
    # Room for every request of the test in a worker's recent hand-outs (the router counts
    # them as load until the registry catches up), so none is answered BUSY.
    worker_settings = (
        "actors:\n  tts_worker:\n    default_voice: mock-440hz\n    max_streams: 100\n"
    )
    extra = "  router:\n    ping_interval_s: 0.2\n"
    topo = str(ports.topology(tmp_path, extra=worker_settings + extra))
    # w2 has only the mock voice: the router must never hand it a request for Piper's voice.
    mock_only = tmp_path / "mock_only"
    shutil.copytree(VOICEPACKS / MOCK, mock_only / MOCK)
    (tmp_path / "mock_only_worker").mkdir()
    topo_mock_only = str(
        ports.topology(
            tmp_path / "mock_only_worker",
            extra=worker_settings + f"    voicepacks: [{mock_only}]\n" + extra,
        )
    )
    procs.duplex("broker", "--topology", topo, name="broker")
    router = procs.duplex("run", "router", "--topology", topo, "--id", "router", name="router")
    workers = {
        wid: procs.duplex("run", "tts_worker", "--topology", wtopo, "--id", wid, name=wid)
        for wid, wtopo in (("w1", topo), ("w2", topo_mock_only))
    }

    def registered() -> dict[str, dict[str, Any]]:
        data = status(ports.endpoint) or {"actors": []}
        return {a["actor_id"]: a for a in data["actors"]}

    def inbox(actor_id: str) -> str | None:
        actor = registered().get(actor_id)
        return actor["endpoints"]["inbox"] if actor else None

    def both_workers() -> dict[str, dict[str, Any]] | None:
        found = registered()
        return found if {"w1", "w2"} <= set(found) else None

    router_inbox = wait_until(lambda: inbox("router"), 30, "router registered")
    actors = wait_until(both_workers, 60, "both workers registered")
    assert router_inbox is not None and actors is not None
    assert PIPER in actors["w1"]["capabilities"]["voices"]
    assert actors["w2"]["capabilities"]["voices"] == [MOCK]
    assert router.poll() is None
    with TtsClient(router_inbox, session="call-1") as client:

        def route(voice: str = "", session: str = "call-1") -> RouteAssignment | Error:
            client.send(RouteRequest(voice=voice), session=session)
            msg = client.recv(timeout_s=5)[1]
            assert isinstance(msg, RouteAssignment | Error), msg
            return msg

        # Wait until the router's mirror holds both workers (the mock voice is on both).
        wait_until(
            lambda: len({_worker_of(route(session=f"warm-{i}")) for i in range(8)} - {""}) == 2,
            10,
            "routes to both workers",
        )
        first = route()
        assert isinstance(first, RouteAssignment) and first.worker_id in workers
        assert first.voice == MOCK  # no voice asked: the worker's default
        assert _worker_of(route()) == first.worker_id  # affinity
        # Sessions that all want Piper's voice: every one goes to w1, the only worker with it
        # (without the voice filter, least-loaded spreading would send half of them to w2).
        piper = [route(voice=PIPER, session=f"piper-{i}") for i in range(6)]
        assert [(_worker_of(r), getattr(r, "voice", "")) for r in piper] == [("w1", PIPER)] * 6
        refused = route(voice="no-such-voice", session="nobody")
        assert isinstance(refused, Error) and refused.code == "NO_WORKER"
        assert "'no-such-voice'" in refused.message, refused.message  # says which voice

        os.kill(workers[first.worker_id].pid, signal.SIGKILL)
        killed = time.monotonic()
        moved = wait_until(
            lambda: _assigned(route(), not_worker=first.worker_id),
            10,
            "a route to the surviving worker",
        )
        assert moved is not None and moved.worker_id != first.worker_id
        assert time.monotonic() - killed < 3.0 + 1.0  # stale by ping, or purged by the broker
        client.send(RouteRelease())
        client.send(RouteRequest())
        assert isinstance(client.recv(timeout_s=5)[1], RouteAssignment)


def _worker_of(msg: RouteAssignment | Error) -> str:
    return msg.worker_id if isinstance(msg, RouteAssignment) else ""


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
