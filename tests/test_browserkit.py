"""The real-Chromium kit, proven without Duplex: a page that sends its fake microphone through
one RTCPeerConnection and back from a second (an echo "server" in the same page), measured by
the audio probe; the DevTools driver's errors; the edge functions on made-up traces."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from aiohttp import web

from tests.browserkit import (
    SILENT_DBFS,
    AudioTrace,
    Browser,
    JsError,
    Page,
    first_above,
    require_chromium,
    silent_for_good,
    write_fake_mic,
)
from tests.voicekit import silence, speech

# getUserMedia with Chromium's processing off, so the levels are the file's own; the page then
# plays the echoed track in an <audio> element (WebAudio on a remote track is silent otherwise)
# and exposes the microphone-side connection as window.duplex.pc, as the Duplex page does.
ECHO_PAGE = """<!doctype html>
<html><body><audio id="bot" autoplay></audio><script>
window.duplex = {pc: null, events: []};
const note = (type, extra) => duplex.events.push({type, t: performance.now(), ...extra});
function gathered(pc) {
  return new Promise(done => {
    if (pc.iceGatheringState === "complete") return done();
    pc.addEventListener("icegatheringstatechange",
                        () => pc.iceGatheringState === "complete" && done());
  });
}
async function main() {
  const mic = await navigator.mediaDevices.getUserMedia({audio: {
    echoCancellation: false, noiseSuppression: false, autoGainControl: false}});
  note("mic_open");
  const pc = new RTCPeerConnection({iceServers: []});
  const echo = new RTCPeerConnection({iceServers: []});
  pc.ontrack = e => {
    const audio = document.getElementById("bot");
    audio.srcObject = new MediaStream([e.track]);
    audio.play().then(() => note("playing"), err => console.error("play", err));
  };
  pc.onconnectionstatechange = () => note(pc.connectionState);
  pc.addTrack(mic.getAudioTracks()[0], mic);
  duplex.pc = pc;
  await pc.setLocalDescription(await pc.createOffer());
  await gathered(pc);
  await echo.setRemoteDescription(pc.localDescription);
  const [transceiver] = echo.getTransceivers();
  transceiver.direction = "sendrecv";
  await transceiver.sender.replaceTrack(transceiver.receiver.track);
  await echo.setLocalDescription(await echo.createAnswer());
  await gathered(echo);
  await pc.setRemoteDescription(echo.localDescription);
}
main().catch(err => { note("error", {message: String(err)}); console.error(err); });
</script></body></html>
"""


class PageServer:
    """aiohttp serving fixed pages on 127.0.0.1 (a secure context: getUserMedia works)."""

    def __init__(self, pages: dict[str, str]) -> None:
        self._pages = pages
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._runner: web.AppRunner
        self.port = 0
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        assert self._ready.wait(10), "the page server did not start"

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        for path, html in self._pages.items():
            app.router.add_get(path, self._page(html))
        self._runner = web.AppRunner(app)
        self._loop.run_until_complete(self._runner.setup())
        self._loop.run_until_complete(web.TCPSite(self._runner, "127.0.0.1", 0).start())
        self.port = self._runner.addresses[0][1]
        self._ready.set()
        self._loop.run_forever()

    @staticmethod
    def _page(html: str) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handler(request: web.Request) -> web.Response:
            return web.Response(text=html, content_type="text/html")

        return handler

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)


@pytest.fixture(scope="module")
def server() -> Iterator[PageServer]:
    s = PageServer({"/echo": ECHO_PAGE, "/blank": "<!doctype html><title>blank</title>"})
    yield s
    s.close()


@dataclass(frozen=True)
class FakeMic:
    wav: Path
    speech_ms: float
    """When the speech first goes above -40 dBFS (10 ms RMS windows) in the file."""


@pytest.fixture(scope="module")
def speech_after_a_second(tmp_path_factory: pytest.TempPathFactory) -> FakeMic:
    """The fake microphone: 1 s of silence, about 1 s of speech, 1.5 s of silence."""
    words = speech("Hello there, how are you?")[: 16_000 * 2]  # at most 1 s at 16 kHz s16
    pcm = silence(1.0) + words + silence(1.5)
    windows = np.frombuffer(pcm, "<i2").astype(np.float64)[: len(pcm) // 2 // 160 * 160]
    rms = np.sqrt(np.mean((windows.reshape(-1, 160) / 32768) ** 2, axis=1))
    onset = int(np.argmax(20 * np.log10(np.maximum(rms, 1e-9)) > -40)) * 10.0
    wav = write_fake_mic(tmp_path_factory.mktemp("mic") / "mic.wav", pcm)
    return FakeMic(wav, onset)


def _edges(trace: AudioTrace, after_ms: float) -> tuple[float | None, float | None]:
    """When the microphone (above -40 dBFS) and the received audio (above silence) first rise."""
    mic = first_above(trace.t_ms, trace.mic_dbfs, -40, after_ms)
    bot = first_above(trace.t_ms, trace.bot_dbfs, SILENT_DBFS, after_ms)
    return mic, bot


@pytest.mark.timeout(60)
def test_probe_sees_the_fake_mic_rise_at_one_second_and_its_echo_shortly_after(
    server: PageServer, speech_after_a_second: FakeMic
) -> None:
    require_chromium()
    with Browser.launch(fake_mic_wav=speech_after_a_second.wav) as browser:
        page = browser.new_page(server.url("/echo"))
        page.install_audio_probe()
        page.wait_for("duplex.events.some(e => e.type === 'connected')", timeout_s=10)
        opened = page.evaluate("duplex.events.find(e => e.type === 'mic_open').t")
        page.wait_for(
            f"window.duplexProbe.firstAbove('bot', {SILENT_DBFS}, {opened + 1000})", timeout_s=10
        )
        page.wait_for(f"performance.now() > {opened + 3000}", timeout_s=10)
        trace = page.audio_trace()
        assert page.console_errors == []
    mic, bot = _edges(trace, opened)
    assert mic is not None and bot is not None, trace
    late = mic - opened - speech_after_a_second.speech_ms
    assert 0 < late < 150, f"the file's speech reached the mic {late:.0f} ms late"
    assert 0 < bot - mic < 300, f"the echo rose {bot - mic:.0f} ms after the mic"
    quiet = silent_for_good(trace.t_ms, trace.bot_dbfs, SILENT_DBFS, bot)
    assert quiet is not None and quiet - bot < 1300, "the echo did not end with the speech"
    # The probe resolves both edges: samples close together around each (a gap elsewhere, as
    # at the page's start on a loaded CI machine, 75 ms once, times nothing).
    gaps = trace.intervals_ms()
    for edge in (mic, bot):
        near = np.abs(trace.t_ms[1:] - edge) < 100
        assert near.any() and gaps[near].max() < 50, (edge, gaps[near])
    assert np.median(gaps) < 20


OPEN_MIC = """(async () => {
  window.mic = await navigator.mediaDevices.getUserMedia({audio: {
    echoCancellation: false, noiseSuppression: false, autoGainControl: false}});
  return performance.now();
})()"""


def _mic_rise_after_open(page: Page, at_least_ms: float = 1400) -> tuple[float, float]:
    """Open the microphone and probe it; when getUserMedia resolved (performance.now() ms) and
    how long after that the fake file's speech reached the track."""
    opened = float(page.evaluate(OPEN_MIC))
    page.install_audio_probe(pc="null", mic_track="window.mic.getAudioTracks()[0]")
    page.wait_for(f"performance.now() > {opened + at_least_ms}", timeout_s=5)
    trace = page.audio_trace()
    mic, _ = _edges(trace, opened)
    assert mic is not None, "the fake microphone never rose"
    return opened, mic - opened


@pytest.mark.timeout(60)
def test_every_capture_plays_the_fake_mic_file_from_its_start(
    server: PageServer, speech_after_a_second: FakeMic
) -> None:
    """What the barge-in benchmark relies on: a second tab, a reload, and a new getUserMedia
    after stopping the tracks each hear the %noloop file from its first sample, about 20 ms
    after getUserMedia resolves, while an earlier capture plays on where it was."""
    require_chromium()
    with Browser.launch(fake_mic_wav=speech_after_a_second.wav) as browser:
        first = browser.new_page(server.url("/blank"))
        rises = {"first tab": _mic_rise_after_open(first)}
        second = browser.new_page(server.url("/blank"))
        rises["second tab, the first still capturing"] = _mic_rise_after_open(second)
        # the first tab's file played on to its end: its speech (under 1 s) was not heard again
        trace, opened = first.audio_trace(), rises["first tab"][0]
        assert trace.t_ms[-1] > opened + 2600
        spoke_again = first_above(trace.t_ms, trace.mic_dbfs, -40, sum(rises["first tab"]) + 1100)
        assert spoke_again is None, f"the first tab heard speech again {spoke_again - opened} ms in"
        second.evaluate("mic.getTracks().forEach(t => t.stop()); duplexProbe.stop()")
        second.evaluate("window.duplexProbe = undefined")
        rises["new getUserMedia after stop"] = _mic_rise_after_open(second)
        first.reload()
        rises["reload"] = _mic_rise_after_open(first)
    for what, (_, rise) in rises.items():
        late = rise - speech_after_a_second.speech_ms
        assert 0 < late < 150, f"{what}: the file's speech reached the mic {late:.0f} ms late"


@pytest.mark.timeout(30)
def test_evaluate_raises_the_js_error_and_console_errors_are_collected(
    server: PageServer, tmp_path: Path
) -> None:
    require_chromium()
    with Browser.launch() as browser:
        page = browser.new_page(server.url("/blank"))
        assert page.evaluate("Promise.resolve({a: [1, 'two']})") == {"a": [1, "two"]}
        with pytest.raises(JsError, match="no such thing"):
            page.evaluate("(async () => { throw new Error('no such thing') })()")
        page.evaluate("console.error('bad', 7); setTimeout(() => { throw new TypeError('late') })")
        page.wait_for("new Promise(r => setTimeout(() => r(true), 50))", timeout_s=5)
        assert page.console_errors[0] == "bad 7"
        assert page.console_errors[1].startswith("TypeError: late")
        with pytest.raises(TimeoutError, match="never"):
            page.wait_for("window.never", timeout_s=0.2)
        assert page.screenshot(tmp_path / "page.png").read_bytes()[:4] == b"\x89PNG"
        page.close()
        assert browser.new_page(server.url("/blank")).evaluate("document.title") == "blank"


def test_first_above_and_silent_for_good_find_the_edges() -> None:
    t = [0.0, 5.0, 10.0, 15.0, 20.0, 25.0]
    level = [-120.0, -30.0, -120.0, -20.0, -60.0, -70.0]
    assert first_above(t, level, -40) == 5.0
    assert first_above(t, level, -40, after_ms=6) == 15.0
    assert first_above(t, level, -10) is None
    assert silent_for_good(t, level) == 20.0
    assert silent_for_good(t, level, after_ms=22) == 25.0
    assert silent_for_good(t, [*level[:-1], -10.0]) is None
    with pytest.raises(ValueError):
        silent_for_good(t, level[:2])


def test_a_missing_chromium_skips_the_browser_tests_but_fails_them_under_ci(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    nowhere = Path("/nonexistent/chromium")
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="apt-get install chromium"):
        require_chromium(nowhere)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI is set"):
        require_chromium(nowhere)
