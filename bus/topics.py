"""Event-bus topics. A topic is a prefix plus the session id, so a subscriber picks all
sessions (the prefix) or one (the prefix and the id)."""

from __future__ import annotations

AUDIO_IN = b"audio.in."
"""Gateway → VAD, ASR: the person's audio, 16 kHz mono 20 ms ``audio.frame``."""
VAD = b"vad."
"""VAD → ASR, supervisor, gateway: ``vad.speech_start`` / ``vad.speech_end``."""
ASR = b"asr."
"""ASR → supervisor, gateway: ``asr.transcript`` (partial and final)."""
STATE = b"session.state."
"""Supervisor → VAD and anyone curious: ``session.state`` on every transition."""


def topic(prefix: bytes, session: str) -> bytes:
    """The topic for one session."""
    return prefix + session.encode()
