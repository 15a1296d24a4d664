"""The ASR actor (:mod:`.actor`): what each session's person said. Its per-session audio buffer
is :mod:`.stream`, the order recognitions run in :mod:`.jobs`. ``actors.asr:Asr`` is what
``duplex run asr`` starts."""

from actors.asr.actor import Asr

__all__ = ["Asr"]
