"""Where an engine runs: ``cpu``, ``cuda``, ``cuda:N`` or ``auto``, as ``--device`` and the
``device`` setting of the ASR and the TTS workers say it, and what the registration reports.

Each engine asks its own runtime whether it sees a GPU (CTranslate2 for Whisper, ONNX Runtime's
CUDA provider for Piper): ``auto`` is the GPU when that runtime sees one, else the CPU; asking
for ``cuda`` where it sees none is an error at start, never a silent fall back to the CPU.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass

NAMES = ("cpu", "cuda", "auto")


@dataclass(frozen=True, slots=True)
class Device:
    """A resolved device: ``kind`` ``cpu`` or ``cuda``, and the GPU's index."""

    kind: str
    index: int = 0

    def __str__(self) -> str:
        return "cpu" if self.kind == "cpu" else f"cuda:{self.index}"

    def capabilities(self) -> dict[str, object]:
        """What the registration says of it: ``device`` (and a GPU's memory, when it can be
        read)."""
        out: dict[str, object] = {"device": str(self)}
        if self.kind == "cuda" and (memory := gpu_memory_mb(self.index)) is not None:
            out["device_memory_mb"] = memory
        return out


def check(text: str) -> str:
    """``text`` if it names a device (``cpu``, ``cuda``, ``cuda:N``, ``auto``), else ValueError."""
    kind, _, index = text.partition(":")
    if kind not in NAMES or (index and (kind != "cuda" or not index.isdigit())):
        raise ValueError(f"device {text!r} is not cpu, cuda, cuda:N or auto")
    return text


def resolve(text: str, gpus: int, runtime: str) -> Device:
    """The device ``text`` means where ``runtime`` sees ``gpus`` GPUs; ValueError if it asks for
    one that is not there."""
    kind, _, index = check(text).partition(":")
    if kind == "cpu" or (kind == "auto" and not gpus):
        return Device("cpu")
    n = int(index or 0)
    if n >= gpus:
        seen = f"sees {gpus} GPU(s)" if gpus else "sees no GPU"
        raise ValueError(f"device {text}: {runtime} {seen}")
    return Device("cuda", n)


def ctranslate2_gpus() -> int:
    """GPUs CTranslate2 (Whisper's runtime) sees."""
    import ctranslate2

    return int(ctranslate2.get_cuda_device_count())


def onnxruntime_gpus() -> int:
    """GPUs ONNX Runtime (Piper's runtime) can use: none without its CUDA provider
    (``onnxruntime-gpu``), else as many as CUDA sees."""
    import onnxruntime

    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        return 0
    try:
        return ctranslate2_gpus()  # counts CUDA devices without opening a session
    except ImportError:
        return 1


def gpu_memory_mb(index: int) -> int | None:
    """Total memory of GPU ``index`` from ``nvidia-smi``, or None when it cannot be read."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    try:
        out = subprocess.run(
            [smi, "--query-gpu=memory.total", "--format=csv,noheader,nounits", f"--id={index}"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout
        return int(out.strip().splitlines()[0])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None
