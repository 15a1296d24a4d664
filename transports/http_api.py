"""The gateway's HTTP endpoints, on the WebSocket's port.

``GET /`` a short page, ``GET /health``, ``GET /ready`` (200 only when a TTS worker is
routable; ``voice_in`` says whether VAD and ASR are up too), ``GET /metrics``,
``GET /v1/voices``, ``POST /v1/synthesize`` (``{"text", "voice"?, "format": "wav"}`` → a
48 kHz mono WAV).
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import wave
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from bus.errors import BusError, RemoteError
from bus.inbound import Inbound
from bus.schema.routing import RouteAssignment, RouteRequest
from bus.schema.system import Error
from bus.schema.tts import TtsCredit, TtsEnd, TtsFrame, TtsStart

if TYPE_CHECKING:
    from actors.gateway import Gateway

SYNTHESIZE_TIMEOUT_S = 60.0
SYNTHESIZE_CREDIT = 500

PAGE = """<!doctype html><meta charset="utf-8"><title>Duplex</title>
<h1>Duplex</h1><p>Realtime full-duplex voice. Connect a client to <code>/ws</code>
(e.g. <code>duplex chat</code>); HTTP: <a href="/health">/health</a>, <a href="/ready">/ready</a>,
<a href="/metrics">/metrics</a>, <a href="/v1/voices">/v1/voices</a>,
<code>POST /v1/synthesize</code>.</p>
"""


@dataclass(slots=True)
class _Synthesis:
    worker_id: str
    utterance_id: str
    frames: list[bytes] = field(default_factory=list)
    done: asyncio.Future[TtsEnd | Error] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


class HttpApi:
    """The HTTP side of a gateway."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.pending: dict[str, _Synthesis] = {}

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/", self.page)
        app.router.add_get("/health", self.health)
        app.router.add_get("/ready", self.ready)
        app.router.add_get("/metrics", self.metrics)
        app.router.add_get("/v1/voices", self.voices)
        app.router.add_post("/v1/synthesize", self.synthesize)

    async def page(self, _request: web.Request) -> web.Response:
        return web.Response(text=PAGE, content_type="text/html")

    async def health(self, _request: web.Request) -> web.Response:
        return web.json_response(
            {
                "status": "ok",
                "actor_id": self.gateway.id,
                "sessions": len(self.gateway.clients),
                "registered": self.gateway.registered.is_set(),
            }
        )

    async def ready(self, _request: web.Request) -> web.Response:
        registry = self.gateway.registry
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
        body = generate_latest(self.gateway.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def voices(self, _request: web.Request) -> web.Response:
        voices: dict[str, dict[str, Any]] = {}
        for worker in self.gateway.registry.alive("tts_worker"):
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
        except ValueError:
            return _error(400, "INVALID_MESSAGE", "the body must be JSON")
        if not isinstance(body, dict):
            return _error(400, "INVALID_MESSAGE", "the body must be a JSON object")
        text, voice = body.get("text"), body.get("voice", "")
        if not isinstance(text, str) or not text.strip():
            return _error(400, "INVALID_MESSAGE", '"text" must be a non-empty string')
        if len(text) > self.gateway.max_text_chars:
            return _error(
                413, "TEXT_TOO_LONG", f"text holds at most {self.gateway.max_text_chars} characters"
            )
        if not isinstance(voice, str) or len(voice) > 128:
            return _error(400, "INVALID_MESSAGE", '"voice" must be a voice id')
        if body.get("format", "wav") != "wav":
            return _error(400, "INVALID_MESSAGE", 'only "format": "wav" is served')
        sid = f"http-{os.urandom(6).hex()}"
        routers = self.gateway.registry.alive("router")
        try:
            if not routers:
                raise RemoteError("NO_WORKER", "no router is running")
            route = await self.gateway.request(
                routers[0].actor_id, RouteRequest(voice=voice), session=sid, timeout=2.0
            )
            if not isinstance(route, RouteAssignment):
                raise RemoteError("NO_WORKER", "the router gave no worker")
            job = self.pending[sid] = _Synthesis(route.worker_id, os.urandom(4).hex())
            await self.gateway.send(
                route.worker_id,
                TtsStart(
                    utterance_id=job.utterance_id,
                    voice=route.voice,
                    text=text,
                    final=True,
                    credit=SYNTHESIZE_CREDIT,
                ),
                session=sid,
            )
            end = await asyncio.wait_for(job.done, SYNTHESIZE_TIMEOUT_S)
        except RemoteError as exc:
            return _error(503 if exc.code == "NO_WORKER" else 400, exc.code, exc.message)
        except (BusError, TimeoutError) as exc:
            return _error(504, "SYNTHESIS_FAILED", str(exc) or "the worker did not finish")
        finally:
            self.pending.pop(sid, None)
        if isinstance(end, Error):
            return _error(400, end.code, end.message)
        if end.reason != "completed":
            return _error(502, "SYNTHESIS_FAILED", end.error or end.reason)
        return web.Response(body=_wav(b"".join(job.frames)), content_type="audio/wav")

    async def on_message(self, inbound: Inbound) -> bool:
        """Frames and ends of HTTP syntheses; False for anything else."""
        job = self.pending.get(inbound.env.session)
        if job is None:
            return False
        msg = inbound.message
        if isinstance(msg, TtsFrame) and msg.utterance_id == job.utterance_id:
            job.frames.append(msg.pcm)
            if len(job.frames) % (SYNTHESIZE_CREDIT // 2) == 0:
                await self.gateway.send(
                    job.worker_id,
                    TtsCredit(utterance_id=job.utterance_id, frames=SYNTHESIZE_CREDIT // 2),
                    session=inbound.env.session,
                )
        elif isinstance(msg, TtsEnd | Error) and not job.done.done():
            job.done.set_result(msg)
        return True


def _wav(pcm: bytes) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(48_000)
        wav.writeframes(pcm)
    return out.getvalue()
