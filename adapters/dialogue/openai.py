"""The ``openai`` dialogue: a streamed reply from an OpenAI-compatible chat endpoint.

``POST {base_url}/chat/completions`` with ``"stream": true`` and reads the server-sent events
(``data: {...}`` lines, ``data: [DONE]`` at the end), yielding each ``delta.content``. llama.cpp's
server, Ollama (``http://127.0.0.1:11434/v1``), vLLM and OpenAI all speak it.

Configured by the supervisor's ``dialogue_openai`` settings, overridden by the environment:
``DUPLEX_LLM_BASE_URL``, ``DUPLEX_LLM_MODEL``, ``DUPLEX_LLM_API_KEY`` (or ``OPENAI_API_KEY``).
Errors become :class:`DialogueError`: ``DIALOGUE_UNAVAILABLE`` (cannot connect),
``DIALOGUE_TIMEOUT`` (no first token within ``first_token_timeout_s``, or a gap longer than
``idle_timeout_s``, or more than ``total_timeout_s`` in all), ``DIALOGUE_FAILED`` (an HTTP error
or a malformed stream). An interrupted assistant turn reaches the model as the words the person
heard followed by `` [interrupted]``.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import aiohttp

from adapters.dialogue.base import MAX_REPLY_CHARS, DialogueError, Turn

MAX_LINE_BYTES = 64 * 1024


class OpenAiDialogue:
    """A streaming chat-completions client; see the module docstring."""

    name = "openai"

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str = "",
        *,
        system_prompt: str = "",
        max_tokens: int = 300,
        first_token_timeout_s: float = 5.0,
        idle_timeout_s: float = 5.0,
        total_timeout_s: float = 30.0,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise DialogueError("DIALOGUE_FAILED", f"base URL {base_url!r} is not http(s)")
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.api_key = api_key
        self.system_prompt = system_prompt
        self.max_tokens = max_tokens
        self.first_token_timeout_s = first_token_timeout_s
        self.idle_timeout_s = idle_timeout_s
        self.total_timeout_s = total_timeout_s
        self._http: aiohttp.ClientSession | None = None

    @classmethod
    def from_settings(cls, settings: dict[str, Any]) -> OpenAiDialogue:
        env = os.environ
        return cls(
            env.get("DUPLEX_LLM_BASE_URL")
            or str(settings.get("base_url", "http://127.0.0.1:8000/v1")),
            env.get("DUPLEX_LLM_MODEL") or str(settings.get("model", "default")),
            env.get("DUPLEX_LLM_API_KEY") or env.get("OPENAI_API_KEY", ""),
            system_prompt=str(
                settings.get(
                    "system_prompt",
                    "You are a helpful voice assistant. Answer briefly, in plain spoken sentences.",
                )
            ),
            max_tokens=int(settings.get("max_tokens", 300)),
            first_token_timeout_s=float(settings.get("first_token_timeout_s", 5.0)),
            idle_timeout_s=float(settings.get("idle_timeout_s", 5.0)),
            total_timeout_s=float(settings.get("total_timeout_s", 30.0)),
        )

    def messages(self, history: Sequence[Turn]) -> list[dict[str, str]]:
        out = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        for turn in history:
            text = turn.text + (" [interrupted]" if turn.interrupted else "")
            out.append({"role": turn.role, "content": text})
        return out

    async def reply(self, history: Sequence[Turn]) -> AsyncIterator[str]:
        if self._http is None:
            self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None))
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        body = {
            "model": self.model,
            "messages": self.messages(history),
            "stream": True,
            "max_tokens": self.max_tokens,
        }
        started = time.monotonic()
        try:
            async with asyncio.timeout(self.first_token_timeout_s):
                response = await self._http.post(self.url, json=body, headers=headers)
        except TimeoutError as exc:
            raise DialogueError("DIALOGUE_TIMEOUT", f"{self.url} did not answer") from exc
        except aiohttp.ClientError as exc:
            raise DialogueError("DIALOGUE_UNAVAILABLE", f"{self.url}: {exc}") from exc
        async with response:
            if response.status != 200:
                detail = (await response.text())[:300]
                raise DialogueError(
                    "DIALOGUE_FAILED", f"{self.url} answered HTTP {response.status}: {detail}"
                )
            sent = 0
            async for chunk in self._events(response, started):
                chunk = chunk[: MAX_REPLY_CHARS - sent]
                if chunk:
                    sent += len(chunk)
                    yield chunk
                if sent >= MAX_REPLY_CHARS:
                    return

    async def _events(self, response: aiohttp.ClientResponse, started: float) -> AsyncIterator[str]:
        """``delta.content`` of every event, with the timeouts applied between them."""
        first = True
        while True:
            limit = self.first_token_timeout_s if first else self.idle_timeout_s
            limit = min(limit, self.total_timeout_s - (time.monotonic() - started))
            try:
                async with asyncio.timeout(max(0.0, limit)):
                    line = await response.content.readline()
            except TimeoutError as exc:
                what = "no reply" if first else "the reply stalled"
                raise DialogueError("DIALOGUE_TIMEOUT", f"{self.url}: {what}") from exc
            except aiohttp.ClientError as exc:
                raise DialogueError("DIALOGUE_FAILED", f"{self.url}: {exc}") from exc
            if not line:
                return  # the server closed the stream (some omit [DONE])
            if len(line) > MAX_LINE_BYTES:
                raise DialogueError("DIALOGUE_FAILED", "an event line over 64 KiB")
            text = line.decode("utf-8", "replace").strip()
            if not text.startswith("data:"):
                continue  # blank separators, comments, event names
            data = text[5:].strip()
            if data == "[DONE]":
                return
            try:
                event = json.loads(data)
                content = event["choices"][0].get("delta", {}).get("content") or ""
            except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
                raise DialogueError(
                    "DIALOGUE_FAILED", f"malformed stream event: {data[:120]}"
                ) from exc
            if not isinstance(content, str):
                raise DialogueError("DIALOGUE_FAILED", "delta.content is not text")
            first = False
            if content:
                yield content

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None
