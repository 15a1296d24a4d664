"""Knowing whether code runs inside a message handler, where waiting for a reply deadlocks.

An actor's replies are read by the loop that runs its handlers one at a time, so a handler that
awaits a request would wait out the whole timeout, every time. :func:`handling` marks the
handler's context; :func:`refuse_request_in_handler` turns the mistake into an immediate,
explained error; :func:`outside_handler` is the context a spawned task starts in.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

_IN_HANDLER: contextvars.ContextVar[bool] = contextvars.ContextVar("in_handler", default=False)


@contextlib.contextmanager
def handling() -> Iterator[None]:
    """Mark the current context as inside a message handler."""
    token = _IN_HANDLER.set(True)
    try:
        yield
    finally:
        _IN_HANDLER.reset(token)


def outside_handler() -> contextvars.Context:
    """A copy of the current context, marked as not inside a handler (for new tasks)."""
    context = contextvars.copy_context()
    context.run(_IN_HANDLER.set, False)
    return context


def refuse_request_in_handler() -> None:
    """Raise RuntimeError when called from inside a handler."""
    if _IN_HANDLER.get():
        raise RuntimeError(
            "request() from inside a message handler would wait out its timeout: the reply is "
            "read by the same loop; run it in a task with Actor.spawn()"
        )
