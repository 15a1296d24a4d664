"""The WebRTC audio parts on their own: the bot track's pacing, queue and flush; the microphone
reader's bounded backlog; the pass-through jitter buffer, and that it still fits aiortc (the
pinned version's private attribute)."""

from __future__ import annotations

import asyncio
import fractions
import time

import av
import numpy as np
import pytest
from aiortc import RTCPeerConnection
from aiortc.jitterbuffer import JitterBuffer
from aiortc.rtp import RtpPacket

from bus.audio_format import BOT
from transports.webrtc_audio import (
    FADE_MS,
    MAX_MIC_BACKLOG,
    TRACK_QUEUE_FRAMES,
    BotTrack,
    MicReader,
    PassThroughAudioBuffer,
    install_pass_through,
    mono_s16,
)

pytestmark = pytest.mark.timeout(30)


def frame_of(value: int) -> bytes:
    return np.full(BOT.frame_samples, value, "<i2").tobytes()


def pcm(frame: av.AudioFrame) -> np.ndarray:
    return frame.to_ndarray().reshape(-1)


def test_track_sends_silence_when_idle_with_continuous_timestamps() -> None:
    async def main() -> None:
        track = BotTrack()
        frames = [await track.recv() for _ in range(5)]
        assert [f.pts for f in frames] == [i * BOT.frame_samples for i in range(5)]
        assert all(f.sample_rate == 48000 and f.samples == 960 for f in frames)
        assert all(not pcm(f).any() for f in frames)
        assert track.audio_frames == 0 and track.frames_sent == 5

    asyncio.run(main())


def test_track_paces_on_absolute_deadlines() -> None:
    async def main() -> None:
        track = BotTrack()
        start = time.monotonic()
        for _ in range(26):
            await track.recv()
            await asyncio.sleep(0.004)  # the encoder's work: must not add up
        elapsed = time.monotonic() - start
        assert 0.49 <= elapsed < 0.56, elapsed  # frame 0 at once, frame 25 at 500 ms

    asyncio.run(main())


def test_a_full_queue_makes_the_producer_wait_and_keeps_order() -> None:
    async def main() -> None:
        track = BotTrack()
        for value in range(1, TRACK_QUEUE_FRAMES + 1):
            await track.put(frame_of(value))
        third = asyncio.get_running_loop().create_task(track.put(frame_of(9)))
        await asyncio.sleep(0.05)
        assert not third.done()  # no room until the wire takes one
        got = [int(pcm(await track.recv())[0]) for _ in range(TRACK_QUEUE_FRAMES + 1)]
        await third
        assert got == [1, 2, 9]

    asyncio.run(main())


def test_discard_drops_queued_and_waiting_frames_and_fades_the_cut() -> None:
    async def main() -> None:
        track = BotTrack()
        await track.recv()  # anchored
        await track.put(frame_of(10000))
        await track.put(frame_of(20000))
        waiting = asyncio.get_running_loop().create_task(track.put(frame_of(30000)))
        await asyncio.sleep(0)
        assert track.discard() == 3
        await waiting
        faded = pcm(await track.recv())
        fade = int(BOT.sample_rate * FADE_MS / 1000)
        assert faded[0] == 10000 and 0 < faded[fade // 2] < 10000 and not faded[fade:].any()
        assert np.all(np.diff(faded[:fade].astype(int)) <= 0)  # a ramp down, no step
        assert not pcm(await track.recv()).any()  # then silence: nothing discarded came back
        assert track.audio_frames == 0

    asyncio.run(main())


def test_a_late_sender_re_anchors_instead_of_bursting() -> None:
    now = [100.0]
    track = BotTrack(clock=lambda: now[0])

    async def main() -> None:
        await track.recv()
        now[0] += 1.0  # the loop stalled a second
        await track.recv()
        assert track.reanchors == 1 and track.frames_sent == 1
        assert track._deadline() == pytest.approx(101.02)

    asyncio.run(main())


def stereo(value: int, n: int = 960) -> av.AudioFrame:
    samples = np.empty(2 * n, "<i2")
    samples[0::2], samples[1::2] = value, -value
    frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="stereo")
    frame.sample_rate, frame.time_base = 48000, fractions.Fraction(1, 48000)
    return frame


def test_mono_takes_one_channel_of_interleaved_stereo() -> None:
    out = np.frombuffer(mono_s16(stereo(123)), "<i2")
    assert len(out) == 960 and np.all(out == 123)


class QueueTrack:
    """Stands in for aiortc's RemoteStreamTrack: an unbounded queue of decoded frames."""

    kind = "audio"

    def __init__(self) -> None:
        self._queue: asyncio.Queue[av.AudioFrame | None] = asyncio.Queue()

    async def recv(self) -> av.AudioFrame:
        from aiortc.mediastreams import MediaStreamError

        frame = await self._queue.get()
        if frame is None:
            raise MediaStreamError
        return frame


def test_the_reader_drops_a_backlog_beyond_its_bound_and_counts_it() -> None:
    async def main() -> None:
        track = QueueTrack()
        got: list[int] = []
        dropped: list[int] = []

        async def deliver(chunk: bytes) -> None:
            got.append(int(np.frombuffer(chunk, "<i2")[0]))

        for value in range(20):
            track._queue.put_nowait(stereo(value))
        track._queue.put_nowait(None)
        reader = MicReader(track, deliver, dropped.append)  # type: ignore[arg-type]
        await asyncio.wait_for(reader.run(), 5)
        # The first frame came; behind it the queue held 19 frames and the end: what was beyond
        # the bound went, the newest stayed (the end counts as one queued item).
        assert got == [0, *range(21 - MAX_MIC_BACKLOG, 20)]
        assert sum(dropped) == reader.dropped == 20 - MAX_MIC_BACKLOG

    asyncio.run(main())


def packet(seq: int, timestamp: int) -> RtpPacket:
    p = RtpPacket(payload_type=111, sequence_number=seq, timestamp=timestamp)
    p._data = bytes([seq % 256])  # type: ignore[attr-defined]
    return p


def test_pass_through_hands_each_packet_on_at_once_and_drops_late_ones() -> None:
    buffer = PassThroughAudioBuffer()
    out = [buffer.add(packet(seq, seq * 960))[1] for seq in (65534, 65535, 0, 65535, 1, 1)]
    assert [None if f is None else f.data[0] for f in out] == [254, 255, 0, None, 1, None]
    assert buffer.late == 1
    # aiortc's own buffer holds a packet back until the fourth newer one: 80 ms at 20 ms.
    stock = JitterBuffer(capacity=16, prefetch=4)
    assert [stock.add(packet(seq, seq * 960))[1] is None for seq in range(5)] == [
        True,
        True,
        True,
        True,
        False,
    ]


def test_the_pass_through_buffer_fits_this_aiortc() -> None:
    async def main() -> None:
        pc = RTCPeerConnection()
        transceiver = pc.addTransceiver("audio")
        receiver = transceiver.receiver
        assert isinstance(receiver._RTCRtpReceiver__jitter_buffer, JitterBuffer)  # type: ignore[attr-defined]
        installed = install_pass_through(receiver)
        assert receiver._RTCRtpReceiver__jitter_buffer is installed  # type: ignore[attr-defined]
        await pc.close()

    asyncio.run(main())
