"""Playout pacing: absolute 20 ms deadlines, pause/resume/flush on the next frame, whole
utterances in order. Timing bounds here are generous; bench_e2e measures the real figures."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict

from bus.audio_format import BOT, FRAME_S
from bus.schema.tts import EndReason
from transports.playout import Playout


class Listener:
    def __init__(self) -> None:
        self.frames: list[tuple[float, str, bytes]] = []
        self.play_at: list[float] = []
        self.events: list[tuple[str, str, int]] = []
        self.ended: defaultdict[str, asyncio.Event] = defaultdict(asyncio.Event)

    async def send(self, utterance_id: str, frame: bytes, play_at: float) -> None:
        self.frames.append((time.monotonic(), utterance_id, frame))
        self.play_at.append(play_at)

    async def on_started(self, utterance_id: str) -> None:
        self.events.append(("start", utterance_id, 0))

    async def on_ended(
        self, utterance_id: str, reason: EndReason, played: int, words: int = 0
    ) -> None:
        self.events.append((f"end:{reason}", utterance_id, played))
        self.ended[utterance_id].set()


def frame(i: int) -> bytes:
    return i.to_bytes(2, "little") * BOT.frame_samples


def run(body, timeout: float = 20.0) -> None:
    asyncio.run(asyncio.wait_for(body(), timeout))


def test_frames_go_out_every_20_ms_on_absolute_deadlines() -> None:
    async def body() -> None:
        out = Listener()
        playout = Playout(out.send, out.on_started, out.on_ended, lead_s=0.0)
        task = asyncio.create_task(playout.run())
        for i in range(50):
            playout.add_frame("u1", frame(i))
        playout.end("u1")
        await out.ended["u1"].wait()
        task.cancel()
        times = [t for t, _, _ in out.frames]
        assert [f for _, _, f in out.frames] == [frame(i) for i in range(50)]
        assert 0.9 < times[-1] - times[0] < 1.2  # 49 intervals of 20 ms, no drift
        # Each frame is sent near its own deadline (generous: a loaded CI machine).
        offsets = [t - (times[0] + i * FRAME_S) for i, t in enumerate(times)]
        assert max(abs(o) for o in offsets) < 0.04, offsets
        # Each is told its play time (echo cancellation's reference): its deadline, exactly.
        steps = [b - a for a, b in zip(out.play_at, out.play_at[1:], strict=False)]
        assert all(abs(step - FRAME_S) < 1e-9 for step in steps), steps
        assert abs(out.play_at[0] - times[0]) < 0.04
        assert out.events == [("start", "u1", 0), ("end:completed", "u1", 50)]
        assert playout.stats.underruns == 0

    run(body)


def test_pause_holds_the_next_frame_and_resume_continues_without_loss() -> None:
    async def body() -> None:
        out = Listener()
        playout = Playout(out.send, out.on_started, out.on_ended)
        task = asyncio.create_task(playout.run())
        for i in range(40):
            playout.add_frame("u1", frame(i))
        playout.end("u1")
        await asyncio.sleep(0.2)
        playout.pause()
        paused_at, count = time.monotonic(), len(out.frames)
        await asyncio.sleep(0.3)
        assert len(out.frames) <= count + 1  # at most the frame already on its way
        assert all(t <= paused_at + FRAME_S for t, _, _ in out.frames)
        playout.resume()
        await out.ended["u1"].wait()
        task.cancel()
        assert [f for _, _, f in out.frames] == [frame(i) for i in range(40)]

    run(body)


def test_flush_drops_the_rest_and_utterances_never_interleave() -> None:
    async def body() -> None:
        out = Listener()
        playout = Playout(out.send, out.on_started, out.on_ended)
        task = asyncio.create_task(playout.run())
        for i in range(30):  # two utterances arriving interleaved
            playout.add_frame("a", frame(i))
            playout.add_frame("b", frame(100 + i))
        playout.end("b")
        await asyncio.sleep(0.15)
        dropped = playout.flush("a", reason=EndReason.BARGED_IN)
        assert 0 < dropped < 30
        heard_a = sum(1 for _, u, _ in out.frames if u == "a")
        await out.ended["b"].wait()
        task.cancel()
        assert out.events[-1] == ("end:completed", "b", 30)
        ids = [u for _, u, _ in out.frames]
        assert ids == ["a"] * heard_a + ["b"] * 30  # whole utterances, in order
        assert ("end:barged_in", "a", heard_a) in out.events

    run(body)


def test_late_frames_count_an_underrun_and_the_schedule_re_anchors() -> None:
    async def body() -> None:
        out = Listener()
        playout = Playout(out.send, out.on_started, out.on_ended, lead_s=0.0)
        task = asyncio.create_task(playout.run())
        for i in range(5):
            playout.add_frame("u", frame(i))
        await asyncio.sleep(0.3)  # the producer stalls for 200 ms past the queued audio
        for i in range(5, 10):
            playout.add_frame("u", frame(i))
        playout.end("u")
        await out.ended["u"].wait()
        task.cancel()
        assert playout.stats.underruns == 1
        times = [t for t, _, _ in out.frames]
        # After the stall the frames are paced again, not burst out to catch up.
        assert times[-1] - times[5] > 0.07

    run(body)


def test_an_utterance_after_a_silence_is_paced_not_burst_out() -> None:
    async def body() -> None:
        out = Listener()
        playout = Playout(out.send, out.on_started, out.on_ended, lead_s=0.0)
        task = asyncio.create_task(playout.run())
        for name in ("first", "second"):
            for i in range(15):
                playout.add_frame(name, frame(i))
            playout.end(name)
            await out.ended[name].wait()
            await asyncio.sleep(0.3)  # the client plays it all out; then silence
        task.cancel()
        second = [t for t, u, _ in out.frames if u == "second"]
        assert second[-1] - second[0] > 0.25  # 14 intervals of 20 ms, not a burst
        assert playout.stats.underruns == 0  # a silence between utterances is no underrun

    run(body)
