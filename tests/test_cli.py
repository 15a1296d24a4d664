"""The duplex command's errors are clear and quick."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from bus.topology import TopologyError, load_topology, parse_topology
from tests.support import ROOT, duplex, free_port


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
