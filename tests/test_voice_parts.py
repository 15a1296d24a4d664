"""The parts of speech in, one at a time, with the real models: microphone re-framing, VAD
(webrtcvad and Silero), Whisper, echo matching, playout's barge-in hold, and the
OpenAI-compatible dialogue adapter against a real HTTP server."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import numpy as np
import pytest

from actors.asr import Asr
from actors.supervisor.echo import is_echo
from actors.vad import Vad, VadSettings
from adapters.asr.whisper import WhisperAsr, trim_repeats
from adapters.dialogue import DialogueError, Turn, load_dialogue
from adapters.dialogue.openai import OpenAiDialogue
from adapters.vad.detector import Boundary, Detector
from bus import topics
from bus.audio_format import BOT, MIC
from bus.broker import Broker
from bus.runtime import Actor, Inbound
from bus.schema.asr import Transcript
from bus.schema.audio import AudioFrame
from bus.schema.session import DropSession, ServeSession
from bus.schema.tts import EndReason
from bus.schema.vad import SpeechEnd, SpeechStart
from bus.settings import load_settings
from bus.topology import ActorConfig
from tests.support import free_port, word_error_rate
from tests.test_runtime import configs, run, running, until
from tests.voicekit import FakeLlm, mix, noise, silence, speech
from transports.mic import MicInput
from transports.playout import Playout

pytestmark = pytest.mark.timeout(60)

FRAME_BYTES = MIC.frame_bytes
"""One 20 ms frame of microphone audio, as VAD and ASR take it."""


def test_48k_microphone_audio_in_any_chunks_matches_one_continuous_resampling() -> None:
    t = np.arange(48_000 * 2) / 48_000
    tone = (0.5 * np.sin(2 * np.pi * 440 * t) * 32767).astype("<i2").tobytes()
    whole = MicInput(48_000)
    reference = b"".join(f.pcm for f in whole.push(tone))
    chunked, out, rng, i = MicInput(48_000), [], np.random.default_rng(1), 0
    while i < len(tone):
        n = 2 * int(rng.integers(1, 2000))
        out += chunked.push(tone[i : i + n])
        i += n
    pcm = b"".join(f.pcm for f in out)
    assert len(reference) - FRAME_BYTES <= len(pcm) <= len(reference)
    # The same signal as one continuous resampling, to the last bit or so (float rounding).
    same = np.frombuffer(reference[: len(pcm)], "<i2").astype(int)
    assert np.max(np.abs(np.frombuffer(pcm, "<i2").astype(int) - same)) <= 2
    assert all(len(f.pcm) == FRAME_BYTES for f in out)
    assert [f.sequence for f in out] == list(range(len(out)))
    assert [f.stream_sample for f in out] == [MIC.frame_samples * n for n in range(len(out))]
    # No seams: the 16 kHz signal is still a clean 440 Hz tone (no clicks at chunk edges).
    samples = np.frombuffer(pcm, "<i2").astype(np.float64)[800:]
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    peak = int(np.argmax(spectrum))
    assert abs(peak * MIC.sample_rate / len(samples) - 440) < 2
    assert spectrum[peak] / np.sort(spectrum)[-50] > 100  # nothing else near its level


def test_microphone_input_refuses_odd_bytes_and_unknown_rates() -> None:
    with pytest.raises(ValueError):
        MicInput(44_100)
    with pytest.raises(ValueError):
        MicInput().push(b"\x00\x01\x02")


def run_detector(model: str, pcm: bytes, bot_speaking: bool = False) -> list[Boundary]:
    settings = load_settings(
        VadSettings, {"model": model, "min_silence_ms": 240, "preroll_ms": 300}, kind="vad"
    )
    detector = Detector(settings.new_model(), settings.detector_config())
    found = []
    for i in range(0, len(pcm) - FRAME_BYTES + 1, FRAME_BYTES):
        boundary = detector.feed(pcm[i : i + FRAME_BYTES], i // 2, bot_speaking)
        if boundary is not None:
            found.append(boundary)
    return found


@pytest.mark.parametrize("model", ["webrtc", "silero"])
def test_vad_finds_one_utterance_in_silence_stamped_in_stream_time(model: str) -> None:
    said = speech("The quick brown fox jumps over the lazy dog.")
    found = run_detector(model, silence(1.0) + said + silence(1.0))
    assert [b.kind for b in found] == ["start", "end"]
    start, end = found
    second, said_end = MIC.samples(1000), MIC.samples(1000) + len(said) // 2
    assert second <= start.sample < second + MIC.samples(500)  # after the second of silence
    assert start.preroll_sample == start.sample - MIC.samples(300)  # 300 ms of pre-roll
    assert said_end - MIC.samples(500) < end.sample <= said_end + MIC.samples(250)


@pytest.mark.parametrize("model", ["webrtc", "silero"])
def test_vad_ignores_silence_and_quiet_noise(model: str) -> None:
    assert run_detector(model, silence(2.0)) == []
    assert run_detector(model, noise(3.0, -60)) == []  # under the noise gate


def test_the_noise_gate_counts_quiet_frames_as_silence_so_speech_ends() -> None:
    found = run_detector("webrtc", speech("Good morning to you.") + noise(2.0, -62))
    assert [b.kind for b in found] == ["start", "end"]


def test_vad_is_stricter_while_the_bot_speaks() -> None:
    # The same moderate noise starts speech for a listening bot's VAD, never for a speaking one's.
    hum = noise(3.0, -45, seed=7)
    listening = run_detector("webrtc", hum)
    speaking = run_detector("webrtc", hum, bot_speaking=True)
    assert [b.kind for b in listening][:1] == ["start"]  # above the -50 dBFS listening gate
    assert speaking == []  # under the raised gate (-40 dBFS while the bot speaks)


def test_a_stream_that_stops_mid_speech_is_ended_where_it_stopped() -> None:
    settings = VadSettings()
    detector = Detector(settings.new_model(), settings.detector_config())
    said = speech("Hello there I am still talking about the weather")
    fed = 0
    for i in range(0, len(said) - FRAME_BYTES, FRAME_BYTES):
        detector.feed(said[i : i + FRAME_BYTES], i // 2, False)
        fed += detector.speaking
        if fed == 10:  # 200 ms into the speech, the client goes quiet (no more audio)
            break
    assert detector.speaking
    end = detector.flush()
    assert end is not None and end.kind == "end" and end.sample == detector.next_sample


@pytest.fixture(scope="module")
def whisper() -> WhisperAsr:
    engine = WhisperAsr()
    engine.warm()
    return engine


def as_float(pcm: bytes) -> np.ndarray:
    return np.frombuffer(pcm, "<i2").astype(np.float32) / 32768


def test_whisper_transcribes_speech_and_returns_nothing_for_noise(whisper: WhisperAsr) -> None:
    text = "Please book a table for two at seven tonight."
    heard = whisper.transcribe(as_float(silence(0.3) + speech(text) + silence(0.3)))
    assert word_error_rate(text, heard.text) < 0.35, heard
    assert 0 < heard.rtf < 1
    for pcm in (silence(1.0), noise(0.4, -20), noise(1.5, -30, seed=2)):
        result = whisper.transcribe(as_float(pcm))
        assert result.text == "", result


def test_a_decoder_loop_is_cut_and_real_repetition_kept() -> None:
    assert trim_repeats("Where did I leave my car keys? Where did I leave my") == (
        "Where did I leave my car keys?"
    )
    assert trim_repeats("Yes. Yes. Yes. Yes.") == "Yes. Yes. Yes. Yes."  # rounds under 3 words
    assert trim_repeats("stop stop stop it now") == "stop stop stop it now"
    assert trim_repeats("one two three one two three one two") == "one two three"
    # scripts/bench_voice heard this loop: its second round has no full stop
    assert trim_repeats("Open the garage door for me. Open the garage door for me") == (
        "Open the garage door for me."
    )


def test_whisper_hears_speech_through_background_noise(whisper: WhisperAsr) -> None:
    text = "Turn the lights off in the kitchen."
    heard = whisper.transcribe(as_float(mix(silence(0.3) + speech(text), noise(3.0, -40))))
    assert word_error_rate(text, heard.text) < 0.4, heard


def test_echo_is_what_the_bot_just_said_and_not_what_the_person_adds() -> None:
    bot = ["Once upon a time there was a lighthouse keeper who counted the waves."]
    assert is_echo("a lighthouse keeper who counted the waves", bot)
    assert is_echo("there was a lighthouse keeper", bot)
    assert not is_echo("stop, what time is it?", bot)
    assert not is_echo("tell me about the lighthouse instead please", bot)
    assert not is_echo("anything", [])


async def _held_playout() -> tuple[list[int], int, int]:
    sent: list[int] = []
    ended: list[tuple[str, int, int]] = []

    async def send(_uid: str, frame: bytes, _play_at: float) -> None:
        sent.append(frame[0])

    async def on_started(_uid: str) -> None:
        pass

    async def on_ended(_uid: str, reason: EndReason, played: int, words: int) -> None:
        ended.append((f"end:{reason}", played, words))

    playout = Playout(send, on_started, on_ended, lead_s=0.06)
    task = asyncio.get_running_loop().create_task(playout.run())
    for i in range(40):
        playout.add_frame("u", bytes([i]) * BOT.frame_bytes, words=i // 4)
    playout.end("u")
    await asyncio.sleep(0.2)
    back = playout.hold()
    held_at = len(sent)
    await asyncio.sleep(0.2)
    assert len(sent) == held_at  # silent while held
    playout.resume()
    await asyncio.sleep(1.0)
    task.cancel()
    assert ended == [("end:completed", 40, 9)]
    return sent, back, held_at


def test_a_barge_in_hold_takes_back_the_unplayed_lead_and_resume_loses_nothing() -> None:
    sent, back, held_at = asyncio.run(_held_playout())
    assert 2 <= back <= 4  # 60 ms of lead: the frames not yet due to play
    assert sent[:held_at] == list(range(held_at))
    assert sent[held_at:] == list(range(held_at - back, 40))  # again from the first unheard


@pytest.fixture(scope="module")
def llm() -> Iterator[FakeLlm]:
    server = FakeLlm()
    yield server
    server.close()


async def _reply(dialogue: OpenAiDialogue) -> str:
    try:
        return "".join([c async for c in dialogue.reply([Turn("user", "hi")])])
    finally:
        await dialogue.close()


def openai(base_url: str) -> OpenAiDialogue:
    return OpenAiDialogue(base_url, "m", first_token_timeout_s=1.0, idle_timeout_s=1.0)


def test_the_openai_adapter_streams_and_reports_each_failure(llm: FakeLlm) -> None:
    llm.mode, llm.delay_s, llm.reply = "stream", 0.01, "One. Two three."
    assert asyncio.run(_reply(openai(llm.base_url))) == "One. Two three."
    sent = llm.requests[-1]
    assert sent["stream"] is True and sent["messages"][-1] == {"role": "user", "content": "hi"}
    for mode, code in (("error", "DIALOGUE_FAILED"), ("garbage", "DIALOGUE_FAILED")):
        llm.mode = mode
        with pytest.raises(DialogueError) as failed:
            asyncio.run(_reply(openai(llm.base_url)))
        assert failed.value.code == code
    llm.mode, llm.delay_s = "slow", 2.0
    with pytest.raises(DialogueError) as slow:
        asyncio.run(_reply(openai(llm.base_url)))
    assert slow.value.code == "DIALOGUE_TIMEOUT"
    with pytest.raises(DialogueError) as down:
        asyncio.run(_reply(openai(f"http://127.0.0.1:{free_port()}/v1")))
    assert down.value.code == "DIALOGUE_UNAVAILABLE"


def test_interrupted_turns_reach_the_model_marked_and_unknown_adapters_are_refused() -> None:
    dialogue = OpenAiDialogue("http://127.0.0.1:1/v1", "m", system_prompt="Be brief.")
    history = [Turn("user", "story?"), Turn("assistant", "Once upon", interrupted=True)]
    assert dialogue.messages(history) == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "story?"},
        {"role": "assistant", "content": "Once upon [interrupted]"},
    ]
    with pytest.raises(DialogueError):
        load_dialogue("nonsense", {})
    with pytest.raises(DialogueError):
        OpenAiDialogue("ftp://example", "m")


class Microphone(Actor):
    """Publishes what the gateway (and VAD) would for a session; records VAD's speech boundaries
    and the ASR's transcripts."""

    def __init__(self, config: ActorConfig) -> None:
        super().__init__(config)
        self.boundaries: list[SpeechStart | SpeechEnd] = []
        self.transcripts: list[Transcript] = []
        self.subscribe(topics.VAD)
        self.subscribe(topics.ASR)

    async def on_message(self, inbound: Inbound) -> None:
        if isinstance(inbound.message, SpeechStart | SpeechEnd):
            self.boundaries.append(inbound.message)
        elif isinstance(inbound.message, Transcript):
            self.transcripts.append(inbound.message)

    async def frames(self, sid: str, pcm: bytes, first_sample: int, pace_s: float = 0.005) -> None:
        """``pcm`` as 20 ms frames from ``first_sample`` on, ``pace_s`` apart."""
        topic = topics.topic(topics.AUDIO_IN, sid)
        for i in range(0, len(pcm) - FRAME_BYTES + 1, FRAME_BYTES):
            sample = first_sample + i // 2
            pcm_20ms = pcm[i : i + FRAME_BYTES]
            frame = AudioFrame(
                sample_rate=MIC.sample_rate,
                sequence=sample // MIC.frame_samples,
                stream_sample=sample,
                pcm=pcm_20ms,
            )
            await self.publish(topic, frame, session=sid)
            await asyncio.sleep(pace_s)


def test_the_vad_actor_refuses_bad_frames_and_keeps_hearing_good_ones() -> None:
    broker_cfg, actor = configs()
    vad, mic = Vad(actor("vad")), Microphone(actor("mic"))
    said = silence(0.5) + speech("Are you still listening to me?") + silence(1.0)
    topic = topics.topic(topics.AUDIO_IN, "s-1")

    async def body() -> None:
        async with running(Broker(broker_cfg), vad, mic):
            await until(lambda: vad.registered.is_set() and mic.registered.is_set(), 10, "up")
            await until(lambda: mic.registry.get(vad.id) is not None, 10, "mic sees the VAD")
            await mic.send(vad.id, ServeSession(), session="s-1")  # as the gateway does
            await asyncio.sleep(0.3)  # subscriptions reach the proxy
            rate, two_frames = MIC.sample_rate, 2 * MIC.frame_bytes
            bot_frame = AudioFrame(
                sample_rate=BOT.sample_rate, sequence=0, stream_sample=0, pcm=bytes(BOT.frame_bytes)
            )
            bad = [
                bot_frame,  # the wrong rate
                AudioFrame(sample_rate=rate, sequence=0, stream_sample=0, pcm=bytes(100)),
                AudioFrame(sample_rate=rate, sequence=0, stream_sample=0, pcm=bytes(two_frames)),
            ]
            for frame in bad:
                await mic.publish(topic, frame, session="s-1")
            await mic.publish(topic, bad[0], session="")  # no session
            await mic.frames("s-1", said, 0, pace_s=0.002)
            await until(lambda: len(mic.boundaries) >= 2, 10, "speech start and end")
            assert [type(b) for b in mic.boundaries] == [SpeechStart, SpeechEnd]
            assert 8_000 <= mic.boundaries[0].stream_sample < 16_000
            rejected = vad.metrics.registry.get_sample_value("duplex_vad_frames_rejected_total")
            assert rejected == 4
            assert vad.load == 1 / vad.max_sessions  # one session served
            # Another session's audio, and this one's once dropped, never reach it at all.
            judged = vad.metrics.registry.get_sample_value("duplex_vad_frames_total")
            await mic.frames("s-2", said, 0, pace_s=0.002)
            await mic.send(vad.id, DropSession(), session="s-1")
            await asyncio.sleep(0.3)  # the unsubscription reaches the proxy
            await mic.frames("s-1", said, len(said) // 2, pace_s=0.002)
            await asyncio.sleep(0.5)
            assert vad.metrics.registry.get_sample_value("duplex_vad_frames_total") == judged
            assert len(mic.boundaries) == 2 and vad.load == 0

    run(body)


@pytest.mark.timeout(120)
def test_the_asr_waits_for_the_audio_up_to_a_speech_end_that_came_before_it() -> None:
    """VAD hears the frames at its own pace and on a loaded machine runs ahead of the ASR: its
    speech_end can arrive before the person's last words have. The final must still hold every
    word, not the early final taken in the pause before them."""
    broker_cfg, actor = configs()
    asr, mic = Asr(actor("asr")), Microphone(actor("mic"))
    lead, first, pause = silence(0.5), speech("Hold on a second."), silence(0.25)
    second, tail = speech("What time is it now?"), silence(0.6)
    split = len(lead + first + pause) // 2  # samples
    start, end = len(lead) // 2, split + len(second) // 2
    vad = topics.topic(topics.VAD, "s-1")

    async def body() -> None:
        async with running(Broker(broker_cfg), asr, mic):
            await until(lambda: asr.engine is not None and mic.registered.is_set(), 60, "up")
            await until(lambda: mic.registry.get(asr.id) is not None, 10, "mic sees the ASR")
            await mic.send(asr.id, ServeSession(), session="s-1")  # as the gateway does
            await asyncio.sleep(0.3)  # subscriptions reach the proxy
            await mic.frames("s-1", lead, 0)
            speech_start = SpeechStart(stream_sample=start, preroll_sample=start - 4800)
            await mic.publish(vad, speech_start, session="s-1")
            await mic.frames("s-1", first + pause, start)
            stream = asr.streams["s-1"]
            await until(
                lambda: stream.early is not None and stream.early.result is not None,
                20,
                "the early final of the first words",
            )
            await mic.publish(vad, SpeechEnd(stream_sample=end), session="s-1")
            await asyncio.sleep(0.1)  # ... and only then the rest of the audio
            await mic.frames("s-1", second + tail, split)
            await until(lambda: any(t.final for t in mic.transcripts), 20, "the final")
            await asyncio.sleep(1.0)  # no second final
            finals = [t.text for t in mic.transcripts if t.final]
            assert len(finals) == 1, finals
            said = "Hold on a second. What time is it now?"
            assert word_error_rate(said, finals[0]) < 0.3, finals

    run(body, timeout=110)
