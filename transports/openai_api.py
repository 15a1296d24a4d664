"""OpenAI's audio API on the gateway's HTTP port, for the many tools that speak it.

``POST /v1/audio/speech`` (JSON ``model``, ``input``, ``voice``, ``response_format``, ``speed``)
streams the audio as the worker makes it (chunked transfer: the first bytes leave while the
rest of the text is synthesized). ``POST /v1/audio/transcriptions`` (multipart ``file`` in any
format FFmpeg reads, ``model``, ``language``, ``prompt``, ``response_format`` ``json`` /
``text`` / ``verbose_json`` / ``srt`` / ``vtt``) hands the decoded audio to an ASR
(:mod:`transports.transcriber`). ``GET /v1/models`` lists the model names accepted. Errors are
OpenAI-shaped: ``{"error": {"message", "type", "param", "code"}}``.

Names: every speech ``model`` (``tts-1``, ``tts-1-hd``, ``gpt-4o-mini-tts``) means the TTS
workers' voices, every transcription ``model`` (``whisper-1``, ``gpt-4o-transcribe``,
``gpt-4o-mini-transcribe``) the ASR's Whisper model; ``voice`` is a Duplex voice id
(``GET /v1/voices``) or one of OpenAI's voice names, which mean the worker's default voice.
The access token, when the gateway has one, is the API key (``Authorization: Bearer``).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import BodyPartReader, web

from transports import protocol
from transports.audio_codecs import FORMATS, DecodeError, StreamEncoder, decode_to_mic
from transports.session import live_voices
from transports.sessions import SessionHub
from transports.synthesis import Synthesis, SynthesisFailed
from transports.transcriber import Transcription, TranscriptionError
from transports.utterance_stream import Registry

SPEECH_MODELS = ("tts-1", "tts-1-hd", "gpt-4o-mini-tts")
TRANSCRIPTION_MODELS = ("whisper-1", "gpt-4o-transcribe", "gpt-4o-mini-transcribe")
OPENAI_VOICES = frozenset(
    {"alloy", "ash", "ballad", "coral", "echo", "fable", "nova", "onyx", "sage", "shimmer",
     "verse", "marin", "cedar"}
)  # fmt: skip
"""OpenAI's voice names: the worker's default voice here."""
MIN_SPEED, MAX_SPEED = 0.5, 2.0
"""The speeds the TTS workers take (OpenAI's 0.25..4.0 is wider)."""
MAX_UPLOAD_BYTES = 25 * 1024 * 1024
"""Largest file ``/v1/audio/transcriptions`` takes (OpenAI's limit)."""
MAX_AUDIO_S = 600.0
"""Longest audio it transcribes (the ASR's ``max_request_s`` by default)."""
UPLOAD_TIMEOUT_S = 120.0
"""The whole upload must arrive within this."""
WRITE_TIMEOUT_S = 30.0
"""A speech client that takes nothing for this long is cut off (the worker stopped)."""
TRANSCRIPT_FORMATS = ("json", "text", "verbose_json", "srt", "vtt")


def openai_error(
    status: int, message: str, *, param: str | None = None, code: str | None = None
) -> web.Response:
    kind = {401: "authentication_error", 404: "not_found_error", 429: "rate_limit_error"}.get(
        status, "invalid_request_error" if status < 500 else "server_error"
    )
    body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    return web.json_response(body, status=status)


class _Refused(Exception):
    def __init__(self, status: int, message: str, param: str | None, code: str | None) -> None:
        super().__init__(message)
        self.response = openai_error(status, message, param=param, code=code)


class OpenAiAudio:
    """The three routes; see the module docstring."""

    def __init__(self, hub: SessionHub, registry: Registry, bus: Any) -> None:
        self.hub = hub
        self.registry = registry
        self.bus = bus
        """The gateway actor (what :class:`~transports.transcriber.Transcription` needs)."""

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/audio/speech", self.speech)
        app.router.add_post("/v1/audio/transcriptions", self.transcriptions)
        app.router.add_get("/v1/models", self.models)

    async def models(self, _request: web.Request) -> web.Response:
        data = [
            {"id": name, "object": "model", "created": 0, "owned_by": "duplex"}
            for name in (*SPEECH_MODELS, *TRANSCRIPTION_MODELS)
        ]
        return web.json_response({"object": "list", "data": data})

    # ------------------------------------------------------------------ speech

    async def speech(self, request: web.Request) -> web.StreamResponse:
        try:
            text, voice, fmt, speed = self._speech_request(await _json_body(request))
        except _Refused as exc:
            return exc.response
        options = {} if speed == 1.0 else {"speed": speed}
        synthesis = Synthesis(self.hub.streams, text, voice=voice, options=options)
        encoder = StreamEncoder(fmt)
        response: web.StreamResponse | None = None
        try:
            async for pcm in synthesis.frames():
                if response is None:  # the first frame: now the status is known
                    response = web.StreamResponse(
                        headers={"Content-Type": FORMATS[fmt].content_type}
                    )
                    response.enable_chunked_encoding()
                    await response.prepare(request)
                if data := encoder.feed(pcm):
                    await asyncio.wait_for(response.write(data), WRITE_TIMEOUT_S)
            if response is None:
                raise SynthesisFailed("SYNTHESIS_FAILED", "no audio came", started=False)
            await response.write(encoder.finish())
            await response.write_eof()
        except SynthesisFailed as exc:
            if response is None:
                return _synthesis_error(exc)
            # The status went out with the first bytes: a body cut short (no last chunk) is
            # all that can tell the client.
            if request.transport is not None:
                request.transport.close()
        except (ConnectionError, TimeoutError):
            # The client went, or stopped reading: close() stops the worker.
            if request.transport is not None:
                request.transport.abort()
        finally:
            synthesis.close()
        assert response is not None  # (made before anything that raises ConnectionError)
        return response

    def _speech_request(self, body: Any) -> tuple[str, str, str, float]:
        if not isinstance(body, dict):
            raise _Refused(400, "the body must be a JSON object", None, None)
        _one_of(body.get("model"), SPEECH_MODELS, "model", "model_not_found")
        text = body.get("input")
        if not isinstance(text, str) or not text.strip():
            raise _Refused(400, "input must be a non-empty string", "input", None)
        if len(text) > self.hub.max_text_chars:
            message = f"input holds at most {self.hub.max_text_chars} characters"
            raise _Refused(400, message, "input", "string_above_max_length")
        try:
            text = protocol.speakable(protocol.encodable(text, "input"))
        except protocol.ClientError as exc:
            raise _Refused(400, str(exc), "input", None) from None
        voice = body.get("voice")
        if isinstance(voice, dict):  # the SDK's custom-voice form, {"id": ...}
            voice = voice.get("id")
        if not isinstance(voice, str) or not voice or len(voice) > protocol.MAX_VOICE_CHARS:
            raise _Refused(400, "voice must be a voice name", "voice", None)
        if voice in OPENAI_VOICES:
            voice = ""
        elif voice not in self._voices():
            message = f"unknown voice {voice[:64]!r}: {sorted(OPENAI_VOICES | self._voices())}"
            raise _Refused(400, message, "voice", "voice_not_found")
        fmt = _one_of(body.get("response_format", "mp3"), tuple(FORMATS), "response_format")
        if body.get("stream_format", "audio") != "audio":
            raise _Refused(400, 'only stream_format "audio" is served', "stream_format", None)
        speed = body.get("speed", 1.0)
        if isinstance(speed, bool) or not isinstance(speed, int | float):
            raise _Refused(400, "speed must be a number", "speed", None)
        if not MIN_SPEED <= speed <= MAX_SPEED:
            message = f"speed must be between {MIN_SPEED} and {MAX_SPEED} on this server"
            raise _Refused(400, message, "speed", None)
        return text, voice, fmt, float(speed)

    def _voices(self) -> set[str]:
        return set(live_voices(self.registry))

    # ------------------------------------------------------------------ transcriptions

    async def transcriptions(self, request: web.Request) -> web.Response:
        try:
            fields, data = await asyncio.wait_for(_upload(request), UPLOAD_TIMEOUT_S)
            fmt, language = self._transcription_request(fields)
        except TimeoutError:
            return openai_error(408, f"the upload took over {UPLOAD_TIMEOUT_S:g} s")
        except _Refused as exc:
            return exc.response
        loop = asyncio.get_running_loop()
        try:
            pcm = await loop.run_in_executor(None, decode_to_mic, data, MAX_AUDIO_S)
        except DecodeError as exc:
            return openai_error(400, str(exc), param="file", code="invalid_audio")
        transcription = Transcription(self.bus, language=language)
        try:
            transcription.feed(pcm)
            result = await transcription.finish()
        except TranscriptionError as exc:
            status = 503 if exc.code in ("NO_ASR", "BUSY") else 502
            if exc.code in ("AUDIO_TOO_LONG", "INVALID_MESSAGE"):
                status = 400
            return openai_error(status, str(exc), code=exc.code.lower())
        if fmt == "text":
            return web.Response(text=result.text + "\n", content_type="text/plain")
        if fmt in ("srt", "vtt"):
            return web.Response(text=_subtitles(result.segments, fmt), content_type="text/plain")
        if fmt == "json":
            return web.json_response({"text": result.text})
        segments = [
            {"id": i, "start": s.start_s, "end": s.end_s, "text": s.text}
            for i, s in enumerate(result.segments)
        ]
        return web.json_response(
            {
                "task": "transcribe",
                "language": _language_name(result.language),
                "duration": result.duration_s,
                "text": result.text,
                "segments": segments,
            }
        )

    def _transcription_request(self, fields: dict[str, str]) -> tuple[str, str]:
        _one_of(fields.get("model"), TRANSCRIPTION_MODELS, "model", "model_not_found")
        fmt = _one_of(fields.get("response_format", "json"), TRANSCRIPT_FORMATS, "response_format")
        language = fields.get("language", "")
        spoken = {
            str(asr.capabilities.get("language", ""))[:2] for asr in self.registry.alive("asr")
        }
        if language and spoken and language[:2].lower() not in spoken:
            message = f"the speech recognizer here hears only {sorted(spoken)}"
            raise _Refused(400, message, "language", "unsupported_language")
        return fmt, language


def _one_of(value: Any, choices: tuple[str, ...], param: str, code: str | None = None) -> str:
    """``value`` if it is one of ``choices``, else a 400 naming them."""
    if value not in choices:
        raise _Refused(400, f"{param} must be one of {list(choices)}", param, code)
    return str(value)


async def _json_body(request: web.Request) -> Any:
    try:
        return json.loads(await request.read())
    except web.HTTPRequestEntityTooLarge:
        raise _Refused(413, "the body is too large", None, None) from None
    except (ValueError, RecursionError):
        raise _Refused(400, "the body must be JSON", None, None) from None


async def _upload(request: web.Request) -> tuple[dict[str, str], bytes]:
    """A multipart form's text fields and its ``file``, bounded."""
    if not request.content_type.startswith("multipart/"):
        raise _Refused(400, "the body must be multipart/form-data with a file", None, None)
    try:
        reader = await request.multipart()
    except (ValueError, AssertionError) as exc:
        raise _Refused(400, f"bad multipart body: {exc}", None, None) from None
    fields: dict[str, str] = {}
    data: bytes | None = None
    parts = 0
    while (part := await reader.next()) is not None:
        parts += 1
        if parts > 32 or not isinstance(part, BodyPartReader):
            raise _Refused(400, "too many or nested form fields", None, None)
        if part.name == "file":
            data = await _read_part(part, MAX_UPLOAD_BYTES, "file")
        elif part.name:
            value = await _read_part(part, 64 * 1024, part.name)
            fields[part.name[:64]] = value.decode("utf-8", "replace")
    if not data:
        raise _Refused(400, "a non-empty file is required", "file", None)
    return fields, data


async def _read_part(part: BodyPartReader, limit: int, name: str) -> bytes:
    out = bytearray()
    while chunk := await part.read_chunk(64 * 1024):
        out += chunk
        if len(out) > limit:
            raise _Refused(413, f"{name} holds at most {limit} bytes", name, None)
    return bytes(out)


def _synthesis_error(exc: SynthesisFailed) -> web.Response:
    if exc.code in ("NO_WORKER", "BUSY"):
        return openai_error(503, str(exc), code=exc.code.lower())
    status = 502 if exc.code == "SYNTHESIS_FAILED" else 400
    return openai_error(status, str(exc), param="input" if status == 400 else None,
                        code=exc.code.lower())  # fmt: skip


LANGUAGES = {"en": "english", "de": "german", "fr": "french", "es": "spanish", "it": "italian"}


def _language_name(code: str) -> str:
    """verbose_json names the language (OpenAI: ``"english"``)."""
    return LANGUAGES.get(code[:2], code)


def _subtitles(segments: Any, fmt: str) -> str:
    def stamp(seconds: float) -> str:
        ms = round(seconds * 1000)
        h, ms = divmod(ms, 3_600_000)
        m, ms = divmod(ms, 60_000)
        s, ms = divmod(ms, 1000)
        return f"{h:02}:{m:02}:{s:02}{',' if fmt == 'srt' else '.'}{ms:03}"

    lines = [] if fmt == "srt" else ["WEBVTT", ""]
    for i, seg in enumerate(segments, 1):
        if fmt == "srt":
            lines.append(str(i))
        lines += [f"{stamp(seg.start_s)} --> {stamp(seg.end_s)}", seg.text, ""]
    return "\n".join(lines)
