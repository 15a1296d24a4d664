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

import ctypes
import json
import sys
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import onnx
import onnxruntime
from piper import PiperVoice, SynthesisConfig, espeakbridge
from piper.config import PiperConfig
from piper.patch_voice_with_alignment import add_alignment_output

from adapters.devices import Device
from adapters.tts.base import SynthesisOptions, TtsEngine
from adapters.tts.voicepacks import VoicePack

FIRST_UNIT_PHONEMES = 12
"""Target length of an utterance's first unit, two or three words: with its two words of right
context about 70-100 ms of inference on a 2-core CPU (50-70 alone), where a whole 100-character
sentence takes 300-400 ms (scripts/bench_tts, docs/benchmarks.md). Shorter heads cost words
(8 phonemes: WER 0.065 against 0.054, in one process, a harness not in the repo) for
little time. A voice pack may set its
own with ``params.first_unit_phonemes``."""
MAX_UNIT_PHONEMES = 200
"""Longest unit rendered in one inference (about 12 s of speech)."""
GROWTH = (20, 48, 100)
"""Limits of the units after the first: a unit renders in about a tenth of the time its
predecessor plays, under one stream; three times as long leaves room for several streams."""
CONTEXT_WORDS = 2
"""Words of its neighbours each unit is rendered with (see :class:`Unit`). Alone, a unit is
read as a phrase: the model closes it with a falling pitch, lengthening and a pause, and opens
the next as if the sentence began again. On bench_tts's 30 sentences, through the worker's
render path in one process (not a bench_tts run), units alone were 16 % longer than raw
Piper's whole sentences, with up to half a second of silence inserted, and tiny.en's word error
rate 0.099 against 0.053; with two words of context 1.4 % longer, at most 40 ms inserted, 0.053
against 0.056 (one word: 3 % longer; three: 0.075). tests/test_tts_units.py checks the
durations and gaps. A voice pack may set ``params.context_words`` (0 renders units alone, as
must a model that does not report its durations)."""
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
    1.3 KiB inside espeak-ng (it loads the voice again): 26 MiB over 20 000 calls alone. Piper holds
    one lock across ``set_voice`` and ``get_phonemes``, so the voice last set is the one in
    force; this runs under that lock too."""
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


def _release_espeak_clauses() -> None:
    """Make piper's ``espeakbridge.get_phonemes`` give back every clause it returns.

    The bridge (piper-tts 1.8.0, ``src/piper/espeakbridge.c``) appends each clause's
    ``(phonemes, terminator, sentence_end)`` tuple to its list with ``PyList_Append`` after
    ``Py_BuildValue`` and never drops its own reference: every tuple and its two strings live
    for good, about 1 KiB per five-clause sentence (19 MiB over 20 000 of them, measured in
    one process): the TTS worker's climb through a soak (scripts/bench_chaos).
    This drops that extra reference, only where a tuple holds exactly one more than a list
    alone gives it here (calibrated at import): a bridge that is fixed is left be.
    """
    real = getattr(espeakbridge, "get_phonemes", None)
    if real is None or getattr(real, "releases", False):
        return
    probe = [tuple(["probe", "", False])]  # built at run time, as the bridge builds its own
    held = 0
    for item in probe:  # the same shape as below: the list's, the loop's and the call's
        held = sys.getrefcount(item)

    def get_phonemes(text: str) -> list[tuple[str, str, bool]]:
        clauses: list[tuple[str, str, bool]] = real(text)
        for clause in clauses:
            if isinstance(clause, tuple) and sys.getrefcount(clause) == held + 1:
                ctypes.pythonapi.Py_DecRef(ctypes.py_object(clause))
        return clauses

    get_phonemes.releases = True  # type: ignore[attr-defined]
    espeakbridge.get_phonemes = get_phonemes


_set_espeak_voice_once()
_release_espeak_clauses()


class PiperEngine(TtsEngine):
    """A Piper voice loaded in onnxruntime."""

    def __init__(self, voice: VoicePack, device: Device | None = None) -> None:
        super().__init__(voice)
        self.device = device or Device("cpu")
        self.model = _load_voice(
            voice.weight_path("model"), voice.weight_path("config"), self.device
        )
        if self.model.config.sample_rate != voice.sample_rate:
            raise ValueError(
                f"{voice.model_id}: metadata says {voice.sample_rate} Hz, the model's config "
                f"says {self.model.config.sample_rate} Hz"
            )
        self.cache = PhraseCache(int(voice.params.get("phrase_cache_mb", 16)) * 1024 * 1024)
        self.first_unit = int(voice.params.get("first_unit_phonemes", FIRST_UNIT_PHONEMES))
        self.context_words = int(voice.params.get("context_words", CONTEXT_WORDS))
        if len(self.model.session.get_outputs()) < 2:  # no durations: units cannot overlap
            self.context_words = 0

    def plan(self, text: str, first: bool) -> list[Any]:
        units: list[Unit] = []
        for phonemes in self.model.phonemize(text):
            if not phonemes:
                continue
            pieces: list[list[str]] = []
            if first and not units:
                head, phonemes = split_first(phonemes, self.first_unit)
                if head:
                    pieces.append(head)
                    for limit in GROWTH:
                        if phonemes:
                            piece, phonemes = cut(phonemes, limit)
                            pieces.append(piece)
            pieces += [p for p in split_long(phonemes, MAX_UNIT_PHONEMES) if p]
            units += with_context(pieces, self.context_words)
        return units

    def render(self, unit: Any, options: SynthesisOptions) -> np.ndarray:
        key = (unit, options.speed)
        cached = self.cache.get(key)
        if cached is not None:
            return cached
        phonemes = [*unit.left, *unit.body, *unit.right]
        ids = self.model.phonemes_to_ids(phonemes)
        config = SynthesisConfig(length_scale=self.model.config.length_scale / options.speed)
        if unit.left or unit.right:
            raw, samples = self.model.phoneme_ids_to_audio(ids, config, include_alignments=True)
            if samples is None:
                raise RuntimeError(f"{self.voice.model_id} reports no durations")
            start, end = body_span(unit, samples, self.model.config.phoneme_id_map)
            audio = np.asarray(raw, dtype=np.float32).reshape(-1)[start:end]
        else:
            audio = np.asarray(self.model.phoneme_ids_to_audio(ids, config), dtype=np.float32)
        self.cache.put(key, audio)
        return audio

    def cached_bytes(self) -> tuple[int, int]:
        return self.cache.bytes, self.cache.max_bytes


class Unit(NamedTuple):
    """What one inference renders: ``body``, the phonemes whose audio is kept, read with the
    words around it in the sentence (``left`` ending and ``right`` starting with a word gap),
    so the model says ``body`` as the middle of its sentence rather than a phrase of its own."""

    left: tuple[str, ...]
    body: tuple[str, ...]
    right: tuple[str, ...]


def with_context(pieces: list[list[str]], words: int) -> list[Unit]:
    """One sentence's pieces as units, each with up to ``words`` words of its neighbours."""
    units = []
    for i, piece in enumerate(pieces):
        before = _words(pieces[i - 1])[-words:] if i > 0 and words else []
        after = _words(pieces[i + 1])[:words] if i + 1 < len(pieces) and words else []
        left = tuple(p for word in before for p in (*word, " "))
        right = tuple(p for word in after for p in (" ", *word))
        units.append(Unit(left, tuple(piece), right))
    return units


def body_span(
    unit: Unit, samples: np.ndarray, id_map: Mapping[str, Sequence[int]]
) -> tuple[int, int]:
    """The samples of ``unit.body`` in the audio of the whole unit, from the model's samples
    per phoneme id: from the middle of the word gap ending ``left`` to the middle of the one
    starting ``right`` (a gap is where the voice is quietest, and half of it stays each side).

    Piper's ids are BOS, a pad, then each phoneme's ids and a pad, then EOS; phonemes missing
    from the map have no ids."""
    bounds = np.concatenate([[0], np.cumsum(np.asarray(samples).reshape(-1))])
    gaps = []
    at = 2  # BOS and its pad
    for phoneme in [*unit.left, *unit.body, *unit.right]:
        width = len(id_map[phoneme]) + 1 if phoneme in id_map else 0
        gaps.append((at, at + width))
        at += width
    start, end = 0, int(bounds[-1])
    if unit.left:
        first, last = gaps[len(unit.left) - 1]
        start = int((bounds[first] + bounds[last]) // 2)
    if unit.right:
        first, last = gaps[len(unit.left) + len(unit.body)]
        end = int((bounds[first] + bounds[last]) // 2)
    return start, end


def _words(phonemes: list[str]) -> list[list[str]]:
    words: list[list[str]] = [[]]
    for p in phonemes:
        if p == " ":
            words.append([])
        else:
            words[-1].append(p)
    return [w for w in words if w]


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


def _load_voice(model: Path, config: Path, device: Device) -> PiperVoice:
    options = onnxruntime.SessionOptions()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    # The memory pattern plans one arena layout per input shape; every text length is a new
    # shape, so with it on the worker's RSS grows with each new length it has seen.
    options.enable_mem_pattern = False
    session = _Session(with_durations(model), sess_options=options, providers=providers(device))
    if device.kind == "cuda" and "CUDAExecutionProvider" not in session.get_providers():
        # ONNX Runtime falls back to the CPU when its CUDA provider does not load: say so.
        raise ValueError(f"device {device}: ONNX Runtime's CUDA provider did not load")
    with config.open(encoding="utf-8") as f:
        return PiperVoice(config=PiperConfig.from_dict(json.load(f)), session=session)


def providers(device: Device) -> list[Any]:
    """ONNX Runtime's execution providers for ``device`` (the CUDA one with its GPU, and the
    CPU for what it does not run)."""
    if device.kind == "cpu":
        return ["CPUExecutionProvider"]
    return [("CUDAExecutionProvider", {"device_id": device.index}), "CPUExecutionProvider"]


def with_durations(model: Path) -> bytes | str:
    """The model with its phoneme durations (the graph's ``Ceil`` of the duration predictor)
    as a second output, for :class:`Unit`'s context; the model's path unchanged when it
    already has them or none can be found (its units are then rendered alone)."""
    proto = onnx.load(str(model))
    try:
        add_alignment_output(proto)
    except ValueError:  # already an output, or no single Ceil to expose
        return str(model)
    return bytes(proto.SerializeToString())


class _Session(onnxruntime.InferenceSession):  # type: ignore[misc]
    """An inference session whose runs (Piper passes no options) use :data:`RUN_OPTIONS`.

    Made from a model's bytes, onnxruntime (1.x) keeps those bytes for as long as the session
    lives (``_model_bytes``, for re-creating it if a provider fails; there is one, the CPU):
    60 MiB for a medium voice, dropped here."""

    def __init__(self, model: bytes | str, **kwargs: Any) -> None:
        super().__init__(model, **kwargs)
        if isinstance(getattr(self, "_model_bytes", None), bytes):
            self._model_bytes = None

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
