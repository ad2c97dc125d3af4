"""Counting a repeated field on a serialised protobuf message, without parsing it.

Parsing builds one object per entry of a repeated field, and an empty entry costs two bytes
on the wire: a 6 MiB request can hold three million of them. A server that counts the
entries on the raw bytes first refuses such a request for the price of reading a few dozen
field headers. Only the top level is walked; the parser checks everything else.
"""

from __future__ import annotations

# Wire types (protobuf encoding): what follows a field's tag.
_VARINT, _FIXED64, _LENGTH, _FIXED32 = 0, 1, 2, 5


class TooMany(Exception):
    """The message holds more entries (or more top-level fields) than allowed."""


def _varint(data: bytes | memoryview, at: int) -> tuple[int, int]:
    """The varint at `at` and the offset after it; ValueError when it is cut off or too long."""
    value = shift = 0
    while True:
        if at >= len(data) or shift > 63:
            raise ValueError("truncated or overlong varint")
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, at
        shift += 7


def check_count(data: bytes | memoryview, number: int, most: int, spare_fields: int = 32) -> int:
    """How many times field `number` occurs at the top level of `data`.

    Raises TooMany when it occurs more than `most` times (the message says how often), or
    as soon as the message has more than `most + spare_fields` top-level fields at all, so
    the walk stays short. Bytes that are not valid protobuf end the count early: the parser
    refuses them afterwards.
    """
    count = fields = at = 0
    size = len(data)
    try:
        while at < size:
            tag, at = _varint(data, at)
            fields += 1
            if tag >> 3 == number:
                count += 1
            if fields > most + spare_fields:
                raise TooMany(f"more than {most + spare_fields} top-level fields")
            wire = tag & 7
            if wire == _VARINT:
                _, at = _varint(data, at)
            elif wire == _FIXED64:
                at += 8
            elif wire == _LENGTH:
                length, at = _varint(data, at)
                at += length
            elif wire == _FIXED32:
                at += 4
            else:  # groups are not used by this schema; the parser decides
                break
    except ValueError:
        pass
    if count > most:
        raise TooMany(str(count))
    return count
