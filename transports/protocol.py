"""The client protocol (docs/protocol.md), transport-neutral: everything a client sends and
everything it is sent, as typed messages.

Client → server commands come from :func:`parse_text_message` (a JSON text message) and
:func:`parse_audio_message` (a binary microphone message); every refusal is a
:class:`ClientError` carrying the protocol's error code, and the session stays usable. Server →
client events are frozen dataclasses whose :meth:`ServerEvent.to_json` is the wire object. The
WebSocket transport carries them as text/binary messages; a WebRTC transport carries the same
JSON on a data channel and the audio on media tracks.
"""

from __future__ import annotations

import base64
import dataclasses
import enum
import json
from dataclasses import dataclass
from typing import Any, ClassVar

from adapters.dialogue import NAMES as DIALOGUES
from adapters.tts.text import TextError, check_text
from bus.audio_format import BOT, FRAME_MS, INPUT_RATES

PROTOCOL_VERSION = 1
MAX_TEXT_MESSAGE_BYTES = 64 * 1024
"""Largest JSON message accepted."""
MAX_AUDIO_MESSAGE_BYTES = 1024 * 1024
"""Largest binary (microphone audio) message accepted."""
MAX_VOICE_CHARS = 128


class AudioFormat(enum.StrEnum):
    """How bot audio reaches a WebSocket client."""

    BINARY = "binary"
    """One binary message per 20 ms frame."""
    JSON = "json"
    """``{"type": "audio", "pcm": BASE64, ...}`` (the older project's format)."""


class Control(enum.StrEnum):
    PAUSE = "PAUSE"
    RESUME = "RESUME"
    STOP = "STOP"


class ClientError(ValueError):
    """A client message refused, with the protocol error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


# ---------------------------------------------------------------------- client → server


@dataclass(frozen=True, slots=True)
class SessionConfigCommand:
    """``session_config``: only the fields the client named are set (None: unchanged)."""

    voice: str | None = None
    audio_format: AudioFormat | None = None
    input_sample_rate: int | None = None
    """Hertz: 16000 or 48000."""
    dialogue: str | None = None
    echo_cancellation: bool | None = None
    """Cancel the bot's own voice heard back in the microphone (transports/echo.py)."""


@dataclass(frozen=True, slots=True)
class TextCommand:
    """``text``: speak it."""

    text: str


@dataclass(frozen=True, slots=True)
class ControlCommand:
    command: Control


@dataclass(frozen=True, slots=True)
class EndCommand:
    """``end``: the client ends the session."""


@dataclass(frozen=True, slots=True)
class AudioIn:
    """Microphone audio: PCM s16le mono at the session's input rate, any length."""

    pcm: bytes


ClientCommand = SessionConfigCommand | TextCommand | ControlCommand | EndCommand | AudioIn


def parse_audio_message(data: bytes) -> AudioIn:
    """A binary client message as microphone audio, or ClientError."""
    if not data or len(data) % 2:
        raise ClientError(
            "INVALID_MESSAGE", "audio must be PCM s16le: an even, non-zero number of bytes"
        )
    if len(data) > MAX_AUDIO_MESSAGE_BYTES:
        raise ClientError(
            "INVALID_MESSAGE", f"audio messages hold at most {MAX_AUDIO_MESSAGE_BYTES} bytes"
        )
    return AudioIn(bytes(data))


def parse_text_message(data: str, max_text_chars: int) -> ClientCommand:
    """A JSON client message as a typed command, or ClientError."""
    if len(data) > MAX_TEXT_MESSAGE_BYTES:
        raise ClientError(
            "INVALID_MESSAGE", f"text messages hold at most {MAX_TEXT_MESSAGE_BYTES} bytes"
        )
    try:
        message = json.loads(data)
    except (ValueError, RecursionError):  # RecursionError: JSON nested thousands deep
        raise ClientError("INVALID_MESSAGE", "not valid JSON") from None
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        raise ClientError("INVALID_MESSAGE", 'expected a JSON object with a string "type"')
    kind = message["type"]
    if kind == "text":
        text = message.get("text")
        if not isinstance(text, str) or not text.strip():
            raise ClientError("INVALID_MESSAGE", '"text" must be a non-empty string')
        if len(text) > max_text_chars:
            raise ClientError("TEXT_TOO_LONG", f"text holds at most {max_text_chars} characters")
        return TextCommand(speakable(encodable(text, "text")))
    if kind == "control":
        command = message.get("command")
        if command not in tuple(Control):
            raise ClientError(
                "INVALID_MESSAGE", f'"command" must be one of {[c.value for c in Control]}'
            )
        return ControlCommand(Control(command))
    if kind == "session_config":
        return _session_config(message)
    if kind == "end":
        return EndCommand()
    raise ClientError("UNSUPPORTED_TYPE", f"unknown message type {encodable(kind[:64], 'type')!r}")


def speakable(text: str) -> str:
    """``text`` if a voice can read it: no control characters but tab, CR and LF (the rule
    of :func:`adapters.tts.text.check_text`, which every TTS worker applies too), else
    ClientError ``INVALID_TEXT`` naming the first one and where it is."""
    try:
        return check_text(text)
    except TextError as exc:
        raise ClientError(exc.code, str(exc)) from None


def encodable(text: str, field: str) -> str:
    """JSON allows lone surrogates (``"\\ud800"``); nothing downstream can encode them."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ClientError("INVALID_MESSAGE", f'"{field}" is not valid Unicode text') from None
    return text


def _session_config(message: dict[str, Any]) -> SessionConfigCommand:
    known = {"type", "voice", "audio_format", "input_sample_rate", "dialogue", "echo_cancellation"}
    unknown = set(message) - known
    if unknown:
        names = sorted(encodable(str(k)[:64], "field") for k in unknown)
        raise ClientError("INVALID_MESSAGE", f"unknown session_config fields {names}")
    voice = message.get("voice")
    if voice is not None and (not isinstance(voice, str) or len(voice) > MAX_VOICE_CHARS):
        raise ClientError("INVALID_MESSAGE", '"voice" must be a voice id (duplex voices)')
    audio_format = message.get("audio_format")
    if audio_format is not None and audio_format not in tuple(AudioFormat):
        formats = [f.value for f in AudioFormat]
        raise ClientError("INVALID_MESSAGE", f'"audio_format" must be one of {formats}')
    rate = message.get("input_sample_rate")
    if rate is not None and (isinstance(rate, bool) or rate not in INPUT_RATES):
        raise ClientError("INVALID_MESSAGE", f'"input_sample_rate" must be one of {INPUT_RATES}')
    dialogue = message.get("dialogue")
    if dialogue is not None and dialogue not in DIALOGUES:
        raise ClientError("INVALID_MESSAGE", f'"dialogue" must be one of {DIALOGUES}')
    echo = message.get("echo_cancellation")
    if echo is not None and not isinstance(echo, bool):
        raise ClientError("INVALID_MESSAGE", '"echo_cancellation" must be true or false')
    return SessionConfigCommand(
        voice=None if voice is None else encodable(voice, "voice"),
        audio_format=None if audio_format is None else AudioFormat(audio_format),
        input_sample_rate=rate,
        dialogue=dialogue,
        echo_cancellation=echo,
    )


# ---------------------------------------------------------------------- server → client


class ServerEvent:
    """A message to the client; subclasses are frozen dataclasses with a ``TYPE``."""

    __slots__ = ()
    TYPE: ClassVar[str]

    def to_json(self) -> dict[str, Any]:
        """The wire object: ``{"type": TYPE, field: value, ...}``."""
        out: dict[str, Any] = {"type": self.TYPE}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]  # subclasses are dataclasses
            value = getattr(self, f.name)
            out[f.name] = value.value if isinstance(value, enum.Enum) else value
        return out


@dataclass(frozen=True, slots=True)
class SessionStart(ServerEvent):
    """First, on connect."""

    TYPE: ClassVar[str] = "session_start"
    session_id: str
    protocol: int = PROTOCOL_VERSION
    audio_out: dict[str, Any] = dataclasses.field(
        default_factory=lambda: {
            "sample_rate": BOT.sample_rate,
            "frame_ms": FRAME_MS,
            "encoding": "pcm_s16le",
        }
    )


@dataclass(frozen=True, slots=True)
class TtsStarted(ServerEvent):
    """Before an utterance's first frame."""

    TYPE: ClassVar[str] = "tts_start"
    utterance_id: str
    text: str


@dataclass(frozen=True, slots=True)
class TtsEnded(ServerEvent):
    """After an utterance's last frame."""

    TYPE: ClassVar[str] = "tts_end"
    utterance_id: str
    reason: str
    """``completed``, ``stopped``, ``barged_in`` or ``error``."""
    frames: int
    """Frames the client was sent (what the person heard)."""


@dataclass(frozen=True, slots=True)
class StateEvent(ServerEvent):
    TYPE: ClassVar[str] = "state"
    state: str


@dataclass(frozen=True, slots=True)
class VadEvent(ServerEvent):
    TYPE: ClassVar[str] = "vad"
    event: str
    """``speech_start`` or ``speech_end``."""
    stream_ms: int
    """Where in the client's microphone stream, milliseconds from its first sample."""


@dataclass(frozen=True, slots=True)
class TranscriptEvent(ServerEvent):
    TYPE: ClassVar[str] = "transcript"
    text: str
    final: bool


@dataclass(frozen=True, slots=True)
class ReplyEvent(ServerEvent):
    TYPE: ClassVar[str] = "reply"
    text: str


@dataclass(frozen=True, slots=True)
class BargeInEvent(ServerEvent):
    """The person talked over the bot: drop any bot audio buffered."""

    TYPE: ClassVar[str] = "barge_in"
    utterance_id: str


@dataclass(frozen=True, slots=True)
class MetricsEvent(ServerEvent):
    """The session's voice figures so far."""

    TYPE: ClassVar[str] = "metrics"
    barge_ins: int
    false_interruptions: int
    barge_in_ms: float | None
    """Last barge-in: the person's first speech sample received → playout held."""
    turn_latency_ms: float | None
    """Last reply: the person's end of speech received → first reply frame sent."""
    asr_rtf: float | None
    """Real-time factor of the last final transcript."""
    echo_erle_db: float | None = None
    """Echo cancelled over the session while the bot was audible (echo return loss
    enhancement, dB); None with cancellation off or before the bot was heard."""


@dataclass(frozen=True, slots=True)
class ErrorEvent(ServerEvent):
    TYPE: ClassVar[str] = "error"
    code: str
    message: str


@dataclass(frozen=True, slots=True)
class SessionEnd(ServerEvent):
    """Last, before the server closes."""

    TYPE: ClassVar[str] = "session_end"
    session_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class AudioJson(ServerEvent):
    """One bot frame in the JSON-audio mode."""

    TYPE: ClassVar[str] = "audio"
    pcm: str
    """Base64 of the frame's PCM s16le."""
    sample_rate: int
    frame_ms: int
    sequence: int

    @classmethod
    def frame(cls, pcm: bytes, sequence: int) -> AudioJson:
        encoded = base64.b64encode(pcm).decode("ascii")
        return cls(pcm=encoded, sample_rate=BOT.sample_rate, frame_ms=FRAME_MS, sequence=sequence)
