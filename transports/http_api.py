"""The gateway's HTTP endpoints, on the WebSocket's port.

``GET /`` the browser web app (``transports/web/index.html``, which talks WebRTC: see
``transports/web/app.js``), or with a WebSocket upgrade a client of the older project, and
``GET /web/{name}`` the app's scripts and style sheet (a fixed list of names); ``GET /health``,
``GET /ready`` (200 only when a TTS worker is routable; ``voice_in`` says whether VAD and ASR
are up too), ``GET /metrics``, ``GET /v1/voices``, ``POST /v1/synthesize`` (``{"text",
"voice"?, "format": "wav"}`` → a 48 kHz mono WAV).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from bus.audio_format import wav_bytes
from transports import protocol
from transports.sessions import SessionHub
from transports.synthesis import Synthesis, SynthesisFailed
from transports.utterance_stream import Registry

SYNTHESIZE_TIMEOUT_S = 60.0
SYNTHESIZE_CREDIT = 500

WEB_ASSETS = {
    "app.js": "text/javascript",
    "chart.js": "text/javascript",
    "style.css": "text/css",
}
"""The files ``GET /web/{name}`` serves, with their content types: a fixed list, so no
request names any other file."""
NO_CACHE = {"Cache-Control": "no-cache"}


def web_file(name: str) -> bytes:
    """A file of ``transports/web`` (package data: works from an installed wheel too)."""
    return resources.files("transports").joinpath("web", name).read_bytes()


def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


class HttpApi:
    """The HTTP side of a gateway."""

    def __init__(
        self,
        hub: SessionHub,
        registry: Registry,
        metrics_registry: Any,
        health: Callable[[], dict[str, Any]],
        older_websocket: Callable[[web.Request], Awaitable[web.StreamResponse]] | None = None,
    ) -> None:
        self.older_websocket = older_websocket
        self.hub = hub
        self.registry = registry
        self.metrics_registry = metrics_registry
        self.health_info = health

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/", self.page)
        app.router.add_get("/web/{name}", self.web_asset)
        app.router.add_get("/health", self.health)
        app.router.add_get("/ready", self.ready)
        app.router.add_get("/metrics", self.metrics)
        app.router.add_get("/v1/voices", self.voices)
        app.router.add_post("/v1/synthesize", self.synthesize)

    async def page(self, request: web.Request) -> web.StreamResponse:
        """The web app; a WebSocket upgrade here is a client of the older project."""
        if self.older_websocket is not None and web.WebSocketResponse().can_prepare(request).ok:
            return await self.older_websocket(request)
        # Read on each request (a few kilobytes) so that an edited page shows on reload.
        body = web_file("index.html")
        return web.Response(body=body, content_type="text/html", charset="utf-8", headers=NO_CACHE)

    async def web_asset(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        content_type = WEB_ASSETS.get(name)
        if content_type is None:
            raise web.HTTPNotFound()
        body = web_file(name)
        return web.Response(body=body, content_type=content_type, charset="utf-8", headers=NO_CACHE)

    async def health(self, _request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", **self.health_info()})

    async def ready(self, _request: web.Request) -> web.Response:
        registry = self.registry
        missing = [kind for kind in ("supervisor", "router") if not registry.alive(kind)]
        workers = [w for w in registry.alive("tts_worker") if w.load < 1.0]
        if not workers:
            missing.append("tts_worker")
        # Speech in needs VAD and ASR too; a text-only deployment is ready without them.
        voice_in = bool(registry.alive("vad") and registry.alive("asr"))
        if missing:
            body = {"ready": False, "missing": missing, "voice_in": voice_in}
            return web.json_response(body, status=503)
        return web.json_response({"ready": True, "tts_workers": len(workers), "voice_in": voice_in})

    async def metrics(self, _request: web.Request) -> web.Response:
        body = generate_latest(self.metrics_registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def voices(self, _request: web.Request) -> web.Response:
        voices: dict[str, dict[str, Any]] = {}
        for worker in self.registry.alive("tts_worker"):
            for voice in worker.capabilities.get("voices", ()):
                entry = voices.setdefault(voice, {"id": voice, "workers": 0, "resident": False})
                entry["workers"] += 1
                entry["resident"] |= voice in worker.resident_models
                entry["default"] = (
                    entry.get("default") or worker.capabilities.get("default_voice") == voice
                )
        return web.json_response({"voices": sorted(voices.values(), key=lambda v: v["id"])})

    async def synthesize(self, request: web.Request) -> web.Response:
        try:
            body = json.loads(await request.read())
        except (ValueError, RecursionError):
            return _error(400, "INVALID_MESSAGE", "the body must be JSON")
        if not isinstance(body, dict):
            return _error(400, "INVALID_MESSAGE", "the body must be a JSON object")
        text, voice = body.get("text"), body.get("voice", "")
        max_chars = self.hub.max_text_chars
        if not isinstance(text, str) or not text.strip():
            return _error(400, "INVALID_MESSAGE", '"text" must be a non-empty string')
        if len(text) > max_chars:
            return _error(413, "TEXT_TOO_LONG", f"text holds at most {max_chars} characters")
        if not isinstance(voice, str) or len(voice) > 128:
            return _error(400, "INVALID_MESSAGE", '"voice" must be a voice id')
        if body.get("format", "wav") != "wav":
            return _error(400, "INVALID_MESSAGE", 'only "format": "wav" is served')
        try:
            (text + voice).encode("utf-8")
        except UnicodeEncodeError:
            return _error(400, "INVALID_MESSAGE", "the text is not valid Unicode")
        try:
            protocol.speakable(text)
        except protocol.ClientError as exc:
            return _error(400, exc.code, str(exc))
        synthesis = Synthesis(self.hub.streams, text, voice=voice, lead=SYNTHESIZE_CREDIT)
        try:
            pcm = await asyncio.wait_for(_collect(synthesis), SYNTHESIZE_TIMEOUT_S)
        except TimeoutError:
            return _error(504, "SYNTHESIS_FAILED", "the worker did not finish")
        except SynthesisFailed as exc:
            if exc.code in ("NO_WORKER", "BUSY"):
                return _error(503, exc.code, str(exc))
            return _error(502 if exc.code == "SYNTHESIS_FAILED" else 400, exc.code, str(exc))
        finally:
            synthesis.close()  # one session per request: no affinity
        return web.Response(body=wav_bytes(pcm), content_type="audio/wav")


async def _collect(synthesis: Synthesis) -> bytes:
    return b"".join([pcm async for pcm in synthesis.frames()])
