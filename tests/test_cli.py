"""The duplex command's errors are clear and quick."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from bus.topology import TopologyError, load_topology, parse_topology
from tests.support import (
    ROOT,
    BrokerPorts,
    Processes,
    duplex,
    free_port,
    metric,
    status,
    wait_until,
)


def test_status_without_a_broker_fails_clearly_within_its_timeout() -> None:
    started = time.monotonic()
    result = duplex("status", "--broker", f"tcp://127.0.0.1:{free_port()}", "--timeout", "0.5")
    assert result.returncode == 1
    assert "no answer from the broker" in result.stderr
    assert time.monotonic() - started < 10


def test_unknown_actor_and_bad_key_name_are_refused() -> None:
    result = duplex("run", "no-such-actor")
    assert result.returncode == 2 and "no-such-actor" in result.stderr
    result = duplex("keys", "../escape", "--dir", "/tmp")
    assert result.returncode == 2 and "letters, digits" in result.stderr


def test_bad_topology_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "topology.yaml"
    bad.write_text("broker: [1, 2\n")
    result = duplex("status", "--topology", str(bad))
    assert result.returncode == 1 and "not valid YAML" in result.stderr
    bad.write_text("broker:\n  heartbeat_sec: 3\n")
    result = duplex("status", "--topology", str(bad))
    assert result.returncode == 1 and "unknown broker settings" in result.stderr
    result = duplex("status", "--topology", str(tmp_path / "missing.yaml"))
    assert result.returncode == 1 and "cannot read topology" in result.stderr


def test_actor_config_merges_defaults_section_and_flags() -> None:
    topo = parse_topology(
        {
            "broker": {"control": "tcp://0.0.0.0:6000", "heartbeat_ms": 500},
            "defaults": {"bind": "tcp://127.0.0.1:*", "metrics_port": 0},
            "actors": {"loopback": {"metrics_port": 9999, "voice": "joe"}},
        }
    )
    cfg = topo.actor_config("loopback", bind="tcp://0.0.0.0:*", host=None)
    assert cfg.broker == "tcp://127.0.0.1:6000"  # a wildcard bind is dialled on loopback
    assert cfg.heartbeat_ms == 500 and cfg.metrics_port == 9999 and cfg.bind == "tcp://0.0.0.0:*"
    assert cfg.settings == {"voice": "joe"}
    with pytest.raises(TopologyError):
        parse_topology({"brokers": {}})
    with pytest.raises(TopologyError):
        parse_topology({"broker": {"heartbeat_ms": 1}})


def test_the_shipped_topology_loads() -> None:
    topo = load_topology(ROOT / "topology.yaml")
    assert topo.broker.control == "tcp://127.0.0.1:5550"
    assert not topo.broker.curve.enabled


def test_two_actors_of_a_kind_on_one_host_start_and_a_taken_flag_port_is_named(
    tmp_path: Path,
) -> None:
    """The kind's metrics port from topology.yaml is shared by every instance on the host: the
    second serves on a free port. A port given on the command line is the instance's own."""
    ports = BrokerPorts.pick()
    port = free_port()
    topology = str(
        ports.topology(tmp_path, extra=f"actors:\n  loopback:\n    metrics_port: {port}\n")
    )
    procs = Processes(tmp_path)
    try:
        procs.duplex("broker", "--topology", topology, name="broker")
        for n in (1, 2):
            procs.duplex("run", "loopback", "--topology", topology, "--id", f"loop-{n}", name="l")

        def both() -> list[str] | None:
            found = status(ports.endpoint) or {"actors": []}
            urls = [a["endpoints"].get("metrics", "") for a in found["actors"]]
            return urls if len(urls) == 2 else None

        urls = wait_until(both, 30, "two loopback actors")
        assert sorted(urls)[0] != sorted(urls)[1] and f"127.0.0.1:{port}/" in " ".join(urls)
        for url in urls:  # each serves its own metrics
            assert metric(url, "duplex_up", kind="loopback") == 1
        taken = duplex(
            "run", "loopback", "--topology", topology, "--metrics-port", str(port),
            "--no-restart", timeout=30,
        )  # fmt: skip
        assert taken.returncode != 0
        assert f"metrics port 127.0.0.1:{port} is in use" in taken.stderr, taken.stderr
    finally:
        procs.close()


def test_device_flags_resolve_report_and_refuse_clearly(tmp_path: Path) -> None:
    """``--device`` for the ASR and TTS workers: ``auto`` is the CPU where no runtime sees a
    GPU, the registration and ``duplex status`` say where each runs; ``cuda`` with no GPU, a
    bad name, or a kind without an engine are refused at start, naming why."""
    from adapters import devices

    ports = BrokerPorts.pick()
    topology = str(ports.topology(tmp_path))
    procs = Processes(tmp_path)
    try:
        procs.duplex("broker", "--topology", topology, name="broker")
        for kind in ("asr", "tts_worker"):
            procs.duplex("run", kind, "--topology", topology, "--device", "auto", name=kind)

        def both() -> dict[str, Any] | None:
            found = status(ports.endpoint) or {"actors": []}
            by_kind = {a["kind"]: a for a in found["actors"]}
            return by_kind if {"asr", "tts_worker"} <= set(by_kind) else None

        actors = wait_until(both, 90, "the ASR and a worker")
        expected = {
            "asr": "cuda:0" if devices.ctranslate2_gpus() else "cpu",
            "tts_worker": "cuda:0" if devices.onnxruntime_gpus() else "cpu",
        }
        for kind, device in expected.items():
            assert actors[kind]["capabilities"]["device"] == device, actors[kind]
        assert actors["asr"]["capabilities"]["compute_type"] == (
            "int8" if expected["asr"] == "cpu" else "float16"
        )
        table = duplex("status", "--broker", ports.endpoint).stdout
        assert "DEVICE" in table.splitlines()[1], table
        for kind, gpus in (
            ("asr", devices.ctranslate2_gpus()),
            ("tts_worker", devices.onnxruntime_gpus()),
        ):
            if gpus:
                continue  # a GPU here: cuda is served (checked above through auto)
            refused = duplex(
                "run", kind, "--topology", topology, "--device", "cuda", "--no-restart",
                timeout=60,
            )  # fmt: skip
            assert refused.returncode == 1, refused.stderr
            assert f"{kind} could not start: device cuda:" in refused.stderr, refused.stderr
            assert "sees no GPU" in refused.stderr
    finally:
        procs.close()
    bad = duplex("run", "asr", "--device", "gpu", "--no-restart")
    assert bad.returncode == 2 and "not cpu, cuda, cuda:N or auto" in bad.stderr, bad.stderr
    wrong_kind = duplex("run", "gateway", "--device", "cpu", "--no-restart")
    assert (
        wrong_kind.returncode == 2 and "--device applies to asr and tts_worker" in wrong_kind.stderr
    )
