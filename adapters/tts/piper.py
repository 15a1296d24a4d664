"""Piper voices (VITS on ONNX, CPU) with fast first audio.

Piper synthesizes a whole sentence per inference, and its time grows with the sentence: the
first audio of a 100-character sentence waits for all of it. So the first sentence of an
utterance is phonemized whole (espeak sees the full sentence) and its phonemes are cut at a
clause mark or a word gap near :data:`FIRST_UNIT_PHONEMES`; the short head is synthesized
first and the rest follows while it plays, in units that grow (:data:`GROWTH`) so each is
rendered before the audio already made runs out, even with several streams sharing the CPU.
Later units are whole sentences, long ones cut at clause marks, so no unit exceeds
:data:`MAX_UNIT_PHONEMES` (bounding memory and the time a PAUSE or STOP waits for an
inference in flight). ONNX Runtime's threads do not spin between inferences: spinning
steals the CPU from the other streams (and processes) on a small machine. Its memory arena gives
back what an inference used when the inference ends (:data:`RUN_OPTIONS`), and it keeps no
per-shape memory plans: either would hold the worker's memory at the largest inference it has
ever run (scripts/bench_tts_memory).

Audio is taken raw from the model (Piper's own per-sentence peak normalisation would make
loudness jump between sentences); the shared :class:`~adapters.tts.base.Renderer` applies one
fixed gain per utterance. Rendered units are kept in an LRU phrase cache shared by every
utterance on the voice (pure function of phonemes and speed), so repeated greetings and fillers
cost nothing.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime
from piper import PiperVoice, SynthesisConfig, espeakbridge
from piper.config import PiperConfig

from adapters.tts.base import SynthesisOptions, TtsEngine
from adapters.tts.voicepacks import VoicePack

FIRST_UNIT_PHONEMES = 12
"""Target length of an utterance's first unit, two or three words: about 50-70 ms of inference
on a 2-core CPU, where a whole 100-character sentence takes 300-400 ms (scripts/bench_tts).
A voice pack may set its own with ``params.first_unit_phonemes``."""
MAX_UNIT_PHONEMES = 200
"""Longest unit rendered in one inference (about 12 s of speech)."""
GROWTH = (20, 48, 100)
"""Limits of the units after the first: a unit renders in about a tenth of the time its
predecessor plays, under one stream; three times as long leaves room for several streams."""
MIN_TAIL_PHONEMES = 6
"""A first sentence is not cut if the rest would be shorter than this."""
CLAUSE_MARKS = frozenset(",;:\u2014\u2013")  # and em and en dashes
RUN_OPTIONS = onnxruntime.RunOptions()
"""Every inference's options: the CPU arena frees its unused regions when the run ends. Kept,
they hold the largest inference's worth for good: a 200-phoneme unit at half speed is +290 MiB;
ever-longer sentences made the worker's RSS climb through a 30-minute soak (bench_chaos)."""
RUN_OPTIONS.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")


def _set_espeak_voice_once() -> None:
    """Make piper's ``espeakbridge.set_voice`` a no-op when the voice is already set.

    Piper sets the espeak voice before every text it phonemizes, and each call leaks about
    1.3 KiB inside its espeak bridge (espeak-ng loads the voice again): 26 MiB over 20 000
    sentences, the TTS worker's slow climb through a soak (scripts/bench_chaos). Piper holds
    one lock across ``set_voice`` and ``get_phonemes``, so the voice last set is the one in
    force; this runs under that lock too. ``get_phonemes`` itself still leaks about 0.5 KiB per
    sentence (more with more clauses), which no caller can avoid."""
    real = getattr(espeakbridge, "set_voice", None)
    if real is None or getattr(real, "remembers", False):
        return
    current: list[str] = []

    def set_voice(voice: str) -> None:
        if current != [voice]:
            real(voice)
            current[:] = [voice]

    set_voice.remembers = True  # type: ignore[attr-defined]
    espeakbridge.set_voice = set_voice


_set_espeak_voice_once()


class PiperEngine(TtsEngine):
    """A Piper voice loaded in onnxruntime."""

    def __init__(self, voice: VoicePack) -> None:
        super().__init__(voice)
        self.model = _load_voice(voice.weight_path("model"), voice.weight_path("config"))
        if self.model.config.sample_rate != voice.sample_rate:
            raise ValueError(
                f"{voice.model_id}: metadata says {voice.sample_rate} Hz, the model's config "
                f"says {self.model.config.sample_rate} Hz"
            )
        self.cache = PhraseCache(int(voice.params.get("phrase_cache_mb", 16)) * 1024 * 1024)
        self.first_unit = int(voice.params.get("first_unit_phonemes", FIRST_UNIT_PHONEMES))

    def plan(self, text: str, first: bool) -> list[Any]:
        units: list[tuple[str, ...]] = []
        for phonemes in self.model.phonemize(text):
            if not phonemes:
                continue
            if first and not units:
                head, phonemes = split_first(phonemes, self.first_unit)
                if head:
                    units.append(tuple(head))
                    for limit in GROWTH:
                        if phonemes:
                            piece, phonemes = cut(phonemes, limit)
                            units.append(tuple(piece))
            units += [tuple(p) for p in split_long(phonemes, MAX_UNIT_PHONEMES) if p]
        return units

    def render(self, unit: Any, options: SynthesisOptions) -> np.ndarray:
        key = (unit, options.speed)
        cached = self.cache.get(key)
        if cached is not None:
            return cached
        ids = self.model.phonemes_to_ids(list(unit))
        config = SynthesisConfig(length_scale=self.model.config.length_scale / options.speed)
        audio = np.asarray(self.model.phoneme_ids_to_audio(ids, config), dtype=np.float32)
        self.cache.put(key, audio)
        return audio

    def cached_bytes(self) -> tuple[int, int]:
        return self.cache.bytes, self.cache.max_bytes


def split_first(
    phonemes: list[str], target: int = FIRST_UNIT_PHONEMES
) -> tuple[list[str], list[str]]:
    """A short head for fast first audio and the rest; ``([], phonemes)`` when it is short."""
    if len(phonemes) <= target + MIN_TAIL_PHONEMES:
        return [], phonemes
    # The last clause mark up to a little past the target reads best; else the last word gap.
    marks = [i + 1 for i in range(4, target + 4) if phonemes[i] in CLAUSE_MARKS]
    cut = marks[-1] if marks else 0
    if not cut:
        gaps = [i for i in range(4, target + 1) if phonemes[i] == " "]
        cut = gaps[-1] if gaps else target
    if len(phonemes) - cut < MIN_TAIL_PHONEMES:
        return [], phonemes
    return phonemes[:cut], _lstrip(phonemes[cut:])


def split_long(phonemes: list[str], limit: int) -> list[list[str]]:
    """``phonemes`` in pieces of at most ``limit``, cut after clause marks or at word gaps."""
    pieces = []
    while phonemes:
        piece, phonemes = cut(phonemes, limit)
        pieces.append(piece)
    return pieces


def cut(phonemes: list[str], limit: int) -> tuple[list[str], list[str]]:
    """The first piece of at most ``limit`` (after a clause mark or at a word gap), and the rest."""
    if len(phonemes) <= limit:
        return phonemes, []
    marks = [i + 1 for i in range(limit // 2, limit) if phonemes[i] in CLAUSE_MARKS]
    gaps = [i for i in range(limit // 2, limit) if phonemes[i] == " "]
    at = marks[-1] if marks else gaps[-1] if gaps else limit
    return phonemes[:at], _lstrip(phonemes[at:])


def _load_voice(model: Path, config: Path) -> PiperVoice:
    options = onnxruntime.SessionOptions()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    # The memory pattern plans one arena layout per input shape; every text length is a new
    # shape, so with it on the worker's RSS grows with each new length it has seen.
    options.enable_mem_pattern = False
    session = _Session(str(model), sess_options=options, providers=["CPUExecutionProvider"])
    with config.open(encoding="utf-8") as f:
        return PiperVoice(config=PiperConfig.from_dict(json.load(f)), session=session)


class _Session(onnxruntime.InferenceSession):  # type: ignore[misc]
    """An inference session whose runs (Piper passes no options) use :data:`RUN_OPTIONS`."""

    def run(
        self,
        output_names: list[str] | None,
        input_feed: dict[str, Any],
        run_options: onnxruntime.RunOptions | None = None,
    ) -> list[Any]:
        return super().run(output_names, input_feed, run_options or RUN_OPTIONS)  # type: ignore[no-any-return]


def _lstrip(phonemes: list[str]) -> list[str]:
    start = 0
    while start < len(phonemes) and phonemes[start] == " ":
        start += 1
    return phonemes[start:]


class PhraseCache:
    """LRU of rendered units, bounded in bytes, safe to use from several threads."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self.hits = 0
        self.misses = 0
        self._items: OrderedDict[Any, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Any) -> np.ndarray | None:
        with self._lock:
            audio = self._items.get(key)
            if audio is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return audio

    def put(self, key: Any, audio: np.ndarray) -> None:
        if audio.nbytes > self.max_bytes // 4:
            return  # one long unit would flush everything else
        audio.flags.writeable = False  # shared between utterances: read-only
        with self._lock:
            if key in self._items:
                return
            self._items[key] = audio
            self.bytes += audio.nbytes
            while self.bytes > self.max_bytes:
                _, old = self._items.popitem(last=False)
                self.bytes -= old.nbytes
