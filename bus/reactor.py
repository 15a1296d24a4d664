"""Plain ZeroMQ sockets served from an asyncio loop, with no future per receive.

zmq.asyncio builds futures and callbacks for every socket on every poll; on the audio hot
path that costs more than the hop itself. Here each socket's notification descriptor is
watched once with ``loop.add_reader``, and a wake-up only means "look again": the truth is the
socket's ``EVENTS``, read before every sleep. ZeroMQ's descriptor is edge-like and a send may
swallow an edge, so a send made while the serving loop sleeps (from another task) pokes it.
"""

from __future__ import annotations

import asyncio
from typing import Any, Generic, TypeVar, cast

import zmq

Tag = TypeVar("Tag")

_EVENTS = int(zmq.EVENTS)
_POLLIN = int(zmq.POLLIN)
_FD = int(zmq.FD)


class Reactor(Generic[Tag]):
    """The readable sockets of one actor, each with a tag saying what it is."""

    def __init__(self) -> None:
        self._sockets: dict[zmq.Socket[Any], Tag] = {}
        self._event = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sleeping = False

    def watch(self, sock: zmq.Socket[Any], tag: Tag) -> None:
        """Serve ``sock``; must be called on the running loop."""
        loop = self._loop = asyncio.get_running_loop()
        loop.add_reader(_fd(sock), self._event.set)
        self._sockets[sock] = tag
        self._event.set()

    def unwatch(self, sock: zmq.Socket[Any]) -> None:
        """Stop serving ``sock`` (before closing it)."""
        if self._sockets.pop(sock, None) is not None and self._loop is not None:
            self._loop.remove_reader(_fd(sock))

    def poke(self) -> None:
        """Make the serving loop look at its sockets again."""
        self._event.set()

    def ready(self) -> list[tuple[zmq.Socket[Any], Tag]]:
        """Sockets with a message waiting."""
        return [
            (sock, tag)
            for sock, tag in self._sockets.items()
            if cast(int, sock.get(_EVENTS)) & _POLLIN
        ]

    async def wait(self) -> None:
        """Sleep until some socket may have a message, or :meth:`poke`."""
        self._event.clear()
        if self.ready():
            return
        self._sleeping = True
        try:
            await self._event.wait()
        finally:
            self._sleeping = False

    def send(self, sock: zmq.Socket[Any], frames: list[bytes]) -> bool:
        """Send without blocking; False when the peer's queue is full or it is gone."""
        try:
            sock.send_multipart(frames, zmq.NOBLOCK)
        except zmq.ZMQError as exc:
            if exc.errno in (zmq.EAGAIN, zmq.EHOSTUNREACH):
                return False  # queue full, or (ROUTER) the peer is gone
            raise
        finally:
            if self._sleeping:
                self._event.set()
        return True

    def close_all(self, linger_ms: int = 0) -> None:
        """Stop serving and close every watched socket."""
        for sock in list(self._sockets):
            self.unwatch(sock)
            sock.close(linger=linger_ms)


def _fd(sock: zmq.Socket[Any]) -> int:
    return cast(int, sock.get(_FD))
