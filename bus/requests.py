"""Requests in flight: each waits on a future that a reply, a timeout or the peer's death ends."""

from __future__ import annotations

import asyncio

from bus.errors import PeerGone, RemoteError, RequestTimeout
from bus.schema import Message
from bus.schema.system import Error


class PendingRequests:
    """Futures of the requests an actor has sent, by message id, with the peer each went to."""

    def __init__(self) -> None:
        self._pending: dict[str, tuple[asyncio.Future[Message], str]] = {}

    def expect(self, msg_id: str, peer: str) -> asyncio.Future[Message]:
        """Register a request before sending it; returns the future its reply will settle."""
        future: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._pending[msg_id] = (future, peer)
        return future

    def resolve(self, reply_to: str, msg: Message) -> bool:
        """Settle the request ``reply_to`` with ``msg``; False if no such request waits."""
        entry = self._pending.pop(reply_to, None)
        if entry is None:
            return False
        future, _ = entry
        if not future.done():
            if isinstance(msg, Error):
                future.set_exception(RemoteError(msg.code, msg.message))
            else:
                future.set_result(msg)
        return True

    def forget(self, msg_id: str) -> None:
        """Drop a request that could not be sent."""
        self._pending.pop(msg_id, None)

    def fail_peer(self, peer: str, reason: str) -> None:
        """Fail every request waiting on ``peer`` with :class:`PeerGone`."""
        for msg_id, (future, to) in list(self._pending.items()):
            if to == peer:
                del self._pending[msg_id]
                if not future.done():
                    future.set_exception(PeerGone(f"{peer}: {reason}"))

    def fail_all(self, reason: str) -> None:
        """Fail every waiting request (the actor is stopping)."""
        for peer in {to for _, to in self._pending.values()}:
            self.fail_peer(peer, reason)

    async def wait(
        self, msg_id: str, future: asyncio.Future[Message], timeout: float, peer: str
    ) -> Message:
        """The reply, or :class:`RequestTimeout` after ``timeout`` seconds."""
        try:
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            raise RequestTimeout(f"no reply from {peer} within {timeout:.3g} s") from None
        finally:
            self._pending.pop(msg_id, None)
