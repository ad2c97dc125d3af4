"""Image-text job inputs (protos/allmende/protocol/image_files.py, read by `job create`): WebDataset
shards as img2dataset writes them and Parquet image columns, with every bad input refused
by name before anything is sent."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from allmende.coordinator.cli.inputs import read_items
from allmende.coordinator.cli.job_cmds import upload_requests
from allmende.protocol.errors import InvalidArgument
from allmende.v1 import allmende_pb2 as pb
from tests.conftest import read_images


def shard(path: Path, files: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def img2dataset_files(rows: list[tuple[str, bytes, str]]) -> dict[str, bytes]:
    """Files in img2dataset's order: KEY.jpg, KEY.txt, KEY.json for each sample."""
    files: dict[str, bytes] = {}
    for n, (_, image, caption) in enumerate(rows):
        key = f"{n:09d}"
        extension = "png" if image.startswith(b"\x89PNG") else "jpg"
        files[f"{key}.{extension}"] = image
        files[f"{key}.txt"] = caption.encode()
        files[f"{key}.json"] = json.dumps(
            {"url": f"https://example.org/{key}", "key": key}
        ).encode()
    return files


def test_a_webdataset_shard_gives_one_item_per_sample(tmp_path: Path) -> None:
    rows = read_images()
    files = img2dataset_files(rows)
    files["000000099.jpg"] = b""  # a 0-byte image: a row (its status will say empty)
    files["000000099.txt"] = b"nothing"
    files["README"] = b"not a sample"
    items = read_items(shard(tmp_path / "00000.tar", files))
    assert [i.item_id for i in items] == [f"{n:09d}" for n in range(len(rows))] + ["000000099"]
    assert [(i.text, i.image) for i in items[:-1]] == [(cap, img) for _, img, cap in rows]
    assert items[-1].image == b"" and items[-1].line == len(rows) + 1
    messages = list(upload_requests(pb.JobSpec(kind="clip-filter"), "00000.tar", items))
    sent = [item for m in messages[1:] for item in m.items]
    assert all(item.HasField("image") for item in sent)  # the 0-byte one included
    assert sent[0].image == rows[0][1]


@pytest.mark.parametrize(
    ("files", "field", "needle"),
    [
        ({"a.jpg": b"x"}, "text", "caption file a.txt"),
        ({"a.txt": b"a caption"}, "image", "an image (.jpg"),
        ({"a.jpg": b"x", "a.png": b"y", "a.txt": b"c"}, "image", "one image per sample"),
        ({"a.jpg": b"x", "a.txt": b"\xff\xfe"}, "text", "UTF-8 caption"),
    ],
)
def test_bad_shards_are_refused_naming_the_sample(
    tmp_path: Path, files: dict[str, bytes], field: str, needle: str
) -> None:
    with pytest.raises(InvalidArgument) as info:
        read_items(shard(tmp_path / "bad.tar", files))
    assert info.value.field == field and needle in info.value.expected
    assert "sample 'a' of bad.tar" in info.value.expected


def test_a_file_that_is_not_a_tar_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "broken.tar"
    path.write_bytes(b"not a tar at all" * 100)
    with pytest.raises(InvalidArgument) as info:
        read_items(path)
    assert info.value.field == "--input" and "broken.tar" in info.value.expected


def test_parquet_rows_carry_their_image_bytes(tmp_path: Path) -> None:
    rows = read_images()
    path = tmp_path / "pairs.parquet"
    pq.write_table(
        pa.table(
            {
                "id": [r[0] for r in rows],
                "text": [r[2] for r in rows],
                "image": pa.array([r[1] for r in rows], pa.binary()),
            }
        ),
        path,
    )
    items = read_items(path)
    assert [(i.item_id, i.text, i.image) for i in items] == [(a, c, b) for a, b, c in rows]


@pytest.mark.parametrize(
    ("image", "url", "needle"),
    [
        (b"x", "https://example.org/x.jpg", "not both"),
        (None, None, "an image or a url"),
    ],
)
def test_parquet_rows_need_an_image_or_a_url(
    tmp_path: Path, image: bytes | None, url: str | None, needle: str
) -> None:
    path = tmp_path / "pairs.parquet"
    pq.write_table(
        pa.table(
            {
                "id": ["ok", "bad"],
                "text": ["a", "b"],
                "image": pa.array([b"fine", image], pa.binary()),
                "url": pa.array([None, url], pa.string()),
            }
        ),
        path,
    )
    with pytest.raises(InvalidArgument) as info:
        read_items(path)
    assert info.value.field == "image" and needle in info.value.expected
    assert "row 2 of pairs.parquet" in info.value.expected


def test_a_shards_key_json_url_is_each_samples_source_url(tmp_path: Path) -> None:
    rows = read_images()
    files = img2dataset_files(rows)
    files["000000099.jpg"] = rows[0][1]
    files["000000099.txt"] = b"no metadata"
    files["000000098.jpg"] = rows[0][1]
    files["000000098.txt"] = b"metadata without a url"
    files["000000098.json"] = json.dumps({"url": None, "key": "000000098"}).encode()
    items = read_items(shard(tmp_path / "00000.tar", files))
    by_id = {i.item_id: i for i in items}
    assert by_id["000000000"].source_url == "https://example.org/000000000"
    assert by_id["000000000"].url == ""  # recorded, never fetched: the bytes are here
    assert by_id["000000099"].source_url == by_id["000000098"].source_url == ""
    messages = list(upload_requests(pb.JobSpec(kind="clip-filter"), "00000.tar", items))
    sent = {item.id: item for m in messages[1:] for item in m.items}
    assert sent["000000000"].source_url == "https://example.org/000000000"
    assert sent["000000000"].HasField("image") and not sent["000000000"].url


@pytest.mark.parametrize(
    ("meta", "field", "needle"),
    [
        (b"{not json", "json", "a JSON object"),
        (b"[1, 2]", "json", "a JSON object"),
        (b'{"url": 7}', "url", "a string"),
        (b'{"url": "file:///etc/passwd"}', "url", "http or https"),
        (b'{"url": "https://exa mple.org/x.jpg"}', "url", "whitespace"),
    ],
)
def test_a_bad_key_json_is_refused_naming_the_sample(
    tmp_path: Path, meta: bytes, field: str, needle: str
) -> None:
    files = {"a.jpg": b"x", "a.txt": b"a caption", "a.json": meta}
    with pytest.raises(InvalidArgument) as info:
        read_items(shard(tmp_path / "bad.tar", files))
    assert info.value.field == field and needle in info.value.expected
    assert "sample 'a' of bad.tar" in info.value.expected


def test_parquet_url_rows_are_read_and_checked(tmp_path: Path) -> None:
    path = tmp_path / "urls.parquet"
    urls = ["https://example.org/a.jpg", "http://example.org:8080/b.png?x=1"]
    pq.write_table(pa.table({"id": ["a", "b"], "text": ["c", "d"], "url": urls}), path)
    items = read_items(path)
    assert [(i.url, i.image) for i in items] == [(urls[0], None), (urls[1], None)]
    bad = tmp_path / "bad.parquet"
    pq.write_table(
        pa.table({"id": ["a", "b"], "text": ["c", "d"], "url": [urls[0], "ftp://e/x.jpg"]}), bad
    )
    with pytest.raises(InvalidArgument) as info:
        read_items(bad)
    assert info.value.field == "url" and "http or https" in info.value.expected
    assert "row 2 of bad.parquet" in info.value.expected
