"""Bot audio encoded for HTTP clients, as it is synthesized, and uploaded audio decoded for
the ASR. Both through PyAV (FFmpeg's codecs and containers, which aiortc already brings).

:class:`StreamEncoder` turns 48 kHz frames into the bytes of one response format, chunk by
chunk (``pcm``: raw s16le; ``wav``: a header whose sizes say "unknown length", as a streamed
WAV must, then raw s16le; ``mp3``, ``opus`` (Ogg), ``aac`` (ADTS) and ``flac`` through
FFmpeg's encoders). :func:`decode_to_mic` reads an upload in one of :data:`UPLOAD_FORMATS` as
16 kHz mono s16le.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass

import av
import numpy as np
import soxr

from bus.audio_format import BOT, MIC, SAMPLE_BYTES


@dataclass(frozen=True, slots=True)
class Format:
    """A response format: its content type, sample rate and FFmpeg muxer and encoder."""

    content_type: str
    rate: int
    container: str = ""
    """Empty: raw PCM (with a WAV header for ``wav``)."""
    codec: str = ""


FORMATS = {
    "pcm": Format("audio/pcm", 24_000),
    "wav": Format("audio/wav", 24_000),
    "mp3": Format("audio/mpeg", 24_000, "mp3", "libmp3lame"),
    "opus": Format("audio/ogg", 48_000, "ogg", "libopus"),
    "aac": Format("audio/aac", 24_000, "adts", "aac"),
    "flac": Format("audio/flac", 24_000, "flac", "flac"),
}
"""The formats of OpenAI's ``/v1/audio/speech``, at its rate (24 kHz; Opus runs at 48 kHz)."""


def wav_header(rate: int) -> bytes:
    """A mono 16-bit WAV header for a stream of unknown length (RIFF and data sizes at their
    maximum, as streamed WAVs carry them)."""
    byte_rate = rate * SAMPLE_BYTES
    fmt = struct.pack("<HHIIHH", 1, 1, rate, byte_rate, SAMPLE_BYTES, 16)
    return (
        b"RIFF"
        + struct.pack("<I", 0xFFFFFFFF)
        + b"WAVEfmt "
        + struct.pack("<I", len(fmt))
        + fmt
        + b"data"
        + struct.pack("<I", 0xFFFFFFFF)
    )


class _Sink(io.RawIOBase):
    """What the muxer writes, collected until taken (not seekable: nothing is rewritten)."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self.chunks.append(bytes(data))
        return len(data)

    def take(self) -> bytes:
        out, self.chunks = b"".join(self.chunks), []
        return out


class StreamEncoder:
    """48 kHz mono s16le in, the bytes of one :data:`FORMATS` entry out, as they are made."""

    def __init__(self, name: str) -> None:
        self.format = FORMATS[name]
        self.name = name
        rate = self.format.rate
        self._resampler = (
            soxr.ResampleStream(BOT.sample_rate, rate, 1, dtype="int16")
            if rate != BOT.sample_rate
            else None
        )
        self._header = wav_header(rate) if name == "wav" else b""
        self._sink: _Sink | None = None
        self._pts = 0
        if self.format.container:
            self._sink = _Sink()
            self._container = av.open(self._sink, "w", format=self.format.container)
            stream = self._container.add_stream(self.format.codec, rate=rate)
            assert isinstance(stream, av.audio.stream.AudioStream)
            stream.layout = "mono"
            self._stream = stream

    def feed(self, pcm: bytes, last: bool = False) -> bytes:
        """Encode ``pcm`` (48 kHz s16le; ``last``: nothing follows); the bytes ready now."""
        samples = np.frombuffer(pcm, dtype="<i2")
        if self._resampler is not None:
            samples = self._resampler.resample_chunk(samples, last=last)
        out, self._header = self._header, b""
        if self._sink is None:
            return out + samples.astype("<i2").tobytes()
        if len(samples):
            frame = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(samples[None, :]), format="s16", layout="mono"
            )
            frame.sample_rate = self.format.rate
            frame.pts = self._pts
            self._pts += len(samples)
            for packet in self._stream.encode(frame):
                self._container.mux(packet)
        if last:
            for packet in self._stream.encode(None):
                self._container.mux(packet)
            self._container.close()
        return out + self._sink.take()

    def finish(self) -> bytes:
        """The rest: flushed resampler and encoder, the container's trailer."""
        return self.feed(b"", last=True)


UPLOAD_FORMATS = {"format_whitelist": "wav,w64,mp3,ogg,flac,mov,matroska,aac,aiff,caf"}
"""The containers an upload may be (WAV, MP3, Ogg, FLAC, MP4/M4A/MOV, Matroska/WebM, ADTS,
AIFF, CAF): FFmpeg guesses the format from the bytes, and some of its demuxers open other
files (``ffconcat`` reads paths named in the upload), so only audio containers are allowed."""


class DecodeError(ValueError):
    """Not audio FFmpeg can read."""


def decode_to_mic(data: bytes, max_seconds: float) -> bytes:
    """The first audio stream of a file (any container and codec FFmpeg reads) as 16 kHz mono
    s16le; DecodeError if there is none or it is longer than ``max_seconds``."""
    limit = int(max_seconds * MIC.sample_rate)
    out: list[np.ndarray] = []
    total = 0
    try:
        with av.open(io.BytesIO(data), "r", options=UPLOAD_FORMATS) as container:
            if not container.streams.audio:
                raise DecodeError("the file holds no audio stream")
            resampler = av.AudioResampler(format="s16", layout="mono", rate=MIC.sample_rate)
            for frame in container.decode(audio=0):
                for part in resampler.resample(frame):
                    chunk = part.to_ndarray().reshape(-1)
                    total += len(chunk)
                    if total > limit:
                        raise DecodeError(f"the audio is longer than {max_seconds:g} s")
                    out.append(chunk)
            for part in resampler.resample(None):
                out.append(part.to_ndarray().reshape(-1))
    except (av.FFmpegError, UnicodeDecodeError, ValueError) as exc:
        if isinstance(exc, DecodeError):
            raise
        raise DecodeError(f"the file is not audio FFmpeg can read ({exc})") from None
    return np.concatenate(out).astype("<i2").tobytes() if out else b""
