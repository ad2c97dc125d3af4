"""Tests of reading job input files (.jsonl, .csv, .tsv, .parquet, .txt) and their errors."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from allmende.coordinator.cli.inputs import Item, read_items
from allmende.protocol.errors import InvalidArgument

TEXTS = ["The cat sat on the mat.", "Zwei Äpfel, ein Ölfass — und ß.", "comma, inside", "🙂"]


def write_jsonl(path: Path, records: list[object]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records),
                    encoding="utf-8")
    return path


def test_jsonl(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "in.jsonl",
                       [{"id": f"a{i}", "text": t, "extra": 1} for i, t in enumerate(TEXTS)])
    assert read_items(path) == [Item(f"a{i}", t, i + 1) for i, t in enumerate(TEXTS)]


def test_jsonl_integer_ids_and_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text('{"id": 7, "text": "x"}\n\n   \n{"id": "8", "text": "y"}\r\n', encoding="utf-8")
    assert read_items(path) == [Item("7", "x", 1), Item("8", "y", 4)]


def test_jsonl_malformed_line_is_named_by_number(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text('{"id": "1", "text": "a"}\n{"id": "2", "text": "b"}\n{"id": "3", "text":\n',
                    encoding="utf-8")
    with pytest.raises(InvalidArgument) as err:
        read_items(path)
    assert "line 3 of in.jsonl" in err.value.message


@pytest.mark.parametrize(
    ("record", "field"),
    [({"text": "no id"}, "input"), ({"id": "1"}, "input"), ({"ID": "1", "Text": "x"}, "input"),
     (["1", "x"], "input"), ("just a string", "input"), ({"id": "1", "text": 5}, "text"),
     ({"id": "1", "text": None}, "text"), ({"id": True, "text": "x"}, "id"),
     ({"id": 1.5, "text": "x"}, "id"), ({"id": "", "text": "x"}, "id"),
     ({"id": None, "text": "x"}, "id")],
)
def test_jsonl_bad_records_name_the_line(tmp_path: Path, record: object, field: str) -> None:
    path = write_jsonl(tmp_path / "in.jsonl", [{"id": "ok", "text": "fine"}, record])
    with pytest.raises(InvalidArgument) as err:
        read_items(path)
    assert err.value.field == field
    assert "line 2 of in.jsonl" in err.value.message


def test_jsonl_duplicate_ids_name_both_lines(tmp_path: Path) -> None:
    records = [{"id": "a", "text": "1"}, {"id": "b", "text": "2"}, {"id": "a", "text": "3"}]
    path = write_jsonl(tmp_path / "in.jsonl", list(records))
    with pytest.raises(InvalidArgument) as err:
        read_items(path)
    assert err.value.field == "id"
    assert "'a' on line 3 of in.jsonl repeats line 1" in err.value.message


def test_integer_and_string_ids_that_print_alike_are_duplicates(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "in.jsonl", [{"id": 1, "text": "a"}, {"id": "1", "text": "b"}])
    with pytest.raises(InvalidArgument, match="repeats line 1"):
        read_items(path)


def test_csv(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "id", "other"])
        for i, text in enumerate(TEXTS):
            writer.writerow([text, str(i), "z"])
    assert read_items(path) == [Item(str(i), t, i + 2) for i, t in enumerate(TEXTS)]


def test_csv_quoted_multiline_text(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_text('id,text\n1,"two\nlines, with ""quotes"""\n2,plain\n', encoding="utf-8")
    items = read_items(path)
    assert [(i.item_id, i.text) for i in items] == [
        ("1", 'two\nlines, with "quotes"'), ("2", "plain")]


def test_tsv(tmp_path: Path) -> None:
    path = tmp_path / "in.tsv"
    path.write_text("id\ttext\n" + "".join(f"{i}\t{t}\n" for i, t in enumerate(TEXTS)),
                    encoding="utf-8")
    assert read_items(path) == [Item(str(i), t, i + 2) for i, t in enumerate(TEXTS)]


@pytest.mark.parametrize("suffix", [".csv", ".tsv"])
def test_delimited_missing_columns(tmp_path: Path, suffix: str) -> None:
    sep = "," if suffix == ".csv" else "\t"
    path = tmp_path / f"in{suffix}"
    path.write_text(f"id{sep}sentence\n1{sep}x\n", encoding="utf-8")
    with pytest.raises(InvalidArgument) as err:
        read_items(path)
    assert "'id' and 'text'" in err.value.message
    assert "sentence" in err.value.message


def test_csv_short_row_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_text("id,text\n1,a\n2\n", encoding="utf-8")
    with pytest.raises(InvalidArgument) as err:
        read_items(path)
    assert err.value.field == "text"
    assert "line 3 of in.csv" in err.value.message


def test_csv_empty_id_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_text("id,text\n1,a\n,b\n", encoding="utf-8")
    with pytest.raises(InvalidArgument) as err:
        read_items(path)
    assert err.value.field == "id"
    assert "line 3 of in.csv" in err.value.message


def test_csv_duplicate_ids_name_both_lines(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_text("id,text\nx,a\ny,b\nx,c\n", encoding="utf-8")
    with pytest.raises(InvalidArgument) as err:
        read_items(path)
    assert "'x' on line 4 of in.csv repeats line 2" in err.value.message


def test_parquet(tmp_path: Path) -> None:
    path = tmp_path / "in.parquet"
    pq.write_table(pa.table({"id": [10, 11, 12, 13], "text": TEXTS, "x": [1, 2, 3, 4]}), path)
    assert read_items(path) == [Item(str(10 + i), t, i + 1) for i, t in enumerate(TEXTS)]


def test_parquet_errors(tmp_path: Path) -> None:
    path = tmp_path / "in.parquet"
    pq.write_table(pa.table({"id": ["a"], "body": ["x"]}), path)
    with pytest.raises(InvalidArgument, match="'id' and 'text' columns"):
        read_items(path)
    pq.write_table(pa.table({"id": ["a", "b"], "text": ["x", None]}), path)
    with pytest.raises(InvalidArgument, match=r"row 2 of in\.parquet") as err:
        read_items(path)
    assert err.value.field == "text"
    pq.write_table(pa.table({"id": ["a", "b", "a"], "text": ["x", "y", "z"]}), path)
    with pytest.raises(InvalidArgument, match=r"'a' on line 3 of in\.parquet repeats line 1"):
        read_items(path)
    path.write_bytes(b"PAR1 this is not parquet PAR1")
    with pytest.raises(InvalidArgument, match="readable Parquet"):
        read_items(path)


def test_txt_ids_are_line_numbers_from_zero(tmp_path: Path) -> None:
    path = tmp_path / "in.txt"
    path.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    assert read_items(path) == [Item(str(i), t, i + 1) for i, t in enumerate(TEXTS)]


def test_txt_with_crlf(tmp_path: Path) -> None:
    path = tmp_path / "in.txt"
    path.write_bytes(b"one\r\ntwo\r\nthree\r\nfour")
    items = read_items(path)
    assert [(i.item_id, i.text) for i in items] == [("0", "one"), ("1", "two"), ("2", "three"),
                                                    ("3", "four")]


@pytest.mark.parametrize(
    ("content", "line"),
    [
        (b"one\r\ntwo\r\n\r\nfour", 3),  # once an empty item "2"
        (b"one\n   \nthree\n", 2),  # blank but for spaces
        (b"one\ntwo\n\n", 3),  # a blank last line too
        (b"\none\n", 1),
    ],
)
def test_txt_blank_line_is_an_error_naming_the_line(
    tmp_path: Path, content: bytes, line: int
) -> None:
    path = tmp_path / "in.txt"
    path.write_bytes(content)
    with pytest.raises(InvalidArgument) as err:
        read_items(path)
    assert f"line {line} of in.txt is blank" in err.value.message


@pytest.mark.parametrize(
    ("name", "content", "needles"),
    [
        ("in.tsv", "id\ttext\nstsb-1\tgood\nstsb-49x\tfoo\textra column\n",
         ("line 3 of in.tsv has 3", "2 columns", "id, text", "tab")),
        ("in.tsv", "id\ttext\tlang\na\tx\ten\nb\ty\ten\tmore\tstill\n",
         ("line 3 of in.tsv has 5", "3 columns")),
        ("in.csv", "id,text\na,b\nc,d,e\n", ("line 3 of in.csv has 3", "quote")),
    ],
)
def test_delimited_row_with_more_columns_than_the_header_is_an_error(
    tmp_path: Path, name: str, content: str, needles: tuple[str, ...]
) -> None:
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(InvalidArgument) as err:
        read_items(path)
    for needle in needles:
        assert needle in err.value.message, err.value.message


@pytest.mark.parametrize("name", ["in.txt", "in.jsonl", "in.csv", "in.tsv"])
def test_empty_file_is_refused(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(b"")
    with pytest.raises(InvalidArgument):
        read_items(path)


@pytest.mark.parametrize(("name", "content"), [("in.csv", "id,text\n"), ("in.tsv", "id\ttext\n"),
                                               ("in.jsonl", "\n\n")])
def test_file_without_items_is_refused(tmp_path: Path, name: str, content: str) -> None:
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(InvalidArgument, match="at least one item"):
        read_items(path)


@pytest.mark.parametrize("name", ["in.json", "in.xlsx", "in", "in.txt.gz"])
def test_unknown_suffix_is_refused(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_text("x\n", encoding="utf-8")
    with pytest.raises(InvalidArgument) as err:
        read_items(path)
    assert err.value.field == "--input"
    assert ".jsonl" in err.value.message


def test_missing_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="not found"):
        read_items(tmp_path / "absent.jsonl")


def test_suffix_is_case_insensitive(tmp_path: Path) -> None:
    path = tmp_path / "IN.TXT"
    path.write_text("hello\n", encoding="utf-8")
    assert read_items(path) == [Item("0", "hello", 1)]


@pytest.mark.parametrize(
    ("name", "content"),
    [("in.txt", b"fine\n\xff\xfe broken\n"),
     ("in.jsonl", b'{"id": "1", "text": "ok"}\n{"id": "2", "text": "\xc3\x28"}\n'),
     ("in.csv", b"id,text\n1,ok\n2,\xe9t\xe9\n"),
     ("in.tsv", b"id\ttext\n1\t\x80\n")],
)
def test_invalid_utf8_is_refused(tmp_path: Path, name: str, content: bytes) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(InvalidArgument) as err:
        read_items(path)
    assert err.value.field == "--input"
    assert "UTF-8" in err.value.message
    assert name in err.value.message
