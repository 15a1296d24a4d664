"""Piper units read in context (adapters/tts/piper.py, Unit): each piece of a sentence is
rendered with its neighbours' words and only its own audio kept, so the first unit, cut short
for fast first audio, is not read as a phrase of its own."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from piper import SynthesisConfig

from adapters.tts.base import Renderer, SynthesisOptions
from adapters.tts.piper import PiperEngine, Unit, body_span, sliced, with_context
from adapters.tts.voicepacks import VoicePackError, load_voicepack

VOICE = Path(__file__).resolve().parent.parent / "voicepacks" / "piper-en_US-joe-medium"
SENTENCES = [
    "Seven quiet herons waded through the marsh before the sun came up.",
    "The museum opens at nine and closes early on public holidays.",
    "The recipe calls for two cups of flour and a pinch of salt.",
    "Our train was delayed because a fallen tree blocked the line near the station.",
]


def test_each_piece_gets_its_neighbours_words_and_none_across_the_sentence() -> None:
    pieces = [list("ab cd"), list("ef gh ij"), list("kl.")]
    assert with_context(pieces, 1) == [
        Unit((), tuple("ab cd"), tuple(" ef")),
        Unit(tuple("cd "), tuple("ef gh ij"), tuple(" kl.")),
        Unit(tuple("ij "), tuple("kl."), ()),
    ]
    assert with_context(pieces, 2)[1] == Unit(tuple("ab cd "), tuple("ef gh ij"), tuple(" kl."))
    assert with_context(pieces, 0) == [Unit((), tuple(p), ()) for p in pieces]


@pytest.fixture(scope="module")
def engine() -> PiperEngine:
    engine = PiperEngine(load_voicepack(VOICE))
    engine.warmup()
    return engine


def spoken_s(audio: np.ndarray, rate: int) -> tuple[float, float]:
    """Seconds from the first sound to the last, and the longest silence between (10 ms
    windows 30 dB under the loud ones)."""
    n = rate // 100
    rms = np.sqrt(np.mean(audio[: len(audio) // n * n].reshape(-1, n) ** 2, axis=1))
    sounding = np.flatnonzero(rms > np.percentile(rms, 95) * 10 ** (-30 / 20))
    return (sounding[-1] - sounding[0] + 1) / 100, (np.diff(sounding).max() - 1) / 100


def test_the_first_sentence_in_units_lasts_as_long_as_it_does_whole(engine: PiperEngine) -> None:
    """Rendered alone, the units of these sentences lasted 16 % longer than each sentence
    whole, with silences of up to half a second at the cuts; in context, within a few %."""
    assert engine.context_words == 2  # the model reports its durations
    ours_s = whole_s = 0.0
    for text in SENTENCES:
        units = engine.plan(text, first=True)
        assert len(units) >= 3 and all(isinstance(u, Unit) for u in units)
        renderer = Renderer(engine, SynthesisOptions())
        pcm = b"".join(renderer.render(u) for u in units) + renderer.finish()
        ours, ours_gap = spoken_s(np.frombuffer(pcm, "<i2").astype(np.float32) / 32768, 48_000)
        whole = np.concatenate(
            [engine.render(u, SynthesisOptions()) for u in engine.plan(text, False)]
        )
        whole_dur, whole_gap = spoken_s(whole, engine.voice.sample_rate)
        assert ours_gap < whole_gap + 0.15, (text, ours_gap, whole_gap)
        ours_s, whole_s = ours_s + ours, whole_s + whole_dur
    assert 0.92 < ours_s / whole_s < 1.08


def test_a_unit_decodes_only_its_own_frames_and_they_are_the_whole_units_audio(
    engine: PiperEngine,
) -> None:
    """Each slice of the head (read with the words around it) decodes its own latent frames
    and a margin, not its context's, and its samples are those of the whole reading decoded;
    the two slices meet at one sample."""
    decoder = engine.decoder
    assert decoder is not None  # a single-speaker Piper export splits
    first, second = engine.plan(SENTENCES[1], first=True)[:2]
    assert (first.slice, second.slice) == (1, 2) and second.left and second.right
    ids = engine.model.phonemes_to_ids([*first.left, *first.body, *first.right])
    latent, per_id = engine.encode(ids, SynthesisConfig(length_scale=1.0))
    frames = latent.shape[2]
    (whole,) = decoder.session.run(None, {decoder.latent: latent})  # all frames, no crop
    whole = np.asarray(whole).reshape(-1)
    assert len(whole) == frames * decoder.hop
    spans = [body_span(u, per_id, engine.model.config.phoneme_id_map) for u in (first, second)]
    assert spans[0][1] == spans[1][0]
    windows = [decoder.window(frames, *span) for span in spans]
    assert windows[0][0] == 0 and windows[0][1] < frames - 10, windows
    assert windows[1][0] > 0 and windows[1][1] < frames, windows  # neither side's context
    for start, end in spans:
        ours = decoder.decode(latent, start, end)
        assert len(ours) == end - start
        assert np.abs(ours - whole[start:end]).max() < 1e-4  # 1e-6 seen here (4 frames: 6e-4)


def test_the_head_is_two_slices_of_one_reading_encoded_once(
    engine: PiperEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first slice (the head's first word) goes out after one encoding and a decode of its
    own frames; the second decodes from that encoding while the first plays."""
    head = Unit((), tuple("ab cd ef"), tuple(" gh"))
    assert sliced(head, 2) == [
        Unit((), tuple("ab"), tuple(" cd ef gh"), slice=1),
        Unit(tuple("ab "), tuple("cd ef"), tuple(" gh"), slice=2),
    ]
    assert sliced(Unit((), tuple("abcdef"), ()), 2) == [Unit((), tuple("abcdef"), ())]
    first, second, third, *_ = engine.plan(SENTENCES[1], first=True)
    reading = (*first.left, *first.body, *first.right)
    assert reading == (*second.left, *second.body, *second.right)
    assert third.slice == 0 and third.left[-1] == " "
    encodings: list[int] = []
    encode = engine.encode
    monkeypatch.setattr(engine, "encode", lambda *a: encodings.append(1) or encode(*a))
    engine.clear()
    audio = [engine.render(u, SynthesisOptions()) for u in (first, second)]
    assert len(encodings) == 1 and all(len(a) > 0.05 * engine.voice.sample_rate for a in audio)
    engine.clear()
    engine.render(second, SynthesisOptions())  # its first slice never rendered: encodes itself
    assert len(encodings) == 2


def test_a_voice_pack_sets_how_the_first_sentence_grows_and_bad_settings_are_refused(
    engine: PiperEngine,
) -> None:
    pack = load_voicepack(VOICE)

    def with_params(**params: object) -> PiperEngine:
        return PiperEngine(dataclasses.replace(pack, params={**pack.params, **params}))

    text = SENTENCES[3]  # 76 characters: the head, then units of 20 and 48 phonemes, the rest
    grown = engine.plan(text, True)
    rest_whole = with_params(growth=[]).plan(text, True)
    assert [u.slice for u in rest_whole] == [1, 2, 0]  # the head's two slices, the rest whole
    assert len(grown) > len(rest_whole)
    assert "".join(rest_whole[2].body) == " ".join("".join(u.body) for u in grown[2:])
    for bad in ([0], [201], "20", [1.5], [True], None):
        with pytest.raises(VoicePackError, match=r"params\.growth must be a list"):
            with_params(growth=bad)
