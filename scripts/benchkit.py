"""Small helpers the benchmarks share: free ports, a stack of actor processes, percentiles,
summaries, progress lines."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bus.sockets import free_port as free_port  # the benchmarks import it from here

ROOT = Path(__file__).resolve().parent.parent
T = TypeVar("T")

NUMBER_WORDS = [
    *[
        "seven",
        "twelve",
        "forty",
        "ninety",
        "three",
        "sixty",
        "eighteen",
        "fifty",
        "eleven",
        "thirty",
        "nine",
        "twenty",
    ],
    *[
        "eighty",
        "fifteen",
        "seventy",
        "four",
        "sixteen",
        "two",
        "nineteen",
        "thirteen",
        "five",
        "six",
        "eight",
        "ten",
    ],
    *["fourteen", "seventeen", "one"],
    "forty two",
    "fifty five",
    "sixty six",
    "seventy seven",
    "eighty eight",
    "ninety nine",
]
"""Words that make each benchmark text new, so the TTS phrase cache never answers."""


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (nearest rank) of ``values``."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def summary(
    values: Sequence[float],
    *,
    unit: str = "ms",
    scale: float = 1000.0,
    quantiles: tuple[int, ...] = (50, 95),
    count_key: str = "samples",
) -> dict[str, float]:
    """``{"p50_ms": ..., "p95_ms": ..., "max_ms": ..., "samples": n}`` of ``values`` x ``scale``."""
    scaled = [v * scale for v in values] or [0.0]
    out = {f"p{q}_{unit}": round(percentile(scaled, q), 1) for q in quantiles}
    out[f"max_{unit}"] = round(max(scaled), 1)
    out[count_key] = len(values)
    return out


def progress(name: str) -> Callable[[str], None]:
    """A function printing ``name: message`` progress lines on stderr."""

    def log(message: str) -> None:
        print(f"{name}: {message}", file=sys.stderr, flush=True)

    return log


class LocalStack:
    """A broker and actors as processes on free loopback ports, from a topology written for
    this run (``actors`` settings are YAML under ``actors:``, ``gateway`` YAML under its
    ``gateway:``; every metrics port is off)."""

    def __init__(
        self,
        name: str,
        kinds: Sequence[str],
        actors: str = "",
        keep_logs: bool = False,
        gateway: str = "",
    ) -> None:
        self.name = name
        self.kinds = list(kinds)
        self.control = f"tcp://127.0.0.1:{free_port()}"
        self.http_port = free_port()
        self.topology = Path(tempfile.gettempdir()) / f"{name}_{os.getpid()}.yaml"
        self.topology.write_text(
            f"broker:\n  control: {self.control}\n"
            f"  events_in: tcp://127.0.0.1:{free_port()}\n"
            f"  events_out: tcp://127.0.0.1:{free_port()}\n  metrics_port: null\n"
            "defaults:\n  metrics_port: null\n"
            f"actors:\n  gateway:\n    http_port: {self.http_port}\n{gateway}{actors}"
        )
        self.procs: list[subprocess.Popen[bytes]] = []
        self.log_dir = Path(tempfile.mkdtemp(prefix=f"{name}_logs_")) if keep_logs else None
        """With ``keep_logs``, each process's output goes to ``NAME.log`` here (at info level)."""

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.http_port}/ws"

    def start(self, ready: Callable[[], T | None], timeout_s: float = 180) -> T:
        """Start every process, then poll ``ready`` until it returns something."""
        for args in [["broker"], *(["run", kind] for kind in self.kinds)]:
            self.procs.append(self.spawn(args))
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            found = ready()
            if found is not None:
                return found
            time.sleep(0.3)
        self.close()
        raise SystemExit(f"{self.name}: the stack did not become ready")

    def spawn(self, args: list[str]) -> subprocess.Popen[bytes]:
        """``duplex ARGS`` on this stack's topology (``["broker"]``, ``["run", "vad"]``)."""
        command = [sys.executable, "-m", "cli", *args, "--topology", str(self.topology)]
        if self.log_dir is None:
            return subprocess.Popen([*command, "--log-level", "warning"], cwd=ROOT)
        name = args[-1]
        with open(self.log_dir / f"{name}.log", "ab") as out:
            return subprocess.Popen(
                [*command, "--log-level", "info"], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT
            )

    def actor_pids(self) -> dict[str, list[int]]:
        """Live actors' pids by kind, from the broker: the processes doing the work (under
        ``duplex run`` each actor is a child of the watcher that ``procs`` holds); ``{}`` while
        the broker does not answer."""
        from bus.client import BrokerClient

        try:
            with BrokerClient(self.control, timeout_s=2.0) as broker:
                snapshot = broker.discover()
        except Exception:  # the broker is down (being restarted) or not up yet
            return {}
        pids: dict[str, list[int]] = {}
        for reg in snapshot.actors:
            pids.setdefault(reg.kind, []).append(reg.pid)
        return pids

    def gateway_ready(self) -> dict[str, Any] | None:
        """The gateway's ``/ready`` answer once it is 200, else None."""
        url = f"http://127.0.0.1:{self.http_port}/ready"
        try:
            body: dict[str, Any] = json.loads(urllib.request.urlopen(url, timeout=1).read())
            return body
        except (OSError, ValueError):  # not up yet (URLError, refused, timed out) or not JSON
            return None

    def close(self) -> None:
        for proc in self.procs:
            proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.topology.unlink(missing_ok=True)
