"""Text-to-speech messages: start an utterance, feed it text, receive frames, end marker, credit."""

from __future__ import annotations

import enum
from typing import Annotated, ClassVar

import msgspec

from bus.audio_format import BOT
from bus.schema._base import FreeForm, Message, Priority, Text, bounded, message

MAX_TEXT_CHARS = 4096
"""Longest text chunk one :class:`TtsText` may carry."""


@message
class TtsStart(Message, frozen=True, kw_only=True):
    """Begin an utterance for the envelope's session. Frames come back to the sender, on the
    connection this arrived on. More text may follow in :class:`TtsText` chunks."""

    TYPE: ClassVar[str] = "tts.start"

    utterance_id: Annotated[str, bounded(128)]
    voice: Annotated[str, bounded(128)] = ""
    """Voice id; empty for the worker's default."""
    options: Annotated[FreeForm, bounded(32)] = msgspec.field(default_factory=dict)
    """Synthesis options (``speed``, ``loudness_dbfs``)."""
    credit: int = 0
    """Frames the consumer accepts before it grants more (0: the worker's default)."""
    text: Annotated[str, bounded(MAX_TEXT_CHARS)] = ""
    """The first text, saving a message for one-shot utterances."""
    final: bool = False
    """True if ``text`` is all of it."""


@message
class TtsText(Message, frozen=True, kw_only=True):
    """A chunk of an utterance's text; ``final`` marks the last one."""

    TYPE: ClassVar[str] = "tts.text"

    utterance_id: Annotated[str, bounded(128)]
    text: Annotated[str, bounded(MAX_TEXT_CHARS)]
    final: bool = False


@message
class TtsQuery(Message, frozen=True, kw_only=True):
    """Request: is ``utterance_id`` of the envelope's session still being spoken here? Answered
    with :class:`~bus.schema.system.Pong`, or an ``UNKNOWN_UTTERANCE`` error when this worker
    has no such utterance (it ended unheard, or never started). A gateway asks when frames stop
    coming: a live worker is not proof that the utterance is."""

    TYPE: ClassVar[str] = "tts.query"

    utterance_id: Annotated[str, bounded(128)]


@message
class TtsFrame(Message, frozen=True, kw_only=True):
    """One frame of an utterance in the :data:`~bus.audio_format.BOT` format: 20 ms, 1920 bytes of
    48 kHz mono s16le."""

    TYPE: ClassVar[str] = "tts.frame"
    PRIORITY: ClassVar[Priority] = Priority.DATA
    PAYLOAD: ClassVar[str | None] = "pcm"

    utterance_id: Annotated[str, bounded(128)]
    sequence: int
    """Frame number within the utterance, from 0, contiguous."""
    pcm: Annotated[bytes, bounded(BOT.frame_bytes)]
    words: int = 0
    """Words of the utterance's text spoken by the end of this frame (an estimate within a
    synthesis unit): how the gateway knows what the person actually heard."""

    def __post_init__(self) -> None:
        if len(self.pcm) != BOT.frame_bytes:
            raise ValueError(f"frame is {len(self.pcm)} bytes, expected {BOT.frame_bytes}")


class EndReason(enum.StrEnum):
    """Why an utterance ended."""

    COMPLETED = "completed"
    STOPPED = "stopped"
    BARGED_IN = "barged_in"
    ERROR = "error"


@message
class TtsEnd(Message, frozen=True, kw_only=True):
    """The last message of an utterance. It rides with the frames (data priority), so it never
    overtakes the last of them in a receiver's queue."""

    TYPE: ClassVar[str] = "tts.end"
    PRIORITY: ClassVar[Priority] = Priority.DATA

    utterance_id: Annotated[str, bounded(128)]
    reason: EndReason
    frames: int
    """Frames sent for this utterance."""
    error: Annotated[str, bounded(1024)] = ""
    """What went wrong, when ``reason`` is ``error``."""


@message
class TtsCredit(Message, frozen=True, kw_only=True):
    """Consumer → worker: may send ``frames`` more frames of this utterance (flow control)."""

    TYPE: ClassVar[str] = "tts.credit"

    utterance_id: Annotated[str, bounded(128)]
    frames: int


@message
class ModelLoad(Message, frozen=True, kw_only=True):
    """Request: load a voice model now (answered with :class:`ModelStatus`)."""

    TYPE: ClassVar[str] = "tts.model_load"

    model_id: Annotated[str, bounded(128)]


@message
class ModelUnload(Message, frozen=True, kw_only=True):
    """Request: unload a voice model now (refused for the default or one in use)."""

    TYPE: ClassVar[str] = "tts.model_unload"

    model_id: Annotated[str, bounded(128)]


@message
class ModelList(Message, frozen=True, kw_only=True):
    """Request: which models are resident and which could be loaded."""

    TYPE: ClassVar[str] = "tts.model_list"


@message
class ModelStatus(Message, frozen=True, kw_only=True):
    """Reply to the model requests."""

    TYPE: ClassVar[str] = "tts.model_status"

    resident: Annotated[tuple[Text, ...], bounded(256)] = ()
    """Model ids loaded now."""
    available: Annotated[tuple[Text, ...], bounded(1024)] = ()
    """Model ids this worker can load."""
    default: Annotated[str, bounded(128)] = ""
    """The pinned default model."""
    details: Annotated[FreeForm, bounded(256)] = msgspec.field(default_factory=dict)
    """Per resident model: references, seconds resident and idle."""
