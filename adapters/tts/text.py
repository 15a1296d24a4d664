"""Text handling for speech: validation, sentence splitting, and a buffer for text that arrives
in pieces (streamed from a dialogue model) that hands out sentences as they complete."""

from __future__ import annotations

import re
import unicodedata

MAX_UTTERANCE_CHARS = 20_000
"""Most text one utterance may carry in all its chunks (about 20 minutes of speech)."""

_ABBREVIATIONS = frozenset(
    [
        "mr",
        "mrs",
        "ms",
        "dr",
        "st",
        "jr",
        "sr",
        "prof",
        "vs",
        "etc",
        "e.g",
        "i.e",
        "a.m",
        "p.m",
        "no",
        "fig",
        "approx",
        "dept",
        "est",
        "inc",
        "ltd",
        "co",
    ]
)
_BOUNDARY = re.compile("[.!?\u2026]+[\"'\u201d\u2019)\\]]*\\s+")  # closing quotes may follow


class TextError(ValueError):
    """Text that cannot be spoken, with the protocol error code to report."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def check_text(text: str) -> str:
    """The text if it is speakable (no control characters but tab and newlines), else TextError."""
    for index, char in enumerate(text):
        if _unspeakable(char):
            raise TextError(
                "INVALID_TEXT",
                f"text contains control character U+{ord(char):04X} at position {index}",
            )
    return text


def without_controls(text: str) -> str:
    """``text`` with each character :func:`check_text` refuses replaced by a space: for text
    no person typed (a dialogue model's reply), where refusing would silence the whole reply."""
    if not any(_unspeakable(char) for char in text):
        return text  # the common case, without building a new string
    return "".join(" " if _unspeakable(char) else char for char in text)


def _unspeakable(char: str) -> bool:
    return char not in "\t\n\r" and unicodedata.category(char) in ("Cc", "Cs", "Co")


def split_sentences(text: str) -> list[str]:
    """Sentences of ``text``, whitespace-trimmed, empty ones dropped."""
    buffer = SentenceBuffer()
    return [*buffer.push(text), *buffer.flush()]


class SentenceBuffer:
    """Collects streamed text; :meth:`push` returns the sentences completed so far."""

    def __init__(self) -> None:
        self._text = ""
        self.total_chars = 0

    def push(self, text: str) -> list[str]:
        """Add text; a sentence is complete once whitespace follows its final punctuation."""
        self.total_chars += len(text)
        if self.total_chars > MAX_UTTERANCE_CHARS:
            raise TextError(
                "TEXT_TOO_LONG", f"an utterance holds at most {MAX_UTTERANCE_CHARS} characters"
            )
        self._text += text
        sentences = []
        start = 0
        for match in _BOUNDARY.finditer(self._text):
            if _is_abbreviation(self._text[start : match.start() + 1]):
                continue
            sentence = self._text[start : match.end()].strip()
            if sentence:
                sentences.append(sentence)
            start = match.end()
        self._text = self._text[start:]
        return sentences

    def flush(self) -> list[str]:
        """Whatever text is left, as a last sentence."""
        rest, self._text = self._text.strip(), ""
        return [rest] if rest else []


def _is_abbreviation(text_through_dot: str) -> bool:
    if not text_through_dot.endswith("."):
        return False
    word = (
        text_through_dot[:-1].rsplit(None, 1)[-1].lower() if text_through_dot[:-1].strip() else ""
    )
    return word in _ABBREVIATIONS or (len(word) == 1 and word.isalpha())
