"""``duplex up HOST`` starts exactly what topology.yaml's ``hosts:`` assigns to HOST (counts,
address, key pair, device) and stops it all on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.support import ROOT, BrokerPorts, duplex, status, wait_until


def topology(tmp: Path, ports: BrokerPorts) -> Path:
    return ports.topology(
        tmp,
        extra=(
            "hosts:\n"
            "  here:\n"
            "    address: 127.0.0.1\n"
            "    actors: {broker: 1, loopback: 2, router: 1}\n"
            "  gpu-box:\n"
            "    address: 10.9.8.7\n"
            "    bind: 0.0.0.0\n"
            "    actors: [tts_worker, asr, gateway]\n"
            "    device: cuda:1\n"
            "    actor_key: gpu-box\n"
        ),
    )


def test_dry_run_shows_each_hosts_commands_with_its_address_key_and_device(
    tmp_path: Path,
) -> None:
    path = topology(tmp_path, BrokerPorts.pick())
    out = duplex("up", "gpu-box", "--topology", str(path), "--dry-run")
    assert out.returncode == 0, out.stderr
    lines = dict(line.split(": ", 1) for line in out.stdout.splitlines())
    assert list(lines) == ["tts_worker", "asr", "gateway"]
    for kind, argv in lines.items():
        assert f" run {kind} " in argv and "--host gpu-box" in argv
        assert "--advertise-host 10.9.8.7" in argv and "--bind 'tcp://0.0.0.0:*'" in argv
        assert "--actor-key gpu-box" in argv
        assert ("--device cuda:1" in argv) == (kind != "gateway")  # engines only
    here = duplex("up", "here", "--topology", str(path), "--dry-run").stdout.splitlines()
    assert [line.split(":")[0] for line in here] == ["broker", "loopback.1", "loopback.2", "router"]
    missing = duplex("up", "nowhere", "--topology", str(path))
    assert missing.returncode == 1 and "no host 'nowhere'" in missing.stderr
    assert "gpu-box, here" in missing.stderr


def test_bad_hosts_are_refused_naming_what_is_wrong(tmp_path: Path) -> None:
    for hosts, error in [
        ("  h:\n    actors: {loopback: 2.5}\n", "count 2.5 is not 0..64"),
        ("  h:\n    actors: [loopback, loopback]\n", "names a kind twice"),
        ("  h:\n    actors: [loopback]\n    gpu: yes\n", "unknown settings ['gpu']"),
        ("  h:\n    actors: [no_such_actor]\n", "unknown kind 'no_such_actor'"),
    ]:
        path = BrokerPorts.pick().topology(tmp_path, extra="hosts:\n" + hosts)
        out = duplex("up", "h", "--topology", str(path), "--dry-run")
        assert out.returncode == 1 and error in out.stderr, (hosts, out.stderr)


def test_up_starts_the_hosts_actors_with_their_counts_and_sigterm_stops_them_all(
    tmp_path: Path,
) -> None:
    ports = BrokerPorts.pick()
    path = topology(tmp_path, ports)
    log = (tmp_path / "up.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli", "up", "here", "--topology", str(path)],
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:

        def registered() -> list[dict[str, object]] | None:
            actors = (status(ports.endpoint) or {"actors": []})["actors"]
            return actors if len(actors) == 3 else None

        actors = wait_until(registered, 60, "two loopbacks and a router")
        assert sorted(a["kind"] for a in actors) == ["loopback", "loopback", "router"]
        assert {a["host"] for a in actors} == {"here"}
        pids = [int(a["pid"]) for a in actors]  # type: ignore[call-overload]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) in (0, 143), (tmp_path / "up.log").read_text()

        def gone() -> bool:
            return not any(_alive(pid) for pid in pids)

        wait_until(gone, 15, "every actor to stop")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
