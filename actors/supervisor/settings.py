"""The supervisor's settings: topology.yaml's ``actors.supervisor`` section, typed."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal


@dataclass(frozen=True, slots=True)
class SupervisorSettings:
    """Built by :func:`bus.settings.load_settings`; an unknown key fails at start."""

    idle_timeout_s: float = 300.0
    """A session with no sign of the person this long ends (``idle_timeout``), seconds."""
    max_duration_s: float = 3600.0
    """No session outlives this (``max_duration``), seconds."""
    dialogue: Literal["echo", "openai"] = "echo"
    """The reply adapter of sessions whose client names none."""
    barge_window_ms: float = 1200.0
    """Speech that held the bot and brings no words this long is a false interruption,
    milliseconds."""
    echo_tail_ms: float = 1500.0
    """Transcripts this soon after an utterance stopped playing are checked for echo of it,
    milliseconds."""
    echo_overlap: float = 0.6
    """Share of a transcript's letter trigrams found in the bot's words that makes it echo."""
    echo_doubt: float = 0.3
    """A partial this close to echo while the bot is held waits for the next transcript."""
    continuation_ms: float = 2000.0
    """Speech that begins this soon after the end of the person's turn (stream time)
    continues that turn, milliseconds."""
    dialogue_openai: dict[str, Any] = field(default_factory=dict)
    """The ``openai`` adapter's settings (``adapters.dialogue.openai``)."""

    def __post_init__(self) -> None:
        for name in ("idle_timeout_s", "max_duration_s", "barge_window_ms"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be more than 0")
        for name in ("echo_tail_ms", "continuation_ms"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")
        if not 0 < self.echo_doubt <= self.echo_overlap <= 1:
            raise ValueError("echo_doubt and echo_overlap must hold 0 < doubt <= overlap <= 1")
