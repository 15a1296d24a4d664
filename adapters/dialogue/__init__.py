"""Dialogue adapters: what the bot answers. ``echo`` (the default) says back what it heard;
``openai`` streams a reply from any OpenAI-compatible chat endpoint (llama.cpp server, Ollama,
vLLM, OpenAI). Both take the conversation so far and yield the reply's text as it comes."""

from __future__ import annotations

from typing import Any

from adapters.dialogue.base import Dialogue, DialogueError, Turn

NAMES = ("echo", "openai")

__all__ = ["NAMES", "Dialogue", "DialogueError", "Turn", "load_dialogue"]


def load_dialogue(name: str, settings: dict[str, Any]) -> Dialogue:
    """The adapter called ``name``, configured from ``settings`` (and the environment)."""
    if name == "echo":
        from adapters.dialogue.echo import EchoDialogue

        return EchoDialogue()
    if name == "openai":
        from adapters.dialogue.openai import OpenAiDialogue

        return OpenAiDialogue.from_settings(settings)
    raise DialogueError("UNKNOWN_DIALOGUE", f"no dialogue adapter {name!r} (one of {NAMES})")
