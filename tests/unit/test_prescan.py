"""Counting a repeated field on raw protobuf bytes, before anything parses them."""

from __future__ import annotations

import pytest

from allmende.protocol.prescan import TooMany, check_count
from allmende.v1 import allmende_pb2 as pb


def submit_results(entries: int, payload: bytes = b"") -> bytes:
    request = pb.SubmitResultsRequest(
        volunteer_id="v" * 64,
        results=[pb.SubmitResultRequest(payload=payload)] * entries,
    )
    return bytes(request.SerializeToString())


@pytest.mark.parametrize("entries", [0, 1, 32])
def test_counts_the_entries_of_an_honest_request(entries: int) -> None:
    assert check_count(submit_results(entries, b"x" * 1000), 2, 32) == entries


def test_too_many_entries_are_refused_with_their_count() -> None:
    with pytest.raises(TooMany, match=r"^33$"):
        check_count(submit_results(33), 2, 32)


def test_millions_of_empty_entries_are_refused_after_reading_a_few_headers() -> None:
    with pytest.raises(TooMany, match="more than 64 top-level fields"):
        check_count(b"\x12\x00" * 3_000_000, 2, 32)


def test_padding_fields_do_not_hide_entries_behind_them() -> None:
    padding = b"\x08\x01" * 100  # field 1 (a varint) a hundred times, then the entries
    with pytest.raises(TooMany, match="top-level fields"):
        check_count(padding + b"\x12\x00" * 1000, 2, 32)


def test_every_wire_type_is_skipped_by_its_length() -> None:
    fixed64, fixed32 = b"\x19" + bytes(8), b"\x25" + bytes(4)  # fields 3 and 4
    long_varint = b"\x28" + b"\xff" * 9 + b"\x01"  # field 5
    data = fixed64 + b"\x12\x00" + fixed32 + long_varint + b"\x12\x03abc"
    assert check_count(data, 2, 32) == 2


@pytest.mark.parametrize("data", [b"\x12", b"\x12\x05ab", b"\xff" * 20, b"\x0b\x12\x00"])
def test_bytes_that_are_not_protobuf_end_the_count_for_the_parser_to_refuse(
    data: bytes,
) -> None:
    assert check_count(data, 2, 32) <= 1
