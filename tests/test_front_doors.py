"""The front doors other clients already speak, each driven by a client nobody here wrote: the
``wyoming`` package's own async client (Home Assistant's protocol) against the Wyoming actor,
the official ``openai`` SDK against the gateway's OpenAI audio API, and the older project's
protocol at ``/`` as its CLI client speaks it. Real actors, real Piper, real Whisper."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import numpy as np
import openai
import pytest
import soxr
from websockets.sync.client import connect
from wyoming.asr import Transcribe, Transcript, TranscriptChunk
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.client import AsyncTcpClient
from wyoming.error import Error
from wyoming.event import Event
from wyoming.info import Describe, Info
from wyoming.tts import (
    Synthesize,
    SynthesizeChunk,
    SynthesizeStart,
    SynthesizeStop,
    SynthesizeVoice,
)

from bus.audio_format import MIC, write_wav
from bus.sockets import free_port
from tests.support import ROOT, Processes, transcribe, word_error_rate
from tests.test_gateway import Stack
from tests.voicekit import silence, speech

pytestmark = pytest.mark.timeout(120)

VOICE = "piper-en_US-joe-medium"
WINDOW = "Please close the window before you leave the house."
MUSEUM = "The museum opens early and closes late in the summer."
BAKERY = "The bakery on the corner sells fresh bread every morning."


class FrontDoors(Stack):
    wyoming_port: int


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FrontDoors]:
    tmp: Path = tmp_path_factory.mktemp("front-doors")
    procs = Processes(tmp)
    port = free_port()
    extra = f"  wyoming:\n    uri: tcp://127.0.0.1:{port}\n    max_audio_s: 40\n"
    try:
        s = FrontDoors(
            procs, tmp, extra, ["gateway", "supervisor", "router", "asr", "tts_worker", "wyoming"]
        )
        s.wyoming_port = port
        s.wait_ready()
        _wait_for_wyoming(s)
        yield s
    finally:
        procs.close()


def _wait_for_wyoming(s: FrontDoors) -> None:
    async def ready() -> bool:
        try:
            async with AsyncTcpClient("127.0.0.1", s.wyoming_port) as c:
                await c.write_event(Describe().event())
                info = Info.from_event(await _read(c, "info"))
        except OSError:
            return False
        return bool(info.asr and info.asr[0].installed and info.tts and info.tts[0].installed)

    deadline = time.monotonic() + 60
    while not asyncio.run(ready()):
        assert time.monotonic() < deadline, "the Wyoming server never listed a worker and an ASR"
        time.sleep(0.2)


async def _read(client: AsyncTcpClient, until: str, timeout: float = 30) -> Event:
    """Events up to the first of type ``until`` (returned); fails on an end of stream."""
    while True:
        event = await asyncio.wait_for(client.read_event(), timeout)
        assert event is not None, f"the connection closed before {until}"
        if event.type == until:
            return event


async def _audio(client: AsyncTcpClient, until: str) -> tuple[bytes, int, list[str]]:
    """PCM, its rate and every event type, up to the first ``until``."""
    pcm, rate, kinds = b"", 0, []
    while True:
        event = await asyncio.wait_for(client.read_event(), 30)
        assert event is not None, f"the connection closed before {until}"
        kinds.append(event.type)
        if AudioStart.is_type(event.type):
            rate = AudioStart.from_event(event).rate
        elif AudioChunk.is_type(event.type):
            pcm += AudioChunk.from_event(event).audio
        if event.type == until:
            return pcm, rate, kinds


def _wyoming(stack: FrontDoors) -> AsyncTcpClient:
    return AsyncTcpClient("127.0.0.1", stack.wyoming_port)


# ---------------------------------------------------------------------------------- Wyoming


def test_wyoming_describe_lists_the_workers_voices_and_the_asr_model(stack: FrontDoors) -> None:
    async def run() -> Info:
        async with _wyoming(stack) as c:
            await c.write_event(Describe().event())
            return Info.from_event(await _read(c, "info"))

    info = asyncio.run(run())
    (tts,) = info.tts
    voices = {v.name: v for v in tts.voices}
    assert voices[VOICE].installed and voices[VOICE].languages == ["en_US"], voices
    assert tts.supports_synthesize_streaming
    (asr,) = info.asr
    assert asr.installed and asr.models[0].languages == ["en"], asr
    assert asr.models[0].name == "tiny.en" and asr.supports_transcript_streaming


def test_wyoming_synthesize_speaks_the_text(stack: FrontDoors) -> None:
    async def run() -> tuple[bytes, int, list[str]]:
        async with _wyoming(stack) as c:
            await c.write_event(Synthesize(text=WINDOW, voice=SynthesizeVoice(name=VOICE)).event())
            return await _audio(c, "audio-stop")

    pcm, rate, kinds = asyncio.run(run())
    assert kinds[0] == "audio-start" and kinds[-1] == "audio-stop", kinds[:3]
    assert rate == 48000 and len(pcm) / 2 / rate > 1.5
    assert word_error_rate(WINDOW, transcribe(pcm, rate)) <= 0.3


def test_wyoming_streaming_synthesis_in_home_assistants_order(stack: FrontDoors) -> None:
    """Chunks that cut words in two, the ``synthesize`` copy Home Assistant sends for older
    servers (ignored: the text is not spoken twice), then ``synthesize-stop``."""
    text = f"{MUSEUM} {BAKERY}"
    pieces = [
        "The museum op",
        "ens early and closes late in the summer. The bak",
        "ery on the corner ",
        "sells fresh bread every morning.",
    ]
    assert "".join(pieces) == text

    async def run() -> tuple[bytes, int, list[str]]:
        async with _wyoming(stack) as c:
            await c.write_event(SynthesizeStart(voice=SynthesizeVoice(name=VOICE)).event())
            for piece in pieces:
                await c.write_event(SynthesizeChunk(text=piece).event())
                await asyncio.sleep(0.1)
            await c.write_event(Synthesize(text=text, voice=SynthesizeVoice(name=VOICE)).event())
            await c.write_event(SynthesizeStop().event())
            got = await _audio(c, "synthesize-stopped")
            with pytest.raises(TimeoutError):  # and nothing after it: the text spoken once
                await asyncio.wait_for(c.read_event(), 2.0)
            return got

    pcm, rate, kinds = asyncio.run(run())
    assert kinds[0] == "audio-start" and kinds[-2:] == ["audio-stop", "synthesize-stopped"]
    heard = transcribe(pcm, rate)
    assert word_error_rate(text, heard) <= 0.3, heard
    assert len(pcm) / 2 / rate < 9, "the text was spoken more than once"


def test_wyoming_transcribes_audio_at_any_rate_with_streamed_words(stack: FrontDoors) -> None:
    """22.05 kHz stereo in (what a client may send), the words streamed, the final last."""
    question = "What time does the museum open on Sunday morning?"
    mono = np.frombuffer(speech(question) + silence(0.3), "<i2")
    resampled = soxr.resample(mono.astype(np.float32), MIC.sample_rate, 22050).astype("<i2")
    stereo = np.repeat(resampled[:, None], 2, axis=1).reshape(-1).tobytes()
    chunk = 2 * 2 * 2205  # 100 ms

    async def run() -> list[Event]:
        async with _wyoming(stack) as c:
            await c.write_event(Transcribe(language="en").event())
            await c.write_event(AudioStart(rate=22050, width=2, channels=2).event())
            for i in range(0, len(stereo), chunk):
                audio = stereo[i : i + chunk]
                await c.write_event(
                    AudioChunk(rate=22050, width=2, channels=2, audio=audio).event()
                )
                await asyncio.sleep(0.1)  # in real time, as a microphone sends it
            await c.write_event(AudioStop().event())
            got = []
            while not got or not Transcript.is_type(got[-1].type):
                event = await asyncio.wait_for(c.read_event(), 30)
                assert event is not None
                got.append(event)
            return got

    events = asyncio.run(run())
    final = Transcript.from_event(events[-1]).text
    assert word_error_rate(question, final) <= 0.3, final
    kinds = [e.type for e in events]
    assert "transcript-start" in kinds and kinds[-2] == "transcript-stop", kinds
    chunks = "".join(
        TranscriptChunk.from_event(e).text for e in events if e.type == "transcript-chunk"
    )
    # Words streamed while the audio came (the first chunk before the end of the audio would
    # need timing; the agreement rule makes them a prefix of a partial): all of them heard.
    assert chunks and word_error_rate(question, chunks) <= 0.5, chunks


def test_three_wyoming_clients_at_once_none_waits_for_another(stack: FrontDoors) -> None:
    """Each client's first audio comes before any other client's audio has ended."""
    texts = [  # said nowhere else here: no phrase cache answers at once
        "A small grey cat slept on the warm stones of the old bridge until the sun went down.",
        "The children painted a long blue boat and carried it slowly down to the quiet lake.",
        "Every autumn the farmer counts his apples twice and gives the smallest ones away.",
    ]

    async def one(text: str) -> tuple[float, float, bytes]:
        async with _wyoming(stack) as c:
            await c.write_event(Synthesize(text=text, voice=SynthesizeVoice(name=VOICE)).event())
            first, pcm = 0.0, b""
            while True:
                event = await asyncio.wait_for(c.read_event(), 30)
                assert event is not None
                if AudioChunk.is_type(event.type):
                    first = first or time.monotonic()
                    pcm += AudioChunk.from_event(event).audio
                elif AudioStop.is_type(event.type):
                    return first, time.monotonic(), pcm

    async def run() -> list[tuple[float, float, bytes]]:
        return list(await asyncio.gather(*(one(t) for t in texts)))

    results = asyncio.run(run())
    assert max(first for first, _, _ in results) < min(end for _, end, _ in results), results
    for text, (_, _, pcm) in zip(texts, results, strict=True):
        assert word_error_rate(text, transcribe(pcm)) <= 0.3


def test_bad_wyoming_events_are_answered_with_an_error_and_the_server_keeps_serving(
    stack: FrontDoors,
) -> None:
    async def run() -> dict[str, Any]:
        out: dict[str, Any] = {}
        async with _wyoming(stack) as c:  # an unknown type: an error, and the connection goes on
            await c.write_event(Event(type="make-coffee", data={"sugar": 2}))
            out["unknown"] = Error.from_event(await _read(c, "error"))
            await c.write_event(Describe().event())
            out["after"] = Info.from_event(await _read(c, "info"))
        async with _wyoming(stack) as c:  # a voice nobody has: an error, then closed
            voice = SynthesizeVoice(name="nobody-has-this")
            await c.write_event(Synthesize(text="Hello.", voice=voice).event())
            out["voice"] = Error.from_event(await _read(c, "error"))
            out["voice_closed"] = await asyncio.wait_for(c.read_event(), 5)
        async with _wyoming(stack) as c:  # audio before audio-start
            await c.write_event(
                AudioChunk(rate=16000, width=2, channels=1, audio=b"\0" * 640).event()
            )
            out["early"] = Error.from_event(await _read(c, "error"))
        async with _wyoming(stack) as c:  # a 2 MiB chunk: refused before it is read
            await c.write_event(AudioStart(rate=16000, width=2, channels=1).event())
            await c.write_event(
                AudioChunk(rate=16000, width=2, channels=1, audio=bytes(2 << 20)).event()
            )
            out["huge"] = Error.from_event(await _read(c, "error"))
        async with _wyoming(stack) as c:  # longer than max_audio_s (40 s here)
            await c.write_event(AudioStart(rate=16000, width=2, channels=1).event())
            for _ in range(5):
                await c.write_event(
                    AudioChunk(rate=16000, width=2, channels=1, audio=bytes(32000 * 10)).event()
                )
            out["long"] = Error.from_event(await _read(c, "error"))
        async with _wyoming(stack) as c:  # a malformed event: the package's parser fails
            await c.write_event(Event(type="synthesize", data={"voice": {"name": VOICE}}))
            out["malformed"] = Error.from_event(await _read(c, "error"))
        async with _wyoming(stack) as c:  # a stream inside a stream
            await c.write_event(SynthesizeStart().event())
            await c.write_event(SynthesizeStart().event())
            out["restart"] = Error.from_event(await _read(c, "error"))
        async with _wyoming(stack) as c:  # and a new client is served as ever
            await c.write_event(Synthesize(text="Still here.").event())
            out["served"], _, _ = await _audio(c, "audio-stop")
        return out

    out = asyncio.run(run())
    assert out["unknown"].code == "UNSUPPORTED_TYPE" and "make-coffee" in out["unknown"].text
    assert out["after"].tts
    assert out["voice"].code == "UNKNOWN_VOICE" and out["voice_closed"] is None
    assert out["early"].code == "INVALID_MESSAGE" and "audio-start" in out["early"].text
    assert out["huge"].code == "TOO_LARGE", out["huge"]
    assert out["long"].code == "AUDIO_TOO_LONG", out["long"]
    assert out["malformed"].code == "INVALID_MESSAGE" and "KeyError" in out["malformed"].text
    assert out["restart"].code == "INVALID_MESSAGE" and "inside a stream" in out["restart"].text
    assert len(out["served"]) > 48000


# ---------------------------------------------------------------------------------- OpenAI


def _openai(stack: FrontDoors) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{stack.http}/v1", api_key="unused-on-loopback", max_retries=0)


def test_the_openai_sdk_streams_speech_whose_words_are_its_text(stack: FrontDoors) -> None:
    client = _openai(stack)
    text = (  # said nowhere else here: a phrase cache would answer it all at once
        "Ostriches rarely sing, yet the old keeper swore he heard one humming softly by "
        "the fence every evening after supper."
    )
    chunks: list[tuple[float, bytes]] = []
    with client.audio.speech.with_streaming_response.create(
        model="tts-1", voice="alloy", input=text, response_format="wav"
    ) as response:
        assert response.headers["transfer-encoding"] == "chunked"
        assert response.headers["content-type"] == "audio/wav"
        chunks = [(time.monotonic(), chunk) for chunk in response.iter_bytes(4096)]
    # Streamed: the body arrives over the synthesis (some 0.4 s of worker time for these ~6 s
    # of speech here), not in one burst after it, which loopback delivers in milliseconds.
    assert chunks[-1][0] - chunks[0][0] > 0.1, "the body came all at once: not streamed"
    pcm, rate = read_wav_bytes(b"".join(c for _, c in chunks))
    assert rate == 24000
    assert word_error_rate(text, transcribe(pcm, rate)) <= 0.3


def read_wav_bytes(data: bytes) -> tuple[bytes, int]:
    """A streamed WAV (sizes "unknown") as PCM and rate."""
    assert data[:4] == b"RIFF" and data[36:40] == b"data"
    rate = int.from_bytes(data[24:28], "little")
    return data[44:], rate


@pytest.mark.parametrize("fmt", ["mp3", "opus", "aac", "flac", "pcm"])
def test_every_openai_response_format_decodes_to_the_same_speech(
    stack: FrontDoors, fmt: str
) -> None:
    client = _openai(stack)
    audio = client.audio.speech.create(
        model="tts-1", voice=VOICE, input=WINDOW, response_format=fmt
    )
    if fmt == "pcm":  # raw 24 kHz s16le, as OpenAI sends it
        pcm, rate = audio.content, 24000
    else:
        with av.open(io.BytesIO(audio.content)) as container:
            resampler = av.AudioResampler(format="s16", layout="mono", rate=24000)
            frames = [f for frame in container.decode(audio=0) for f in resampler.resample(frame)]
        pcm, rate = b"".join(f.to_ndarray().tobytes() for f in frames), 24000
    seconds = len(pcm) / 2 / rate
    assert 2.0 < seconds < 5.0, seconds
    assert word_error_rate(WINDOW, transcribe(pcm, rate)) <= 0.3


def test_the_openai_sdk_transcribes_a_file_in_each_response_format(
    stack: FrontDoors, tmp_path: Path
) -> None:
    client = _openai(stack)
    question = "Can you tell me the way to the train station?"
    wav = tmp_path / "question.wav"
    pcm = silence(0.3) + speech(question) + silence(0.3)
    with wav.open("wb") as f:
        write_wav(f, pcm, MIC.sample_rate)
    with wav.open("rb") as f:
        result = client.audio.transcriptions.create(model="whisper-1", file=f)
    assert word_error_rate(question, result.text) <= 0.3, result.text
    with wav.open("rb") as f:
        text = client.audio.transcriptions.create(model="whisper-1", file=f, response_format="text")
    assert isinstance(text, str) and word_error_rate(question, text) <= 0.3
    with wav.open("rb") as f:
        verbose = client.audio.transcriptions.create(
            model="whisper-1", file=f, response_format="verbose_json", language="en"
        )
    assert verbose.language == "english"
    assert abs(verbose.duration - len(pcm) / 2 / MIC.sample_rate) < 0.05
    assert verbose.segments and verbose.segments[0].end > 1.0
    # An Opus file (another container, another codec, 48 kHz) transcribes the same.
    opus = client.audio.speech.create(
        model="tts-1", voice="nova", input=MUSEUM, response_format="opus"
    )
    result = client.audio.transcriptions.create(
        model="whisper-1", file=("museum.ogg", opus.content, "audio/ogg")
    )
    assert word_error_rate(MUSEUM, result.text) <= 0.3, result.text


def test_openai_requests_it_cannot_serve_get_openai_shaped_errors(stack: FrontDoors) -> None:
    client = _openai(stack)
    cases: list[tuple[dict[str, Any], str]] = [
        ({"model": "tts-1", "voice": "nobody", "input": "Hi."}, "voice"),
        ({"model": "no-such-model", "voice": "alloy", "input": "Hi."}, "model"),
        ({"model": "tts-1", "voice": "alloy", "input": "Hi.", "speed": 3.0}, "speed"),
        (
            {"model": "tts-1", "voice": "alloy", "input": "Hi.", "response_format": "ogg"},
            "response_format",
        ),
        ({"model": "tts-1", "voice": "alloy", "input": "x" * 501}, "input"),  # max_text_chars
        ({"model": "tts-1", "voice": "alloy", "input": "bell\x07"}, "input"),
    ]
    for kwargs, param in cases:
        with pytest.raises(openai.BadRequestError) as caught:
            client.audio.speech.create(**kwargs)
        error = caught.value.body
        assert isinstance(error, dict) and error["param"] == param, (kwargs, error)
        assert error["type"] == "invalid_request_error" and error["message"]
    with pytest.raises(openai.BadRequestError) as caught:
        client.audio.transcriptions.create(model="whisper-1", file=("x.wav", b"not audio" * 50))
    assert isinstance(caught.value.body, dict) and caught.value.body["code"] == "invalid_audio"
    # FFmpeg's playlist formats would open a file the upload names, one the gateway can read
    # (relative to its working directory): not an audio container, refused.
    secret = ROOT / f"front-doors-probe-{os.getpid()}.wav"
    with secret.open("wb") as f:
        write_wav(f, speech("This file must stay private."), MIC.sample_rate)
    playlist = f"ffconcat version 1.0\nfile '{secret.name}'\n".encode()
    try:
        with pytest.raises(openai.BadRequestError) as caught:
            client.audio.transcriptions.create(model="whisper-1", file=("x.wav", playlist))
    finally:
        secret.unlink()
    assert isinstance(caught.value.body, dict) and caught.value.body["code"] == "invalid_audio"
    with pytest.raises(openai.BadRequestError) as caught:
        client.audio.transcriptions.create(
            model="whisper-1", file=("x.wav", b"RIFF"), language="fr"
        )
    assert isinstance(caught.value.body, dict) and caught.value.body["param"] == "language"
    assert {"tts-1", "whisper-1"} <= {m.id for m in client.models.list()}


# ---------------------------------------------------------------------------- older project


def test_an_older_project_client_at_slash_gets_its_own_protocol(stack: FrontDoors) -> None:
    """As that project's CLI client does: connect to the default URL (no path), decode every
    message as UTF-8 JSON (a binary frame would end its receive loop), send ``text`` with
    ``is_final``; its audio model requires ``sequence`` >= 1."""
    url = stack.http.replace("http://", "ws://") + "/"
    got: list[dict[str, Any]] = []
    with connect(url, max_size=2**21) as ws:
        for text in ("Hello there.", "Good morning."):
            ws.send(json.dumps({"type": "text", "text": text, "is_final": True}))
            deadline, frames, quiet = time.monotonic() + 30, 0, 0
            while time.monotonic() < deadline and quiet < 2:  # no end marker: audio stops
                try:
                    message = ws.recv(timeout=0.5)
                except TimeoutError:
                    quiet += frames > 0
                    continue
                data = json.loads(
                    message.decode("utf-8") if isinstance(message, bytes) else message
                )
                got.append(data)
                frames += data["type"] == "audio"
    assert {m["type"] for m in got} <= {"session_start", "audio", "session_end", "error"}, got
    assert got[0]["type"] == "session_start" and got[0]["session_id"]
    audio = [m for m in got if m["type"] == "audio"]
    assert [m["sequence"] for m in audio] == list(range(1, len(audio) + 1))
    assert all(len(base64.b64decode(m["pcm"])) == 1920 and m["sample_rate"] == 48000 for m in audio)
    pcm = b"".join(base64.b64decode(m["pcm"]) for m in audio)
    assert word_error_rate("Hello there. Good morning.", transcribe(pcm)) <= 0.3
    page = urllib.request.urlopen(stack.http + "/", timeout=5).read().decode()
    assert "<html" in page.lower()  # a plain GET / is still the page
