"""The watcher behind ``duplex run KIND``: the actor runs in a child process, restarted when it
dies abnormally, so one crashed actor does not bring down a honcho stack.

The child is this same command with ``--no-restart`` and an ``--id`` the watcher picks (a fresh
``KIND-HOST-PID-RANDOM``, PID being the watcher's, for every start; or the ``--id`` given, kept).
It learns its restart count and predecessor from ``$DUPLEX_RESTARTS`` and ``$DUPLEX_REPLACES``
and says both in its registration. When a child dies abnormally (a non-zero exit, or a signal
the watcher did not send), the watcher tells the broker at once (``gone``), so the registry drops
the dead actor instead of waiting out ``heartbeat_ms * liveness``, then starts a new child after
a backoff that doubles per crash in a row. Too many crashes within a window end the watcher with
status 1. SIGTERM / SIGINT are passed on to the child and waited for (then SIGKILL): the watcher
exits 0 and restarts nothing. The child gets SIGKILL if the watcher itself dies (Linux). A
first start that fails (a bad setting: the child's one-line ``could not start``) is not retried;
the watcher exits 1 with it, as ``--no-restart`` would.

This module imports no actor: only the child loads one.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from types import FrameType

import zmq

from bus.client import BrokerClient
from bus.errors import BusError
from bus.logs import kv
from bus.schema.system import Gone
from bus.topology import ActorConfig

PR_SET_PDEATHSIG = 1
"""``prctl`` option from ``<linux/prctl.h>``: the signal a process gets when its parent dies."""

GIVE_UP_STATUS = 1
"""Exit status of a watcher that gave up: its actor crash-looped, or could not start at all."""

START_FAILED_STATUS = 78
"""Exit status of a child whose actor could not start (``EX_CONFIG``: a bad setting, a port in
use; it says why in one line). The first child's is not retried, it would fail the same way."""


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    """When and how fast ``duplex run`` restarts a crashed actor."""

    max_crashes: int = 5
    """Crashes tolerated within ``crash_window_s``; one more and the watcher gives up."""
    crash_window_s: float = 60.0
    """Seconds over which crashes are counted."""
    backoff_s: float = 0.5
    """Seconds before the first restart; doubles with each crash in a row."""
    max_backoff_s: float = 10.0
    """Longest wait before a restart, seconds."""
    stable_s: float = 10.0
    """A child that ran this many seconds before it died starts the backoff afresh."""
    stop_timeout_s: float = 5.0
    """Seconds a child told to stop may take before it gets SIGKILL."""
    gone_timeout_s: float = 0.5
    """Seconds to wait for the broker to acknowledge ``gone`` (it may be down)."""


def describe_exit(returncode: int) -> str:
    """``exit 1`` or ``signal SIGKILL``, from a ``Popen.returncode``."""
    if returncode == START_FAILED_STATUS:
        return f"exit {returncode} (could not start)"
    if returncode >= 0:
        return f"exit {returncode}"
    try:
        return f"signal {signal.Signals(-returncode).name}"
    except ValueError:
        return f"signal {-returncode}"


class Watcher:
    """Runs ``command`` (the child's argv, without ``--id``) under ``policy`` until it stops."""

    def __init__(self, command: Sequence[str], config: ActorConfig, policy: RestartPolicy) -> None:
        self.command = list(command)
        self.config = config
        """The actor's config: kind, host, broker and CURVE settings, ``actor_id`` if fixed."""
        self.policy = policy
        self.restarts = 0
        """Children started after a crash so far."""
        self.crashes = 0
        """Children that died abnormally so far."""
        self.log = logging.getLogger("duplex.watcher")
        self._child: subprocess.Popen[bytes] | None = None
        self._stop_signal: int | None = None
        self._woken = threading.Event()
        self._killer: threading.Timer | None = None
        self._recent: deque[float] = deque()
        """``time.monotonic()`` of each crash within the last ``crash_window_s``."""
        self._prctl = _load_prctl()

    def run(self) -> int:
        """Start the child and restart it after each crash; the exit status for the watcher."""
        delay, replaces = self.policy.backoff_s, ""
        with self._passing_on_signals():
            while self._stop_signal is None:
                actor_id = self.config.with_id().actor_id
                started = time.monotonic()
                child = self._start(actor_id, replaces)
                returncode = child.wait()
                ran_s = time.monotonic() - started
                if self._stop_signal is not None or returncode == 0:
                    break
                if returncode == START_FAILED_STATUS and self.restarts == 0:
                    return GIVE_UP_STATUS
                how = describe_exit(returncode)
                self.crashes += 1
                self.log.warning(
                    "actor crashed",
                    extra=kv(
                        actor_id=actor_id,
                        pid=child.pid,
                        how=how,
                        ran_s=round(ran_s, 2),
                        crashes=self.crashes,
                    ),
                )
                self._tell_broker(actor_id, child.pid, how)
                if self._crash_loop(time.monotonic()):
                    self.log.error(
                        "crash loop, giving up",
                        extra=kv(
                            kind=self.config.kind,
                            crashes=len(self._recent),
                            window_s=self.policy.crash_window_s,
                            last=how,
                        ),
                    )
                    return GIVE_UP_STATUS
                if ran_s >= self.policy.stable_s:
                    delay = self.policy.backoff_s
                self.log.info("restarting", extra=kv(restarts=self.restarts + 1, delay_s=delay))
                if self._woken.wait(delay):
                    break
                delay = min(2 * delay, self.policy.max_backoff_s)
                self.restarts += 1
                replaces = actor_id
        if self._killer is not None:
            self._killer.cancel()
        last = self._child.returncode if self._child is not None else None
        self.log.info(
            "watcher stopping",
            extra=kv(
                how="" if last is None else describe_exit(last),
                signal=signal.Signals(self._stop_signal).name if self._stop_signal else "",
                restarts=self.restarts,
            ),
        )
        return 0

    # ------------------------------------------------------------------ the child

    def _start(self, actor_id: str, replaces: str) -> subprocess.Popen[bytes]:
        env = {**os.environ, "DUPLEX_RESTARTS": str(self.restarts), "DUPLEX_REPLACES": replaces}
        watcher_pid = os.getpid()
        prctl = self._prctl

        def die_with_watcher() -> None:  # in the child, between fork and exec
            if prctl is not None:
                prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL))
            if os.getppid() != watcher_pid:  # the watcher died before prctl: no one would tell
                os.kill(os.getpid(), signal.SIGKILL)

        child = subprocess.Popen(
            [*self.command, "--id", actor_id], env=env, preexec_fn=die_with_watcher
        )
        self._child = child
        if self._stop_signal is not None:  # it came while the child was being forked
            self._pass_on(self._stop_signal)
        self.log.info(
            "actor started",
            extra=kv(actor_id=actor_id, pid=child.pid, restarts=self.restarts, replaces=replaces),
        )
        return child

    def _tell_broker(self, actor_id: str, pid: int, how: str) -> None:
        """Ask the broker to drop the dead child's registration now; bounded, never raises."""
        try:
            with BrokerClient(
                self.config.broker,
                timeout_s=self.policy.gone_timeout_s,
                curve_config=self.config.curve,
            ) as client:
                client.request(Gone(actor_id=actor_id, pid=pid, reason=how))
        except (BusError, OSError, ValueError, zmq.ZMQError) as exc:
            # It never registered, the broker already dropped it, or the broker is down: then
            # the broker's expiry (or a restarted broker, which never knew it) covers it.
            self.log.info("broker not told", extra=kv(actor_id=actor_id, why=str(exc)[:200]))
            return
        self.log.info("broker dropped it", extra=kv(actor_id=actor_id))

    def _crash_loop(self, now: float) -> bool:
        """Count a crash at ``now``; True when there were more than allowed within the window."""
        self._recent.append(now)
        while self._recent and now - self._recent[0] > self.policy.crash_window_s:
            self._recent.popleft()
        return len(self._recent) > self.policy.max_crashes

    # ------------------------------------------------------------------ stopping

    @contextlib.contextmanager
    def _passing_on_signals(self) -> Iterator[None]:
        previous = {sig: signal.signal(sig, self._on_stop_signal) for sig in STOP_SIGNALS}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _on_stop_signal(self, signum: int, _frame: FrameType | None) -> None:
        self._stop_signal = signum
        self._woken.set()
        self._pass_on(signum)

    def _pass_on(self, signum: int) -> None:
        """Send ``signum`` to the running child; SIGKILL it if it is still there after
        ``stop_timeout_s``."""
        child = self._child
        if child is None or child.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(child.pid, signum)
        if self._killer is None:
            self._killer = threading.Timer(self.policy.stop_timeout_s, self._kill, (child,))
            self._killer.daemon = True
            self._killer.start()

    def _kill(self, child: subprocess.Popen[bytes]) -> None:
        if child.returncode is None:
            self.log.warning(
                "actor did not stop in time, killing it",
                extra=kv(pid=child.pid, stop_timeout_s=self.policy.stop_timeout_s),
            )
            child.kill()


STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
"""Signals that stop the watcher and, passed on, its child."""


def _load_prctl() -> Callable[[int, int], int] | None:
    """libc's ``prctl``, on Linux; None elsewhere (the child then outlives a killed watcher)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    return lambda option, value: int(prctl(option, value))
