"""Text normalisation before synthesis: what a voice would read wrongly, written out as words
(adapters/tts/normalize.py), one case per row."""

from __future__ import annotations

import pytest

from adapters.tts.normalize import normalize

CASES = [
    # numbers
    ("We had 1,234 people.", "We had one thousand two hundred and thirty-four people."),
    ("It is 3.5 km away.", "It is three point five km away."),
    ("It was -3 outside.", "It was minus three outside."),
    ("Pick 3, 4 or 5.", "Pick three, four or five."),
    ("Agent 007 is here.", "Agent zero zero seven is here."),
    ("In 1999, we met.", "In nineteen ninety-nine, we met."),
    ("Born in 2009.", "Born in two thousand and nine."),
    ("Room No. 5 is free.", "Room number five is free."),
    # ordinals
    ("The 21st floor.", "The twenty-first floor."),
    ("My 2nd and 3rd tries.", "My second and third tries."),
    # times
    ("See you at 3:45 pm today.", "See you at three forty-five p m today."),
    ("Meet at 3 p.m.", "Meet at three p m."),
    ("It opens at 12:00 sharp.", "It opens at twelve o'clock sharp."),
    ("The train leaves at 17:05.", "The train leaves at seventeen oh five."),
    # currencies
    ("It costs $5.30.", "It costs five dollars and thirty cents."),
    ("Pay $1 now.", "Pay one dollar now."),
    ("Only $0.50 each.", "Only fifty cents each."),
    ("Raise $2.5 million.", "Raise two point five million dollars."),
    ("That is £3.20 please.", "That is three pounds and twenty pence please."),
    ("A ticket is €10.", "A ticket is ten euros."),
    # abbreviations
    ("Dr. Smith lives on Main St.", "Doctor Smith lives on Main Street."),
    ("We flew to St. Louis.", "We flew to Saint Louis."),
    ("Bring a coat, e.g. wool.", "Bring a coat, for example wool."),
    ("Apples, pears, etc.", "Apples, pears, et cetera."),
    ("Mr. and Mrs. Lee came.", "Mister and Missus Lee came."),
    # URLs and e-mail addresses
    ("Visit https://www.example.com/a/b.", "Visit example dot com slash a slash b."),
    ("Mail bob.smith@example.co.uk today.", "Mail bob dot smith at example dot co dot uk today."),
    # left to the phonemizer
    ("Version 1.2.3 is out.", "Version 1.2.3 is out."),
    ("Call 555-1234 now.", "Call 555-1234 now."),
    ("COVID-19 and mp3 files.", "COVID-19 and mp3 files."),
    ("the Dr. said so", "the Dr. said so"),
    ("Nothing to change here.", "Nothing to change here."),
]


@pytest.mark.parametrize(("written", "said"), CASES)
def test_english_text_is_written_out_as_it_is_said(written: str, said: str) -> None:
    assert normalize(written, "en_US") == said


def test_long_numbers_are_read_digit_by_digit_and_other_languages_are_left_alone() -> None:
    assert normalize("Code 1234567890123456.", "en_GB") == (
        "Code one two three four five six seven eight nine zero one two three four five six."
    )
    assert normalize("Ich habe 3 Äpfel für $5.", "de_DE") == "Ich habe 3 Äpfel für $5."
