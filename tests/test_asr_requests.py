"""The ASR's transcription requests (actors/asr/requests.py): chunks in order or the request is
dropped, bounded in length and in number."""

from __future__ import annotations

import pytest

from actors.asr.requests import STALE_S, RequestRefused, Requests
from bus.schema.asr import Answer, RequestAudio

SECOND = bytes(32000)  # one second of 16 kHz s16le


def chunk(sequence: int, pcm: bytes = SECOND, answer: Answer = Answer.NONE) -> RequestAudio:
    return RequestAudio(sequence=sequence, pcm=pcm, answer=answer)


def test_chunks_in_order_make_one_request_and_a_gap_drops_it() -> None:
    requests = Requests(max_requests=4, max_request_s=10)
    key = ("gateway", "asr-1")
    requests.add(key, chunk(0))
    request = requests.add(key, chunk(1))
    assert request.seconds == 2.0
    with pytest.raises(RequestRefused, match="chunk 3 where 2 was due"):
        requests.add(key, chunk(3))
    with pytest.raises(RequestRefused, match="does not have"):  # dropped: it cannot go on
        requests.add(key, chunk(4))
    assert requests.add(key, chunk(0)).seconds == 1.0  # a new request under the same name


def test_a_request_over_its_length_is_refused_and_dropped() -> None:
    requests = Requests(max_requests=4, max_request_s=2.5)
    key = ("wyoming", "asr-2")
    requests.add(key, chunk(0))
    requests.add(key, chunk(1))
    with pytest.raises(RequestRefused) as refused:
        requests.add(key, chunk(2))
    assert refused.value.code == "AUDIO_TOO_LONG"
    assert key not in requests.open


def test_past_max_requests_a_new_one_is_refused_unless_one_has_gone_quiet() -> None:
    requests = Requests(max_requests=2, max_request_s=10)
    for name in ("a", "b"):
        requests.add(("g", name), chunk(0))
    with pytest.raises(RequestRefused) as refused:  # both are streaming: none is evicted
        requests.add(("g", "c"), chunk(0))
    assert refused.value.code == "BUSY" and set(requests.open) == {("g", "a"), ("g", "b")}
    requests.open[("g", "b")].last_chunk -= STALE_S + 1  # "b" went quiet
    requests.add(("g", "c"), chunk(0))
    assert set(requests.open) == {("g", "a"), ("g", "c")}
