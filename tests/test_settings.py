"""Each actor's settings are typed: topology.yaml's keys all load, and a misspelled key, a value
of the wrong type or one out of range stops the actor as it is built, naming the key (and, for
a misspelling, the keys there are), instead of a default silently applying."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import pytest

from actors.asr import Asr
from actors.loopback import Loopback
from actors.router import Router
from actors.tts_worker import TtsWorker
from actors.vad import Vad
from bus.runtime import Actor
from bus.settings import SettingsError
from bus.topology import ActorConfig, load_topology
from tests.support import ROOT, duplex

ACTORS: dict[str, type[Actor]] = {
    "asr": Asr,
    "loopback": Loopback,
    "router": Router,
    "tts_worker": TtsWorker,
    "vad": Vad,
}


def build(kind: str, settings: dict[str, Any]) -> Any:
    """The actor ``kind`` built with ``settings`` (no sockets open until it runs)."""
    return ACTORS[kind](ActorConfig(kind=kind, metrics_port=None, settings=settings))


@pytest.mark.parametrize("kind", sorted(ACTORS))
def test_every_key_of_the_shipped_topology_is_accepted(kind: str) -> None:
    config = load_topology(ROOT / "topology.yaml").actor_config(kind)
    assert build(kind, config.settings).settings is not None


def test_the_keys_topology_yaml_shows_commented_out_are_accepted_too() -> None:
    asr = build("asr", {"model_path": "/srv/whisper-small-ct2"})
    assert asr.settings.model_path == "/srv/whisper-small-ct2"
    worker = build("tts_worker", {"voicepacks": [str(ROOT / "voicepacks")]})
    assert worker.settings.voicepacks == (ROOT / "voicepacks",)


MISSPELT = [
    ("asr", "beam", "beam_size"),
    ("loopback", "echo", None),
    ("router", "stratgy", "strategy"),
    ("tts_worker", "max_stream", "max_streams"),
    ("vad", "min_silense_ms", "min_silence_ms"),
]


@pytest.mark.parametrize(("kind", "typo", "meant"), MISSPELT)
def test_a_misspelt_key_fails_at_start_naming_it_and_the_allowed_keys(
    kind: str, typo: str, meant: str | None
) -> None:
    with pytest.raises(SettingsError) as failed:
        build(kind, {typo: 1})
    message = str(failed.value)
    assert f"actors.{kind}: unknown setting '{typo}'" in message
    allowed = message.partition("; allowed: ")[2]
    keys = sorted(f.name for f in dataclasses.fields(build(kind, {}).settings))
    assert allowed == (", ".join(keys) if keys else "none")
    assert meant is None or meant in keys


WRONG_TYPE = [
    ("asr", "beam_size", 2.5, "expected a whole number"),
    ("asr", "context", "30s", "is not one of 'auto', 'full'"),
    ("router", "ping_interval_s", "fast", "expected a number"),
    ("tts_worker", "max_streams", "8", "expected a whole number"),
    ("tts_worker", "preload", "piper-en_US-joe-medium", "expected a list"),
    ("vad", "min_silence_ms", "240ms", "expected a number"),
    ("vad", "model", "silerro", "is not one of 'webrtc', 'silero'"),
]


@pytest.mark.parametrize(("kind", "key", "value", "why"), WRONG_TYPE)
def test_a_value_of_the_wrong_type_fails_at_start_naming_the_key(
    kind: str, key: str, value: Any, why: str
) -> None:
    with pytest.raises(SettingsError, match=re.escape(f"actors.{kind}.{key}: ") + ".*" + why):
        build(kind, {key: value})


OUT_OF_RANGE = [
    ("asr", "beam_size", 0),
    ("router", "ping_interval_s", 0),
    ("router", "strategy", "fastest"),
    ("tts_worker", "max_streams", 0),
    ("tts_worker", "nice", 20),
    ("vad", "speaking_threshold", 1.5),
    ("vad", "aggressiveness", 4),
]


@pytest.mark.parametrize(("kind", "key", "value"), OUT_OF_RANGE)
def test_a_value_out_of_range_fails_at_start_naming_the_key(
    kind: str, key: str, value: Any
) -> None:
    with pytest.raises(SettingsError, match=f"actors.{kind}.*{key}"):
        build(kind, {key: value})


def test_duplex_run_reports_a_misspelt_setting_in_one_line(tmp_path: Path) -> None:
    topology = tmp_path / "topology.yaml"
    topology.write_text("actors:\n  router:\n    stratgy: round_robin\n")
    result = duplex("run", "router", "--topology", str(topology))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "Error: router could not start: actors.router: unknown setting 'stratgy'; "
        "allowed: ping_interval_s, prefer_device, strategy"
    )
