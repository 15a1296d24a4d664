"""Piper voices (VITS on ONNX, CPU) with fast first audio.

Piper synthesizes a whole sentence per inference, and its time grows with the sentence: the
first audio of a 100-character sentence waits for all of it. So the first sentence of an
utterance is phonemized whole (espeak sees the full sentence) and its phonemes are cut at a
clause mark or a word gap near :data:`FIRST_UNIT_PHONEMES`; the short head is synthesized
first and the rest follows while it plays, in units that grow (:data:`GROWTH`) so each is
rendered before the audio already made runs out, even with several streams sharing the CPU.
Later units are whole sentences, long ones cut at clause marks, so no unit exceeds
:data:`MAX_UNIT_PHONEMES` (bounding memory and the time a PAUSE or STOP waits for an
inference in flight). A unit is read with words of its neighbours (:class:`Unit`), and the
model runs in two halves (:class:`Decoder`): the encoder over the whole unit, the decoder,
most of the time, over the unit's own frames only. ONNX Runtime's threads do not spin
between inferences: spinning steals the CPU from the other streams (and processes) on a small
machine. Its memory arena gives back what an inference used when the inference ends
(:data:`RUN_OPTIONS`), and it keeps no per-shape memory plans: either would hold the worker's
memory at the largest inference it has ever run (scripts/bench_tts_memory).

Audio is taken raw from the model (Piper's own per-sentence peak normalisation would make
loudness jump between sentences); the shared :class:`~adapters.tts.base.Renderer` applies one
fixed gain per utterance. Rendered units are kept in an LRU phrase cache shared by every
utterance on the voice (pure function of phonemes and speed), so repeated greetings and fillers
cost nothing.
"""

from __future__ import annotations

import ctypes
import json
import logging
import sys
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import onnx
import onnxruntime
from onnx.utils import Extractor
from piper import PiperVoice, SynthesisConfig, espeakbridge
from piper.config import PiperConfig
from piper.patch_voice_with_alignment import add_alignment_output

from adapters.devices import Device
from adapters.tts.base import SynthesisOptions, TtsEngine
from adapters.tts.voicepacks import VoicePack, VoicePackError

log = logging.getLogger("duplex.models")

FIRST_UNIT_PHONEMES = 12
"""Target length of an utterance's first unit, two or three words: read with its two words of
right context, its first slice out in 48 / 64 ms p50 / p95 on a 2-core CPU (83 / 106 with the
model run whole), where a whole 100-character sentence takes 260-350 ms (scripts/bench_tts's
``first_unit_in_process``, docs/benchmarks.md). Shorter heads cost words (8 phonemes: WER
0.065 against 0.054, in one process, a harness not in the repo) for little time. A voice pack
may set its own with ``params.first_unit_phonemes``."""
MAX_UNIT_PHONEMES = 200
"""Longest unit rendered in one inference (about 12 s of speech)."""
GROWTH = (20, 48, 100)
"""Limits of the units after the first: a unit renders in about a tenth of the time its
predecessor plays, under one stream; three times as long leaves room for several streams.
A voice pack may set ``params.growth`` (a list; empty: the head, then the rest whole)."""
CONTEXT_WORDS = 2
"""Words of its neighbours each unit is rendered with (see :class:`Unit`). Alone, a unit is
read as a phrase: the model closes it with a falling pitch, lengthening and a pause, and opens
the next as if the sentence began again. On bench_tts's 30 sentences, through the worker's
render path in one process (not a bench_tts run), units alone were 16 % longer than raw
Piper's whole sentences, with up to half a second of silence inserted, and tiny.en's word error
rate 0.099 against 0.053; with two words of context 1.4 % longer, at most 40 ms inserted, 0.053
against 0.056 (one word: 3 % longer; three: 0.075). Those word error rates are within
Piper's own noise: on 2026-12-04, 120 renderings per setting in one process, interleaved, gave
two words 0.058, three 0.062, four 0.062, the whole sentence 0.055, raw Piper 0.045; every
setting's gap to raw Piper, paired per rendering, was 0.010-0.017 with a standard error of
0.007, so wider context buys nothing measurable here and costs encoder time
(``scripts/bench_tts_params`` compares settings so; docs/benchmarks.md).
tests/test_tts_units.py checks the durations and gaps. A voice pack may set
``params.context_words`` (0 renders units alone, as must a model that does not report its
durations)."""
FIRST_SLICE_PHONEMES = 2
"""The first unit's first slice (:func:`sliced`) ends at the first word gap after this many
phonemes: its first word or two. A voice pack may set ``params.first_slice_phonemes``."""
READINGS_KEPT = 8
"""Heads' encodings kept for their second slices at most (:meth:`PiperEngine._reading`): one
per utterance starting at once, as many as a worker admits by default."""
DECODER_PAD_FRAMES = 12
"""Latent frames (256 samples each) decoded beyond each side of the audio a unit keeps: the
decoder's convolutions reach this far, so the samples kept match the whole unit decoded within
float rounding (joe-medium, the first four units of bench_tts's 30 quality sentences, peaks up
to 0.77: at most 2e-6 apart at 12 frames, 7e-3 at 8, 0.04 at 4; tests/test_tts_units.py)."""
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
        self.growth = _limits(voice, "growth", GROWTH)  # before the seconds a model load takes
        self.model, self.decoder = _load_voice(
            voice.weight_path("model"),
            voice.weight_path("config"),
            self.device,
            split=_flag(voice, "split_decoder", True),
        )
        if self.model.config.sample_rate != voice.sample_rate:
            raise ValueError(
                f"{voice.model_id}: metadata says {voice.sample_rate} Hz, the model's config "
                f"says {self.model.config.sample_rate} Hz"
            )
        self.cache = PhraseCache(int(voice.params.get("phrase_cache_mb", 16)) * 1024 * 1024)
        self.first_unit = int(voice.params.get("first_unit_phonemes", FIRST_UNIT_PHONEMES))
        self.context_words = int(voice.params.get("context_words", CONTEXT_WORDS))
        self.first_slice = int(voice.params.get("first_slice_phonemes", FIRST_SLICE_PHONEMES))
        self._readings: OrderedDict[Any, tuple[np.ndarray, np.ndarray]] = OrderedDict()
        self._readings_lock = threading.Lock()
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
                    for limit in self.growth:
                        if phonemes:
                            piece, phonemes = cut(phonemes, limit)
                            pieces.append(piece)
            pieces += [p for p in split_long(phonemes, MAX_UNIT_PHONEMES) if p]
            read = with_context(pieces, self.context_words)
            if first and not units and self.decoder is not None:
                read[:1] = sliced(read[0], self.first_slice)
            units += read
        return units

    def render(self, unit: Any, options: SynthesisOptions) -> np.ndarray:
        key = (unit, options.speed)
        cached = self.cache.get(key)
        if cached is not None:
            return cached
        phonemes = [*unit.left, *unit.body, *unit.right]
        ids = self.model.phonemes_to_ids(phonemes)
        config = SynthesisConfig(length_scale=self.model.config.length_scale / options.speed)
        if self.decoder is not None:
            latent, per_id = self._reading(unit, ids, config)
            if unit.left or unit.right:
                span = body_span(unit, per_id, self.model.config.phoneme_id_map)
            else:
                span = (0, latent.shape[2] * self.decoder.hop)
            audio = self.decoder.decode(latent, *span)
        elif unit.left or unit.right:
            raw, samples = self.model.phoneme_ids_to_audio(ids, config, include_alignments=True)
            if samples is None:
                raise RuntimeError(f"{self.voice.model_id} reports no durations")
            start, end = body_span(unit, samples, self.model.config.phoneme_id_map)
            audio = np.asarray(raw, dtype=np.float32).reshape(-1)[start:end]
        else:
            audio = np.asarray(self.model.phoneme_ids_to_audio(ids, config), dtype=np.float32)
        self.cache.put(key, audio)
        return audio

    def _reading(
        self, unit: Unit, ids: list[int], config: SynthesisConfig
    ) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`encode`; a first slice's encoding is kept for its second slice (:func:`sliced`),
        which takes it, so the two decode to one seamless stretch of audio. Kept for at most
        :data:`READINGS_KEPT` heads at once (a second slice that finds none encodes again: its
        join is then an ordinary one)."""
        key = ((*unit.left, *unit.body, *unit.right), config.length_scale)
        if unit.slice == 2:
            with self._readings_lock:
                kept = self._readings.pop(key, None)
            if kept is not None:
                return kept
        reading = self.encode(ids, config)
        if unit.slice == 1:
            with self._readings_lock:
                self._readings[key] = reading
                while len(self._readings) > READINGS_KEPT:
                    self._readings.popitem(last=False)
        return reading

    def clear(self) -> None:
        """Forget rendered units and kept encodings (benchmarks and tests)."""
        self.cache.clear()
        with self._readings_lock:
            self._readings.clear()

    def encode(self, ids: list[int], config: SynthesisConfig) -> tuple[np.ndarray, np.ndarray]:
        """The encoder half: the unit's latent frames and the samples of each phoneme id."""
        voice = self.model.config
        scales = [voice.noise_scale, config.length_scale, voice.noise_w_scale]
        latent, frames = self.model.session.run(
            None,
            {
                "input": np.array([ids], dtype=np.int64),
                "input_lengths": np.array([len(ids)], dtype=np.int64),
                "scales": np.array(scales, dtype=np.float32),
            },
        )
        return latent, (np.asarray(frames).reshape(-1) * voice.hop_length).astype(np.int64)

    def cached_bytes(self) -> tuple[int, int]:
        return self.cache.bytes, self.cache.max_bytes


def _limits(voice: VoicePack, name: str, default: tuple[int, ...]) -> tuple[int, ...]:
    value = voice.params.get(name, default)
    if not isinstance(value, list | tuple) or not all(
        type(n) is int and 0 < n <= MAX_UNIT_PHONEMES for n in value
    ):
        raise VoicePackError(
            f"{voice.model_id}: params.{name} must be a list of phoneme counts, "
            f"each 1-{MAX_UNIT_PHONEMES}"
        )
    return tuple(value)


def _flag(voice: VoicePack, name: str, default: bool) -> bool:
    value = voice.params.get(name, default)
    if not isinstance(value, bool):
        raise VoicePackError(f"{voice.model_id}: params.{name} must be true or false")
    return value


class Decoder:
    """A VITS model's last stage (its HiFi-GAN decoder: latent frames to audio, most of an
    inference's time) as a session of its own, so that a unit read with context decodes only
    the frames of its own audio and :data:`DECODER_PAD_FRAMES` either side, not its
    neighbours' words. The samples kept are those of the whole unit decoded."""

    def __init__(self, session: onnxruntime.InferenceSession, latent: str, hop: int) -> None:
        self.session = session
        self.latent = latent
        self.hop = hop

    def window(self, frames: int, start: int, end: int) -> tuple[int, int]:
        """The latent frames decoded for samples ``start:end`` of ``frames``."""
        lo = max(0, start // self.hop - DECODER_PAD_FRAMES)
        return lo, min(frames, -(-end // self.hop) + DECODER_PAD_FRAMES)

    def decode(self, latent: np.ndarray, start: int, end: int) -> np.ndarray:
        """Samples ``start:end`` of the audio of ``latent`` (1, channels, frames)."""
        lo, hi = self.window(latent.shape[2], start, end)
        window = np.ascontiguousarray(latent[:, :, lo:hi])
        (audio,) = self.session.run(None, {self.latent: window})
        audio = np.asarray(audio, dtype=np.float32).reshape(-1)
        return audio[start - lo * self.hop : end - lo * self.hop]


class Unit(NamedTuple):
    """What one inference renders: ``body``, the phonemes whose audio is kept, read with the
    words around it in the sentence (``left`` ending and ``right`` starting with a word gap),
    so the model says ``body`` as the middle of its sentence rather than a phrase of its own."""

    left: tuple[str, ...]
    body: tuple[str, ...]
    right: tuple[str, ...]
    slice: int = 0
    """1 and 2 for the two slices of one reading (:func:`sliced`), else 0."""


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


def sliced(unit: Unit, at_least: int) -> list[Unit]:
    """``unit`` as two units of one reading (the same ``left + body + right``), cut at the
    first word gap of its body after ``at_least`` phonemes: the first slice's audio goes out
    after the encoder and a decode of its own frames, the second decodes from the same
    encoding (:meth:`PiperEngine._reading`) while the first plays. ``[unit]`` when its body
    has no such gap."""
    body = unit.body
    gaps = [i for i in range(at_least, len(body) - 2) if body[i] == " "]
    if not gaps:
        return [unit]
    at = gaps[0]
    return [
        Unit(unit.left, body[:at], (*body[at:], *unit.right), slice=1),
        Unit((*unit.left, *body[: at + 1]), body[at + 1 :], unit.right, slice=2),
    ]


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


def _load_voice(
    model: Path, config: Path, device: Device, split: bool = True
) -> tuple[PiperVoice, Decoder | None]:
    """The voice, and its decoder when ``split`` and the model splits (:func:`split_decoder`):
    the voice's session is then the encoder half, with the latent frames and the durations as
    outputs."""
    options = onnxruntime.SessionOptions()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    # The memory pattern plans one arena layout per input shape; every text length is a new
    # shape, so with it on the worker's RSS grows with each new length it has seen.
    options.enable_mem_pattern = False
    with config.open(encoding="utf-8") as f:
        piper_config = PiperConfig.from_dict(json.load(f))
    proto = with_durations(model)
    single = piper_config.num_speakers <= 1
    halves = split_decoder(proto) if split and proto is not None and single else None
    sessions: list[onnxruntime.InferenceSession] = []
    decoder = None
    if halves is not None:
        del proto  # the halves hold its weights: one copy at a time
        encoder, decoder_model, latent = halves
        del halves
        try:
            session = _Session(encoder, sess_options=options, providers=providers(device))
            del encoder
            decoder = Decoder(
                _Session(decoder_model, sess_options=options, providers=providers(device)),
                latent,
                piper_config.hop_length,
            )
            sessions += [session, decoder.session]
        except Exception:  # an export the split did not suit: run it whole
            log.warning("model split failed; running it whole", exc_info=True)
            decoder, proto = None, with_durations(model)
    if decoder is None:
        whole = str(model) if proto is None else bytes(proto.SerializeToString())
        del proto
        session = _Session(whole, sess_options=options, providers=providers(device))
        sessions = [session]
    for made in sessions:
        if device.kind == "cuda" and "CUDAExecutionProvider" not in made.get_providers():
            # ONNX Runtime falls back to the CPU when its CUDA provider does not load: say so.
            raise ValueError(f"device {device}: ONNX Runtime's CUDA provider did not load")
    return PiperVoice(config=piper_config, session=session), decoder


def providers(device: Device) -> list[Any]:
    """ONNX Runtime's execution providers for ``device`` (the CUDA one with its GPU, and the
    CPU for what it does not run)."""
    if device.kind == "cpu":
        return ["CPUExecutionProvider"]
    return [("CUDAExecutionProvider", {"device_id": device.index}), "CPUExecutionProvider"]


def with_durations(model: Path) -> onnx.ModelProto | None:
    """The model with its phoneme durations (the graph's ``Ceil`` of the duration predictor)
    as a second output, for :class:`Unit`'s context; None when none can be found (the model
    is then run as it is, its units rendered alone)."""
    proto = onnx.load(str(model))
    if len(proto.graph.output) >= 2:
        return proto  # patched already (piper.patch_voice_with_alignment)
    try:
        add_alignment_output(proto)
    except ValueError:  # no single Ceil to expose
        return None
    return proto


def split_decoder(proto: onnx.ModelProto) -> tuple[bytes, bytes, str] | None:
    """The model in two (:class:`Decoder`): the encoder (phoneme ids to latent frames and the
    durations) and the decoder (latent frames to audio), cut at the decoder's first
    convolution, and the name of the latent between them; None when the graph is not a
    single-speaker Piper VITS export (it is then run whole)."""
    graph = proto.graph
    first = [n for n in graph.node if n.name == "/dec/conv_pre/Conv"]
    inputs = [i.name for i in graph.input]
    if len(first) != 1 or inputs != ["input", "input_lengths", "scales"] or len(graph.output) != 2:
        return None
    latent = first[0].input[0]
    try:
        extractor = Extractor(proto)
        encoder = extractor.extract_model(inputs, [latent, graph.output[1].name])
        decoder = extractor.extract_model([latent], [graph.output[0].name])
    except Exception:  # e.g. no shape known for the latent
        log.warning("model split failed; running it whole", exc_info=True)
        return None
    # The decoder must need nothing but the latent (a speaker embedding would be another input).
    made = {o for n in decoder.graph.node for o in n.output}
    known = made | {t.name for t in decoder.graph.initializer} | {latent, ""}
    if any(name not in known for n in decoder.graph.node for name in n.input):
        return None
    return encoder.SerializeToString(), decoder.SerializeToString(), latent


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

    def clear(self) -> None:
        """Forget every rendered unit."""
        with self._lock:
            self._items.clear()
            self.bytes = 0

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
