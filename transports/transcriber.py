"""Transcription requests to an ASR actor, for clients that hand Duplex audio to transcribe
rather than talk to it (the Wyoming server's ``transcribe``, the gateway's
``/v1/audio/transcriptions``).

A :class:`Transcription` picks the least loaded live ASR, sends it the audio as it comes in
``asr.audio`` chunks (:mod:`actors.asr.requests`), so that only the last chunk is left to send
when the client's audio ends, and asks for a partial or the final transcript
(``asr.result``). The audio is 16 kHz mono PCM s16le (the Wyoming server resamples what it is
sent, the OpenAI endpoint decodes files to it).
"""

from __future__ import annotations

from typing import Protocol

from bus.audio_format import SAMPLE_BYTES
from bus.envelope import new_id
from bus.errors import BusError, RemoteError
from bus.schema import Message
from bus.schema.asr import MAX_REQUEST_CHUNK_BYTES, Answer, RequestAudio, RequestResult
from transports.utterance_stream import BusPort


class AsrPort(BusPort, Protocol):
    """What a transcription needs of its actor (:class:`bus.runtime.Actor` is one)."""

    def send_nowait(
        self, peer_id: str, msg: Message, *, session: str = "", reply_to: str = ""
    ) -> str: ...


CHUNK_BYTES = 64 * 1024
"""Audio sent to the ASR in chunks of this size (2 s) while the client's audio comes."""
FINAL_TIMEOUT_S = 120.0
"""Longest wait for a final transcript (a file of minutes takes tens of seconds on a CPU)."""
PARTIAL_TIMEOUT_S = 10.0


class TranscriptionError(Exception):
    """No transcript: no ASR runs, it refused the request, or it did not answer in time."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class Transcription:
    """One request's audio, sent to one ASR as it comes."""

    def __init__(self, bus: AsrPort, *, language: str = "") -> None:
        self.bus = bus
        self.language = language[:16]
        self.request_id = f"asr-{new_id()[:12]}"
        self.asr = ""
        self._pending = bytearray()
        self._sequence = 0
        self.samples = 0
        """Samples fed so far."""

    def feed(self, pcm: bytes) -> None:
        """Take 16 kHz mono PCM s16le; whole chunks leave at once. Raises TranscriptionError
        when no ASR runs."""
        self._pending += pcm
        self.samples += len(pcm) // SAMPLE_BYTES
        while len(self._pending) >= CHUNK_BYTES:
            chunk = bytes(self._pending[:CHUNK_BYTES])
            del self._pending[:CHUNK_BYTES]
            self._send(chunk)

    async def partial(self) -> RequestResult:
        """A transcript of the audio so far."""
        return await self._ask(Answer.PARTIAL, PARTIAL_TIMEOUT_S)

    async def finish(self) -> RequestResult:
        """The transcript of all of it; the request is over."""
        return await self._ask(Answer.FINAL, FINAL_TIMEOUT_S)

    def _asr(self) -> str:
        if not self.asr:
            live = self.bus.registry.alive("asr")
            if not live:
                raise TranscriptionError("NO_ASR", "no speech recognizer is running")
            self.asr = min(live, key=lambda r: r.load).actor_id
        return self.asr

    def _chunk(self, pcm: bytes, answer: Answer) -> RequestAudio:
        msg = RequestAudio(sequence=self._sequence, pcm=pcm, answer=answer, language=self.language)
        self._sequence += 1
        return msg

    def _send(self, pcm: bytes) -> None:
        asr = self._asr()
        try:
            self.bus.send_nowait(asr, self._chunk(pcm, Answer.NONE), session=self.request_id)
        except BusError as exc:
            raise TranscriptionError("NO_ASR", f"the speech recognizer is gone ({exc})") from exc

    async def _ask(self, answer: Answer, timeout: float) -> RequestResult:
        asr = self._asr()
        pcm = bytes(self._pending[:MAX_REQUEST_CHUNK_BYTES])
        del self._pending[: len(pcm)]
        if self._pending:  # (feed keeps less than a chunk pending)
            raise AssertionError("audio left over")
        try:
            reply = await self.bus.request(
                asr, self._chunk(pcm, answer), session=self.request_id, timeout=timeout
            )
        except RemoteError as exc:
            raise TranscriptionError(exc.code, exc.message) from exc
        except BusError as exc:
            message = f"the speech recognizer did not answer ({exc})"
            raise TranscriptionError("ASR_FAILED", message) from exc
        if not isinstance(reply, RequestResult):
            raise TranscriptionError("ASR_FAILED", f"unexpected answer {reply.TYPE}")
        return reply
