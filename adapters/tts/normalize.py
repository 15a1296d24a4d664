"""Text a voice would read wrongly, written out as words before it is planned into units.

A phonemizer reads plain numbers well, but not the rest of written English: espeak-ng, Piper's,
says "$5.30" as "dollar five point three zero", "12:00" as "twelve zero zero", "e.g." as
"ee gee" and a URL letter by letter with its colons and slashes. Every engine gets its text
through :func:`normalize` (the worker calls it on each sentence), so each reads the same way
whatever its front end. Number words come from ``num2words``; the rules below only find what
to say and in which form, applied in this order:

=====================  ==========================================================
URL                    ``https://www.example.com/a`` -> "example dot com slash a"
e-mail address         ``bob@example.com`` -> "bob at example dot com"
currency               ``$5.30`` -> "five dollars and thirty cents" (``$ € £``, ``million``...)
time                   ``3:45 pm`` -> "three forty-five p m", ``12:00`` -> "twelve o'clock"
ordinal                ``21st`` -> "twenty-first"
abbreviation           ``Dr. Smith`` -> "Doctor Smith", ``Main St.`` -> "Main Street", ``e.g.``
year                   a bare four-digit number 1100-2099: ``1999`` -> "nineteen ninety-nine"
number                 ``1,234`` -> "one thousand two hundred and thirty-four", ``3.5``, ``-2``
=====================  ==========================================================

Left as written (to the phonemizer): digits joined to letters (``mp3``, ``A4``), groups of
digits joined by dashes or dots (phone numbers, dates, versions), and numbers of more than 15
digits, which are read digit by digit. The rules are English; a voice of another language gets
its text unchanged (its phonemizer reads its own numbers). Number words carry no commas: a
comma is a pause.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from num2words import num2words

MAX_DIGITS = 15
"""Longer numbers are read digit by digit (and num2words' work stays bounded)."""

_CURRENCIES = {"$": ("dollar", "cent"), "€": ("euro", "cent"), "£": ("pound", "penny")}
_SCALES = ("thousand", "million", "billion", "trillion")
_ABBREVIATIONS = {
    "Mr.": "Mister",
    "Mrs.": "Missus",
    "Ms.": "Miz",
    "Prof.": "Professor",
    "Jr.": "Junior",
    "Sr.": "Senior",
    "vs.": "versus",
    "etc.": "et cetera",
    "e.g.": "for example",
    "i.e.": "that is",
    "approx.": "approximately",
    "Dept.": "Department",
    "Fig.": "Figure",
}
_DIGIT_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]

_URL = re.compile(r"\b(?:https?://|www\.)[^\s<>\"]+", re.IGNORECASE)
_EMAIL = re.compile(r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b")
_MONEY = re.compile(
    r"([$€£])\s?(\d{1,3}(?:,\d{3})+|\d+)(?:\.(\d{1,2}))?(?!\d)"
    rf"(?:\s?({'|'.join(_SCALES)})\b)?"
)
_TIME = re.compile(
    r"(?<![\w:.])([01]?\d|2[0-3])(?::([0-5]\d))?(?:\s?([ap])\.?m\b\.?)(?![\w:])"
    r"|(?<![\w:.])([01]?\d|2[0-3]):([0-5]\d)(?![\w:]|\.\d)",
    re.IGNORECASE,
)
_ORDINAL = re.compile(r"(?<![\w.,])(\d{1,15})(st|nd|rd|th)\b", re.IGNORECASE)
_TITLES = re.compile(r"\b(Dr|St)\.(?=\s+[A-Z])")
_STREETS = re.compile(r"\b([A-Z][a-z]+) (Dr|St|Ave|Rd)\.")
_NUMBER_SIGN = re.compile(r"\bNo\.\s?(?=\d)")
_ABBREVIATION = re.compile(
    r"(?<![\w.])(" + "|".join(re.escape(a) for a in _ABBREVIATIONS) + r")(?!\w)"
)
_YEAR = re.compile(r"(?<![\w.,-])(1[1-9]\d\d|20\d\d)(?!\w|[,.-]\d)")
_NUMBER = re.compile(r"(?<![\w.,-])(-)?(\d{1,3}(?:,\d{3})+|\d+)(?:\.(\d+))?(?!\w|[,.-]\d)")


def normalize(text: str, language: str) -> str:
    """``text`` as a voice of ``language`` (``en_US``, ``de_DE``...) should read it."""
    if not language.lower().startswith("en") or not any(c in text for c in _TRIGGERS):
        return text
    for pattern, say in _RULES:
        text = pattern.sub(say, text)
    return text


_TRIGGERS = frozenset("0123456789.@$€£/")
"""A text with none of these has nothing any rule would change."""


def _url(m: re.Match[str]) -> str:
    url, end = _trailing(m.group())
    url = re.sub(r"^(?:https?://)?(?:www\.)?", "", url, flags=re.IGNORECASE).rstrip("/")
    words = re.sub(r"[/.:?=&#_-]", lambda s: f" {_SYMBOLS[s.group()]} ", url)
    return " ".join(words.split()) + end


def _email(m: re.Match[str]) -> str:
    user, domain = m.group().split("@", 1)
    return f"{_dotted(user)} at {_dotted(domain)}"


def _money(m: re.Match[str]) -> str:
    unit, minor = _CURRENCIES[m.group(1)]
    whole, cents, scale = int(m.group(2).replace(",", "")), m.group(3), m.group(4)
    if scale:  # "$2.5 million": two point five million dollars
        amount = _cardinal(m.group(2)) + (f" point {_digits(cents)}" if cents else "")
        return f"{amount} {scale} {unit}s"
    cents_n = int(cents.ljust(2, "0")) if cents else 0
    parts = []
    if whole or not cents_n:
        parts.append(f"{_cardinal(m.group(2))} {_plural(unit, whole)}")
    if cents_n:
        parts.append(f"{_words(cents_n)} {_plural(minor, cents_n)}")
    return " and ".join(parts)


def _time(m: re.Match[str]) -> str:
    if m.group(4) is not None:  # 24-hour or no meridiem: 12:00, 17:30
        hour, minute, meridiem = m.group(4), m.group(5), None
    else:
        hour, minute, meridiem = m.group(1), m.group(2), m.group(3)
    said = _words(int(hour))
    if minute and minute != "00":
        said += f" oh {_words(int(minute))}" if minute[0] == "0" else f" {_words(int(minute))}"
    elif meridiem is None:
        said += " o'clock"
    if meridiem:
        said += f" {meridiem.lower()} m"
        if m.group().endswith(".") and m.end() == len(m.string):
            said += "."  # the sentence's own full stop
    return said


def _ordinal(m: re.Match[str]) -> str:
    return _clean(num2words(int(m.group(1)), lang="en", to="ordinal"))


def _abbreviation(m: re.Match[str]) -> str:
    said = _ABBREVIATIONS[m.group()]
    return said + "." if m.end() == len(m.string) else said


def _street(m: re.Match[str]) -> str:
    said = f"{m.group(1)} {_STREET_WORDS[m.group(2)]}"
    return said + "." if m.end() == len(m.string) else said


_STREET_WORDS = {"Dr": "Drive", "St": "Street", "Ave": "Avenue", "Rd": "Road"}


def _year(m: re.Match[str]) -> str:
    return _clean(num2words(int(m.group(1)), lang="en", to="year"))


def _number(m: re.Match[str]) -> str:
    said = _cardinal(m.group(2))
    if m.group(3):
        said += f" point {_digits(m.group(3))}"
    return f"minus {said}" if m.group(1) else said  # a dash after a word never gets here


def _cardinal(digits: str) -> str:
    digits = digits.replace(",", "")
    if len(digits) > MAX_DIGITS or (len(digits) > 1 and digits[0] == "0"):
        return _digits(digits)  # an identifier or a code: its digits
    return _words(int(digits))


def _words(n: int) -> str:
    return _clean(num2words(n, lang="en"))


def _digits(digits: str) -> str:
    return " ".join(_DIGIT_WORDS[int(d)] for d in digits)


def _plural(word: str, n: int) -> str:
    if n == 1:
        return word
    return "pence" if word == "penny" else f"{word}s"


def _dotted(name: str) -> str:
    return " dot ".join(part for part in name.split(".") if part)


def _trailing(text: str) -> tuple[str, str]:
    """``text`` without the sentence punctuation that followed it, and that punctuation."""
    stripped = text.rstrip(".,;:!?)]'\"")
    return stripped, text[len(stripped) :]


def _clean(words: str) -> str:
    return words.replace(",", "")


_SYMBOLS = {
    "/": "slash",
    ".": "dot",
    ":": "colon",
    "?": "question mark",
    "=": "equals",
    "&": "and",
    "#": "hash",
    "_": "underscore",
    "-": "dash",
}
_RULES: list[tuple[re.Pattern[str], Callable[[re.Match[str]], str] | str]] = [
    (_URL, _url),
    (_EMAIL, _email),
    (_MONEY, _money),
    (_TIME, _time),
    (_ORDINAL, _ordinal),
    (_TITLES, lambda m: {"Dr": "Doctor", "St": "Saint"}[m.group(1)]),
    (_STREETS, _street),
    (_NUMBER_SIGN, "number "),
    (_ABBREVIATION, _abbreviation),
    (_YEAR, _year),
    (_NUMBER, _number),
]
