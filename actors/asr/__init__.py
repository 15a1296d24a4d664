"""The ASR actor (:mod:`.actor`): what each session's person said. Its per-session audio buffer
is :mod:`.stream`, the order recognitions run in :mod:`.jobs`, its settings :mod:`.settings`.
``actors.asr:Asr`` is what ``duplex run asr`` starts."""

from actors.asr.actor import Asr
from actors.asr.settings import AsrSettings

__all__ = ["Asr", "AsrSettings"]
