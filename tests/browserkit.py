"""Test helpers for the browser path: headless Debian Chromium driven over the DevTools protocol
(one WebSocket, flattened target sessions; no Selenium, no downloaded browser), fake microphone
WAV files, and a WebAudio probe that records the level of a page's microphone and received audio.

Measured on Debian Chromium 156, headless=new, 2 shared cores (``test_browserkit.py`` keeps the
first three true; a WAV of noise bursts at each whole second, of growing length, told the file's
position apart):

- Every capture plays the ``%noloop`` file from its start: a reload, a new getUserMedia after
  stopping the tracks, and a second tab (while the first still captures) each hear it from its
  first sample; a capture already running plays on where it was. So one browser serves many
  trials in turn (reload, or stop and reopen the microphone, per trial), and two tabs of one
  browser hear the same file, each from when it opened its microphone. The file is a flag of the
  browser process: two pages that must hear different audio need two browsers.
- From getUserMedia resolving to the file at the track: a burst at file time 1000 ms rose on
  the track 1009-1022 ms after the promise resolved with Chromium's audio processing off,
  1025-1031 ms with it on (``{audio: true}``); speech (processing off) rose 16-33 ms after its
  onset in the file, in every capture. The file's first 50 ms came 29-48 ms after and sometimes
  10 ms short. getUserMedia itself took ~60 ms the first time, 6-16 ms after.
- With ``{audio: true}`` noise suppression and gain control stretch the tails of loud sounds
  (a 100 ms burst measured 140 ms) but not the rising edges.
- The probe's setInterval(5 ms) ticks at 5.0 ms median, 5.2 ms at the 95th percentile, worst
  seen 7-33 ms (under load), also in a tab that is hidden (in headless a new tab hides the
  previous one; the background-throttling flags below keep its timers running). No AudioWorklet
  needed. The AudioContext runs at 44.1 kHz (the fake output device), so the AnalyserNode's 512
  samples span 11.6 ms.
- Loopback in one page (RTCPeerConnection to a second one that sends the track back), processing
  off: the echo rises ~100 ms after the microphone.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import math
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from websockets.sync.client import ClientConnection, connect

from bus.audio_format import MIC, write_wav

CHROMIUM = Path("/usr/bin/chromium")
FAKE_MIC_RATE = 48_000
"""Hertz: the rate Chromium's fake capture device wants its WAV file in."""
SILENT_DBFS = -50.0
"""Below this a probe channel counts as silent (dBFS RMS)."""


def chromium_missing_reason(chromium: Path = CHROMIUM) -> str | None:
    """Why browser tests cannot run here, or None when they can."""
    if chromium.exists():
        return None
    return (
        f"{chromium} is missing: scripts/setup --dev installs it as root, or run "
        "'sudo apt-get install chromium' (Debian's package, no browser download)"
    )


def require_chromium(chromium: Path = CHROMIUM) -> None:
    """Skip the calling test when Chromium is missing here, fail it when ``CI`` is set (so a CI
    machine cannot pass by skipping the browser tests)."""
    import pytest

    reason = chromium_missing_reason(chromium)
    if reason is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set, so browser tests must run)")
    pytest.skip(reason)


class CdpError(RuntimeError):
    """A DevTools command failed, timed out, or the browser went away."""


class JsError(RuntimeError):
    """JavaScript evaluated in a page threw; the message is the JS error's text."""


class _Cdp:
    """One DevTools WebSocket: commands answered by id, events queued per target session."""

    def __init__(self, url: str, timeout_s: float) -> None:
        # websockets 15+ wants connect() entered as a context manager
        self._connection = connect(url, max_size=None, open_timeout=timeout_s)
        self._ws: ClientConnection = self._connection.__enter__()
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._replies: dict[int, dict[str, Any]] = {}
        self._waiting: dict[int, threading.Event] = {}
        self._listeners: dict[str, list[Any]] = {}
        self.closed = False
        self._reader = threading.Thread(target=self._read, name="cdp-reader", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        try:
            for raw in self._ws:
                message = json.loads(raw)
                if "id" in message:
                    with self._lock:
                        self._replies[message["id"]] = message
                        done = self._waiting.pop(message["id"], None)
                    if done:
                        done.set()
                else:
                    with self._lock:
                        listeners = list(self._listeners.get(message.get("sessionId", ""), ()))
                    for listener in listeners:
                        listener(message["method"], message.get("params", {}))
        except Exception:
            pass
        finally:
            self.closed = True
            with self._lock:
                waiting, self._waiting = list(self._waiting.values()), {}
            for done in waiting:
                done.set()

    def listen(self, session_id: str, listener: Any) -> None:
        with self._lock:
            self._listeners.setdefault(session_id, []).append(listener)

    def forget(self, session_id: str) -> None:
        with self._lock:
            self._listeners.pop(session_id, None)

    def call(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        session_id: str | None = None,
        timeout_s: float = 10.0,
    ) -> dict[str, Any]:
        """Send one command and return its ``result``; CdpError on an error or after
        ``timeout_s``."""
        if self.closed:
            raise CdpError(f"{method}: the DevTools connection is closed")
        ident = next(self._ids)
        message: dict[str, Any] = {"id": ident, "method": method, "params": params or {}}
        if session_id:
            message["sessionId"] = session_id
        done = threading.Event()
        with self._lock:
            self._waiting[ident] = done
        self._ws.send(json.dumps(message))
        if not done.wait(timeout_s):
            with self._lock:
                self._waiting.pop(ident, None)
            raise CdpError(f"{method}: no answer within {timeout_s} s")
        with self._lock:
            reply = self._replies.pop(ident, None)
        if reply is None:
            raise CdpError(f"{method}: the browser went away")
        if "error" in reply:
            raise CdpError(f"{method}: {reply['error'].get('message')} {reply['error']}")
        result: dict[str, Any] = reply.get("result", {})
        return result

    def close(self) -> None:
        try:
            self._connection.__exit__(None, None, None)
        finally:
            self._reader.join(timeout=5)


class Browser:
    """A headless Chromium process (its own process group and temporary profile). Use as a
    context manager, or call :meth:`close`; either kills every process of the browser."""

    def __init__(self, process: subprocess.Popen[bytes], profile: Path, cdp: _Cdp) -> None:
        self._process = process
        self._profile = profile
        self._cdp = cdp
        self.pages: list[Page] = []

    @classmethod
    def launch(
        cls,
        fake_mic_wav: Path | None = None,
        loop: bool = False,
        extra_args: Sequence[str] = (),
        timeout_s: float = 20.0,
    ) -> Browser:
        """Start Chromium and connect to it. ``fake_mic_wav`` (48 kHz mono s16, see
        :func:`write_fake_mic`) is what every microphone of this browser hears, once unless
        ``loop``; without one Chromium's fake device beeps."""
        reason = chromium_missing_reason()
        if reason:
            raise CdpError(reason)
        profile = Path(tempfile.mkdtemp(prefix="duplex-chromium-"))
        args = [
            str(CHROMIUM),
            "--headless=new",
            "--no-sandbox",  # CI and this machine run as root, where the sandbox cannot start
            "--remote-debugging-port=0",
            f"--user-data-dir={profile}",
            "--use-fake-ui-for-media-stream",
            "--use-fake-device-for-media-stream",
            "--autoplay-policy=no-user-gesture-required",
            "--allow-loopback-in-peer-connection",
            "--disable-features=WebRtcHideLocalIpsWithMdns",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-gpu",
            "--disable-dev-shm-usage",  # containers have a small /dev/shm
            # A page the test is not looking at must keep its timers and audio running.
            "--disable-background-timer-throttling",
            "--disable-renderer-backgrounding",
            "--disable-backgrounding-occluded-windows",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--password-store=basic",
            "--use-mock-keychain",
        ]
        if fake_mic_wav is not None:
            suffix = "" if loop else "%noloop"
            args.append(f"--use-file-for-fake-audio-capture={fake_mic_wav}{suffix}")
        args += [*extra_args, "about:blank"]
        log = (profile / "chromium.log").open("wb")
        process = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
        )
        log.close()
        try:
            url = _devtools_url(process, profile, timeout_s)
            cdp = _Cdp(url, timeout_s)
        except BaseException:
            _kill_group(process)
            shutil.rmtree(profile, ignore_errors=True)
            raise
        return cls(process, profile, cdp)

    @property
    def log(self) -> str:
        """What Chromium wrote to stdout and stderr so far."""
        try:
            return (self._profile / "chromium.log").read_text(errors="replace")
        except OSError:
            return ""

    def new_page(self, url: str = "about:blank", timeout_s: float = 15.0) -> Page:
        """A new tab, attached before it loads ``url`` (so no console message is missed)."""
        target = self._cdp.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self._cdp.call("Target.attachToTarget", {"targetId": target, "flatten": True})[
            "sessionId"
        ]
        page = Page(self._cdp, target, session)
        self.pages.append(page)
        if url != "about:blank":
            page.goto(url, timeout_s)
        return page

    def close(self) -> None:
        """Close every tab first, as a person would (pages run their ``pagehide``: the web app
        ends its session at once), then the browser."""
        open_pages = [page for page in self.pages if not page.closed]
        for page in open_pages:
            with contextlib.suppress(Exception):
                page.close()
        if open_pages:
            time.sleep(0.2)  # keepalive requests sent on pagehide leave before the browser goes
        try:
            if not self._cdp.closed:
                self._cdp.call("Browser.close", timeout_s=3)
        except Exception:
            pass
        try:
            self._cdp.close()
        finally:
            _kill_group(self._process)
            shutil.rmtree(self._profile, ignore_errors=True)

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _devtools_url(process: subprocess.Popen[bytes], profile: Path, timeout_s: float) -> str:
    """The browser's DevTools WebSocket, from the ``DevToolsActivePort`` file Chromium writes
    into its profile (port, then path) once it listens."""
    deadline = time.monotonic() + timeout_s
    active = profile / "DevToolsActivePort"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            log = (profile / "chromium.log").read_text(errors="replace")
            raise CdpError(f"chromium exited with {process.returncode}:\n{log[-3000:]}")
        try:
            lines = active.read_text().split()
        except OSError:
            lines = []
        if len(lines) == 2:
            return f"ws://127.0.0.1:{lines[0]}{lines[1]}"
        time.sleep(0.05)
    log = (profile / "chromium.log").read_text(errors="replace")
    raise CdpError(f"chromium did not open DevTools within {timeout_s} s:\n{log[-3000:]}")


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the browser's process group, SIGKILL it after 5 s, and wait (2 s at most) for
    every member (renderers, zygotes, crashpad) to be gone."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(5)
    deadline = time.monotonic() + 2
    while _live_members(process.pid) and time.monotonic() < deadline:
        time.sleep(0.02)


def _live_members(pgid: int) -> list[int]:
    """Processes of the group that are not zombies (orphaned zombies wait for whoever is PID 1
    to reap them, which in a container may be never)."""
    live = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        state, _ppid, group = stat.rsplit(")", 1)[1].split()[:3]
        if int(group) == pgid and state != "Z":
            live.append(int(entry.name))
    return live


class Page:
    """One tab: evaluate JavaScript, wait for conditions, collect console errors."""

    def __init__(self, cdp: _Cdp, target_id: str, session_id: str) -> None:
        self._cdp = cdp
        self.target_id = target_id
        self._session = session_id
        self._cond = threading.Condition()
        self._loads = 0
        self.console_errors: list[str] = []
        """``console.error`` calls and uncaught exceptions, in order, as text."""
        self.closed = False
        cdp.listen(session_id, self._on_event)
        self._call("Runtime.enable")
        self._call("Page.enable")

    def _call(
        self, method: str, params: dict[str, Any] | None = None, timeout_s: float = 10.0
    ) -> dict[str, Any]:
        return self._cdp.call(method, params, self._session, timeout_s)

    def _on_event(self, method: str, params: dict[str, Any]) -> None:
        if method == "Page.loadEventFired":
            with self._cond:
                self._loads += 1
                self._cond.notify_all()
        elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            text = " ".join(_remote_text(a) for a in params.get("args", ()))
            with self._cond:
                self.console_errors.append(text)
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            exception = details.get("exception") or {}
            text = exception.get("description") or details.get("text", "exception")
            with self._cond:
                self.console_errors.append(text)

    def _load(self, method: str, params: dict[str, Any], timeout_s: float) -> None:
        with self._cond:
            before = self._loads
        result = self._call(method, params, timeout_s)
        if result.get("errorText"):
            raise CdpError(f"{method} {params}: {result['errorText']}")
        with self._cond:
            if not self._cond.wait_for(lambda: self._loads > before, timeout_s):
                raise CdpError(f"{method} {params}: no load event within {timeout_s} s")

    def goto(self, url: str, timeout_s: float = 15.0) -> None:
        """Navigate and wait for the load event."""
        self._load("Page.navigate", {"url": url}, timeout_s)

    def reload(self, timeout_s: float = 15.0) -> None:
        """Reload (a new document: injected scripts, the probe included, are gone)."""
        self._load("Page.reload", {"ignoreCache": True}, timeout_s)

    def evaluate(self, js: str, await_promise: bool = True, timeout_s: float = 10.0) -> Any:
        """The value of the expression ``js`` (a promise is awaited), as JSON-like Python.
        JsError with the JS message when it throws or its promise rejects."""
        result = self._call(
            "Runtime.evaluate",
            {
                "expression": js,
                "awaitPromise": await_promise,
                "returnByValue": True,
                "userGesture": True,
                "timeout": int(timeout_s * 1000),
            },
            timeout_s + 2,
        )
        details = result.get("exceptionDetails")
        if details:
            exception = details.get("exception") or {}
            text = exception.get("description") or _remote_text(exception) or details["text"]
            raise JsError(text)
        return result["result"].get("value")

    def wait_for(self, js_condition: str, timeout_s: float, interval_s: float = 0.02) -> Any:
        """Poll the expression until it is truthy and return its value; TimeoutError (naming the
        condition and the console errors so far) after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while True:
            value = self.evaluate(js_condition, timeout_s=max(1.0, timeout_s))
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{js_condition!r} still false after {timeout_s} s; "
                    f"console errors: {self.console_errors}"
                )
            time.sleep(interval_s)

    def screenshot(self, path: Path) -> Path:
        """Save a PNG of the viewport."""
        data = self._call("Page.captureScreenshot", {"format": "png"})["data"]
        path.write_bytes(base64.b64decode(data))
        return path

    def install_audio_probe(
        self,
        pc: str = "window.duplex && window.duplex.pc",
        mic_track: str = "null",
        interval_ms: float = 5.0,
    ) -> None:
        """Start :data:`AUDIO_PROBE_JS` on the RTCPeerConnection that the expression ``pc``
        names (it may not exist yet: the probe looks for it on every tick). ``mic_track``, an
        expression for a MediaStreamTrack, taps a microphone that is not on a connection."""
        self.evaluate(AUDIO_PROBE_JS)
        self.evaluate(
            f"window.duplexProbe.start({{pc: () => ({pc}), micTrack: () => ({mic_track}), "
            f"intervalMs: {float(interval_ms)}}})"
        )

    def audio_trace(self) -> AudioTrace:
        """Everything the probe recorded so far (oldest samples drop out past its bound)."""
        raw = self.evaluate("window.duplexProbe.trace()")
        return AudioTrace(
            t_ms=np.asarray(raw["t"], dtype=np.float64),
            mic_dbfs=np.asarray(raw["mic"], dtype=np.float64),
            bot_dbfs=np.asarray(raw["bot"], dtype=np.float64),
            sample_rate=int(raw["sampleRate"]),
        )

    def close(self) -> None:
        """Close the tab (its ``pagehide`` runs)."""
        if self.closed:
            return
        self.closed = True
        self._cdp.forget(self._session)
        if not self._cdp.closed:
            self._cdp.call("Target.closeTarget", {"targetId": self.target_id})


def _remote_text(obj: dict[str, Any]) -> str:
    if "value" in obj:
        return str(obj["value"])
    return str(obj.get("description", obj.get("type", "")))


# ----------------------------------------------------------------------------------------------
# Fake microphone


def write_fake_mic(path: Path, pcm16k: bytes) -> Path:
    """Write 16 kHz mono s16le (what :mod:`tests.voicekit` makes) as the 48 kHz mono s16 WAV
    that ``--use-file-for-fake-audio-capture`` plays."""
    import soxr

    samples = np.frombuffer(pcm16k, "<i2").astype(np.float32) / 32768
    up = soxr.resample(samples, MIC.sample_rate, FAKE_MIC_RATE)
    write_wav(path, (np.clip(up, -1, 1) * 32767).astype("<i2").tobytes(), FAKE_MIC_RATE)
    return path


# ----------------------------------------------------------------------------------------------
# Audio probe

AUDIO_PROBE_JS = r"""
(() => {
  if (window.duplexProbe) return;
  const CAP = 24000;  // samples kept per channel: 2 minutes at 5 ms
  const FLOOR = -120;
  const t = new Float64Array(CAP), mic = new Float32Array(CAP), bot = new Float32Array(CAP);
  let n = 0, ctx = null, timer = null;
  const taps = {mic: null, bot: null};
  function tap(track) {
    const source = ctx.createMediaStreamSource(new MediaStream([track]));
    const analyser = ctx.createAnalyser();
    analyser.fftSize = 512;  // 11.6 ms at 44.1 kHz, headless Chromium's rate
    source.connect(analyser);
    return {id: track.id, track, source, analyser, buf: new Float32Array(analyser.fftSize)};
  }
  function level(entry) {
    if (!entry || entry.track.readyState !== "live") return FLOOR;
    entry.analyser.getFloatTimeDomainData(entry.buf);
    let sum = 0;
    for (const x of entry.buf) sum += x * x;
    const rms = Math.sqrt(sum / entry.buf.length);
    return rms > 0 ? Math.max(FLOOR, 20 * Math.log10(rms)) : FLOOR;
  }
  function refresh(name, track) {
    const old = taps[name];
    if (track && (!old || old.id !== track.id)) {
      if (old) old.source.disconnect();
      taps[name] = tap(track);
    }
  }
  function audioTrack(list) {
    for (const x of list) if (x.track && x.track.kind === "audio") return x.track;
    return null;
  }
  window.duplexProbe = {
    start(opts) {
      ctx = new AudioContext();
      const interval = opts.intervalMs || 5;
      timer = setInterval(() => {
        let pc = null;
        try { pc = opts.pc(); } catch (e) {}
        if (pc) {
          refresh("mic", audioTrack(pc.getSenders()));
          refresh("bot", audioTrack(pc.getReceivers()));
        }
        let own = null;
        try { own = opts.micTrack(); } catch (e) {}
        if (own) refresh("mic", own);
        const i = n % CAP;
        t[i] = performance.now(); mic[i] = level(taps.mic); bot[i] = level(taps.bot);
        n++;
      }, interval);
      return ctx.resume();
    },
    stop() { clearInterval(timer); },
    attached() { return {mic: !!taps.mic, bot: !!taps.bot, state: ctx && ctx.state}; },
    trace() {
      const m = Math.min(n, CAP), start = n - m, out = {t: [], mic: [], bot: []};
      for (let k = start; k < n; k++) {
        const i = k % CAP;
        out.t.push(t[i]); out.mic.push(mic[i]); out.bot.push(bot[i]);
      }
      out.sampleRate = ctx ? ctx.sampleRate : 0;
      return out;
    },
    // the first sample time (performance.now() ms) after `since` with `name` above `db`
    firstAbove(name, db, since) {
      const m = Math.min(n, CAP), arr = name === "mic" ? mic : bot;
      for (let k = n - m; k < n; k++) {
        const i = k % CAP;
        if (t[i] >= since && arr[i] > db) return t[i];
      }
      return null;
    },
  };
})()
"""
"""Defines ``window.duplexProbe``: ``start({pc: () => RTCPeerConnection, micTrack: () =>
MediaStreamTrack, intervalMs})`` taps the audio track of the connection's first audio sender
(the microphone; ``micTrack`` instead when it gives one) and receiver (the bot) with
AnalyserNodes (512-sample windows: 11.6 ms at headless Chromium's 44.1 kHz) and every
``intervalMs`` records performance.now() and the RMS dBFS of both (-120 when absent) in a ring of
24000 samples; ``trace()``, ``attached()``, ``firstAbove(name, db, since)``, ``stop()``."""


@dataclass(frozen=True)
class AudioTrace:
    """What the probe recorded: one row per tick."""

    t_ms: np.ndarray[Any, np.dtype[np.float64]]
    """performance.now() of each sample, milliseconds."""
    mic_dbfs: np.ndarray[Any, np.dtype[np.float64]]
    """Microphone (local sender track) RMS over the last ~10 ms, dBFS."""
    bot_dbfs: np.ndarray[Any, np.dtype[np.float64]]
    """Received (remote receiver track) RMS over the last ~10 ms, dBFS."""
    sample_rate: int
    """The AudioContext's rate, Hertz."""

    def intervals_ms(self) -> np.ndarray[Any, np.dtype[np.float64]]:
        """Time between consecutive samples, milliseconds (the probe's resolution)."""
        return np.diff(self.t_ms)


def has(kind: str, **fields: Any) -> str:
    """JS: the web app (``window.duplex``) has received an event of ``kind`` with these fields."""
    checks = "".join(f" && e[{json.dumps(k)}] === {json.dumps(v)}" for k, v in fields.items())
    return f"window.duplex.events.some(e => e.type === {json.dumps(kind)}{checks})"


def events(page: Page, kind: str) -> list[dict[str, Any]]:
    """The events of ``kind`` the web app on ``page`` has received, oldest first."""
    found: list[dict[str, Any]] = page.evaluate(
        f"window.duplex.events.filter(e => e.type === {json.dumps(kind)})"
    )
    return found


def first_above(
    t_ms: Sequence[float] | np.ndarray[Any, Any],
    dbfs: Sequence[float] | np.ndarray[Any, Any],
    threshold_dbfs: float,
    after_ms: float = -math.inf,
) -> float | None:
    """The first sample time at or after ``after_ms`` whose level is above the threshold."""
    for t, level in zip(t_ms, dbfs, strict=True):
        if t >= after_ms and level > threshold_dbfs:
            return float(t)
    return None


def silent_for_good(
    t_ms: Sequence[float] | np.ndarray[Any, Any],
    dbfs: Sequence[float] | np.ndarray[Any, Any],
    threshold_dbfs: float = SILENT_DBFS,
    after_ms: float = -math.inf,
) -> float | None:
    """The time (at or after ``after_ms``) after which the level stays at or below the threshold
    to the end of the trace: the sample after the last loud one, ``after_ms``'s first sample if
    it was silent throughout, None if the trace ends loud (or has no sample after ``after_ms``)."""
    times, levels = list(t_ms), list(dbfs)
    if len(times) != len(levels):
        raise ValueError("t_ms and dbfs differ in length")
    candidate: float | None = None
    for t, level in zip(times, levels, strict=True):
        if t < after_ms:
            continue
        if level > threshold_dbfs:
            candidate = None
        elif candidate is None:
            candidate = float(t)
    return candidate
