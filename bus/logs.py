"""Structured log lines: ``time level logger event key=value ...`` (or JSON with ``json=True``).

Call sites pass fields with ``extra={"kv": {...}}``; :func:`kv` builds that dict.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any


def kv(**fields: Any) -> dict[str, Any]:
    """``extra=`` argument carrying structured fields for one log line."""
    return {"kv": fields}


class _Formatter(logging.Formatter):
    def __init__(self, as_json: bool) -> None:
        super().__init__()
        self.as_json = as_json

    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, Any] = getattr(record, "kv", {}) or {}
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        ts += f".{int(record.msecs):03d}Z"
        if self.as_json:
            line = {
                "ts": ts,
                "level": record.levelname.lower(),
                "logger": record.name,
                "event": record.getMessage(),
                **fields,
            }
            if record.exc_info:
                line["exc"] = self.formatException(record.exc_info)
            return json.dumps(line, default=str)
        parts = [ts, record.levelname.lower(), record.name, record.getMessage()]
        parts += [f"{k}={_fmt(v)}" for k, v in fields.items()]
        text = " ".join(parts)
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


def _fmt(value: Any) -> str:
    text = str(value)
    if not text or any(c in text for c in ' ="'):
        return json.dumps(text)
    return text


def configure(level: str = "info", *, as_json: bool = False) -> None:
    """Send every log line of this process to stderr in the structured format."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter(as_json))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


class RateLimitedLog:
    """Logs a recurring problem at most once per ``interval_s`` per key, counting the rest."""

    def __init__(self, logger: logging.Logger, interval_s: float = 1.0) -> None:
        self.logger = logger
        self.interval_s = interval_s
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def warning(self, key: str, event: str, **fields: Any) -> None:
        now = time.monotonic()
        if now - self._last.get(key, -1e9) < self.interval_s:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return
        self._last[key] = now
        suppressed = self._suppressed.pop(key, 0)
        if suppressed:
            fields["suppressed"] = suppressed
        self.logger.warning(event, extra=kv(**fields))
