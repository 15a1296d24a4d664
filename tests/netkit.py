"""Linux network namespaces as test hosts: a switch namespace holding a bridge, and one namespace
per host with one address on it (``eth0``). Nothing is added to this machine's own namespace,
so nothing the hosts send can reach any address but theirs.

``Hosts.run`` starts a process inside a host; ``Hosts.call`` runs a Python callable on a thread
that has entered the host's namespace, so the sockets it opens (a WebSocket client, an HTTP
request) live there; ``Hosts.link`` takes a host's cable out and puts it back."""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
CLONE_NEWNET = 0x40000000


def unavailable() -> str:
    """Why this machine cannot make network namespaces ('' when it can)."""
    if shutil.which("ip") is None:
        return "no `ip` command (Debian: apt-get install iproute2)"
    if os.geteuid() != 0:
        return "making network namespaces needs root"
    probe = f"dxprobe{os.getpid()}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"`ip netns add` failed: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return ""


class Hosts:
    """Namespaces ``{prefix}-{name}`` on the subnet ``10.{subnet}.0.0/24``: host i gets .i."""

    def __init__(self, names: Sequence[str], subnet: int = 77) -> None:
        self.prefix = f"dx{os.getpid() % 100000}"
        self.names = list(names)
        self.address = {name: f"10.{subnet}.0.{i}" for i, name in enumerate(self.names, 1)}
        self.switch = f"{self.prefix}-sw"
        self._procs: list[subprocess.Popen[bytes]] = []
        self._made: list[str] = []
        # Left by an earlier run of this pid that was killed before it could clean up.
        listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        for line in listed.splitlines():
            name = line.split(" ", 1)[0]
            if name.startswith(f"{self.prefix}-"):
                self._made.append(name)
        self.close()
        try:
            self._ip("netns", "add", self.switch)
            self._made.append(self.switch)
            self._ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
            self._ip("-n", self.switch, "link", "set", "br0", "up")
            for name in self.names:
                ns = self.ns(name)
                self._ip("netns", "add", ns)
                self._made.append(ns)
                port = f"{self.prefix}{name[:4]}"  # the switch's end of the cable (<= 15 chars)
                self._ip("link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns)
                self._ip("link", "set", port, "netns", self.switch)
                self._ip("-n", self.switch, "link", "set", port, "master", "br0", "up")
                self._ip("-n", ns, "addr", "add", f"{self.address[name]}/24", "dev", "eth0")
                self._ip("-n", ns, "link", "set", "eth0", "up")
                self._ip("-n", ns, "link", "set", "lo", "up")
        except BaseException:
            self.close()
            raise

    def ns(self, name: str) -> str:
        return f"{self.prefix}-{name}"

    def link(self, name: str, up: bool) -> None:
        """Plug host ``name``'s cable in (``up``) or pull it out."""
        self._ip("-n", self.ns(name), "link", "set", "eth0", "up" if up else "down")

    def run(self, name: str, argv: Sequence[str], log: Path, cwd: Path) -> subprocess.Popen[bytes]:
        """Start ``argv`` inside host ``name`` (its own session: ``close`` stops its group)."""
        proc = subprocess.Popen(
            ["ip", "netns", "exec", self.ns(name), *argv],
            cwd=cwd,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._procs.append(proc)
        return proc

    def call(self, name: str, fn: Callable[[], T]) -> T:
        """``fn()`` on a thread inside host ``name``'s network namespace."""
        box: dict[str, Any] = {}

        def inside() -> None:
            try:
                libc = ctypes.CDLL(None, use_errno=True)
                fd = os.open(f"/run/netns/{self.ns(name)}", os.O_RDONLY)
                try:
                    if libc.setns(fd, CLONE_NEWNET) != 0:
                        err = ctypes.get_errno()
                        raise OSError(err, f"setns into {self.ns(name)}: {os.strerror(err)}")
                finally:
                    os.close(fd)
                box["value"] = fn()
            except BaseException as exc:  # re-raised on the caller's thread
                box["error"] = exc

        thread = threading.Thread(target=inside, name=f"in-{name}", daemon=True)
        thread.start()
        thread.join()
        if "error" in box:
            raise box["error"]
        return box["value"]  # type: ignore[no-any-return]

    def close(self) -> None:
        for proc in self._procs:
            if proc.poll() is None:
                _signal_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for proc in self._procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_group(proc, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=10)
        self._procs.clear()
        for ns in reversed(self._made):
            # Anything still inside (a grandchild that left the group) dies with its namespace.
            pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True)
            for pid in pids.stdout.split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        self._made.clear()

    def _ip(self, *args: str) -> None:
        done = subprocess.run(["ip", *args], capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")


def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)
