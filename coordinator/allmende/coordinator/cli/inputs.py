"""Reading job input files: .jsonl, .csv, .tsv, .parquet and .txt, each item with its line;
and image-text pairs from WebDataset .tar shards and .parquet image columns
(image_inputs.py).

Errors name the file, the line and what was expected; nothing is sent before the whole
file has been read and checked.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from allmende.protocol.errors import InvalidArgument
from allmende.protocol.image_files import parquet_images, tar_samples
from allmende.protocol.limits import MAX_ID_CHARS, MAX_TEXT_BYTES

FORMATS = (".jsonl", ".csv", ".tsv", ".parquet", ".txt", ".tar")


@dataclass(frozen=True)
class Item:
    item_id: str
    text: str
    line: int
    image: bytes | None = None  # image-text inputs: the image file (b'': a 0-byte file)
    url: str = ""  # the image is fetched from here by volunteers (instead of `image`)
    source_url: str = ""  # where `image` came from (recorded, never fetched)


def read_items(path: Path) -> list[Item]:
    """Read and check an input file: unique non-empty ids, string texts, at least one item."""
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise InvalidArgument(
            "--input", f"a file ending in one of {', '.join(FORMATS)}, got {path.name}"
        )
    if not path.is_file():
        raise InvalidArgument("--input", f"an existing file, {path} not found")
    reader = {
        ".jsonl": _jsonl,
        ".csv": _csv,
        ".tsv": _tsv,
        ".parquet": _parquet,
        ".txt": _txt,
        ".tar": _tar,
    }[suffix]
    items = list(reader(path))
    if not items:
        raise InvalidArgument("--input", f"at least one item; {path.name} has none")
    seen: dict[str, int] = {}
    for item in items:
        where = f"line {item.line} of {path.name}"
        if len(item.text.encode("utf-8", "surrogatepass")) > MAX_TEXT_BYTES:
            raise InvalidArgument("text", f"at most {MAX_TEXT_BYTES} bytes of UTF-8 ({where})")
        if len(item.item_id) > MAX_ID_CHARS:
            raise InvalidArgument("id", f"at most {MAX_ID_CHARS} characters ({where})")
        if item.item_id in seen:
            raise InvalidArgument(
                "id",
                f"unique ids; {item.item_id!r} on line {item.line} of {path.name} "
                f"repeats line {seen[item.item_id]}",
            )
        seen[item.item_id] = item.line
    return items


def _open_text(path: Path) -> Iterator[tuple[int, str]]:
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            yield from enumerate(handle, start=1)
    except UnicodeDecodeError as exc:
        raise InvalidArgument("--input", f"UTF-8 text; {path.name} is not ({exc.reason})") from None


def _id(value: object, where: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise InvalidArgument("id", f"a string or integer ({where})")
    text = str(value)
    if not text:
        raise InvalidArgument("id", f"a non-empty id ({where})")
    return text


def _jsonl(path: Path) -> Iterator[Item]:
    for line_no, line in _open_text(path):
        if not line.strip():
            continue
        where = f"line {line_no} of {path.name}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InvalidArgument(
                "input", f"one JSON object per line; {where}: {exc.msg}"
            ) from None
        if not isinstance(record, dict):
            raise InvalidArgument("input", f'a JSON object {{"id": ..., "text": ...}} ({where})')
        if "id" not in record or "text" not in record:
            raise InvalidArgument("input", f'both "id" and "text" keys ({where})')
        if not isinstance(record["text"], str):
            raise InvalidArgument("text", f"a string ({where})")
        yield Item(_id(record["id"], where), record["text"], line_no)


def _delimited(path: Path, delimiter: str) -> Iterator[Item]:
    # CSV follows RFC 4180 quoting; TSV (IANA text/tab-separated-values) has no quoting, so
    # a quote character in a TSV field is part of the text.
    with path.open(encoding="utf-8-sig", newline="") as handle:
        try:
            if delimiter == "\t":
                reader = csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
            else:
                reader = csv.DictReader(handle, delimiter=delimiter)
            fields = reader.fieldnames or []
            if "id" not in fields or "text" not in fields:
                raise InvalidArgument(
                    "input", f"a header with 'id' and 'text' columns in {path.name}, got {fields}"
                )
            for row in reader:
                line = reader.line_num
                where = f"line {line} of {path.name}"
                if None in row:  # DictReader's key for fields beyond the header
                    raise InvalidArgument("input", _extra_columns(fields, row, delimiter, where))
                if row.get("text") is None:
                    raise InvalidArgument("text", f"a value in every row ({where})")
                yield Item(_id(row["id"], where), row["text"], line)
        except UnicodeDecodeError as exc:
            raise InvalidArgument(
                "--input", f"UTF-8 text; {path.name} is not ({exc.reason})"
            ) from None
        except csv.Error as exc:
            raise InvalidArgument("input", f"valid CSV in {path.name} ({exc})") from None


def _extra_columns(fields: Sequence[str], row: dict[str | None, object], delimiter: str,
                   where: str) -> str:
    """Why a row with more fields than the header is refused: its text would be cut short
    at the first tab (or comma), silently, and the rest dropped."""
    extra = row[None]
    count = len(fields) + (len(extra) if isinstance(extra, list) else 1)
    if delimiter == "\t":
        hint = "; TSV has no quoting, so a text cannot hold a tab (use .jsonl or quoted .csv)"
    else:
        hint = '; quote a text that holds a comma ("like, this")'
    header = ", ".join(fields)
    return f"{len(fields)} columns as in the header ({header}), {where} has {count}{hint}"


def _csv(path: Path) -> Iterator[Item]:
    return _delimited(path, ",")


def _tsv(path: Path) -> Iterator[Item]:
    return _delimited(path, "\t")


def _parquet(path: Path) -> Iterator[Item]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise InvalidArgument(
            "--input", "pyarrow for .parquet input: pip install 'allmende[dataset]'"
        ) from None
    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises many kinds
        raise InvalidArgument("--input", f"a readable Parquet file ({exc})") from None
    if "id" not in table.column_names or "text" not in table.column_names:
        raise InvalidArgument("input", f"'id' and 'text' columns, got {table.column_names}")
    ids = table.column("id").to_pylist()
    texts = table.column("text").to_pylist()
    with_images = "image" in table.column_names or "url" in table.column_names
    images = parquet_images(table, path.name) if with_images else [(None, "")] * len(ids)
    rows = zip(ids, texts, images, strict=True)
    for row, (item_id, text, (image, url)) in enumerate(rows, start=1):
        where = f"row {row} of {path.name}"
        if not isinstance(text, str):
            raise InvalidArgument("text", f"a string ({where})")
        yield Item(_id(item_id, where), text, row, image, url)


def _tar(path: Path) -> Iterator[Item]:
    for key, caption, image, number, source in tar_samples(path):
        yield Item(key, caption, number, image, source_url=source)


def _txt(path: Path) -> Iterator[Item]:
    # Every line is an item whose id is its line number, so a blank line cannot be skipped
    # (the ids after it would shift) nor kept (an empty item is never what was meant).
    for line_no, line in _open_text(path):
        text = line.rstrip("\r\n")
        if not text.strip():
            raise InvalidArgument(
                "input",
                f"a text on every line; line {line_no} of {path.name} is blank "
                "(remove it: ids are line numbers from 0)",
            )
        yield Item(str(line_no - 1), text, line_no)
