"""Reading image-text job inputs: WebDataset `.tar` shards as img2dataset writes them, and
the image columns of a `.parquet` file. Shared by `job create` (the coordinator's CLI) and
`dataset verify --recompute --images` (the researcher's), which reads the same files back.

A shard holds samples as files sharing a key (the member's path up to the first dot of its
name): `KEY.jpg|jpeg|png|webp` the image, `KEY.txt` the caption, optionally `KEY.json`
(img2dataset's metadata: a JSON object whose "url", when a string, is where the image came
from: recorded in the dataset's `url` column, never fetched; a JSON that does not parse, or
a "url" that is not a string or not an http(s) URL, is refused naming the sample; a missing
or null "url" is none). The sample's id is its key. A Parquet file
has `id`, `text` and either `image` (the file's bytes, or a Hugging Face `Image` struct with
`bytes`) or `url` per row, never both.

Everything is checked before anything is sent; errors name the file and the sample. Sizes
are checked before a member is read, so a shard cannot make the CLI read a huge member.
"""

from __future__ import annotations

import json
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from allmende.protocol.errors import InvalidArgument
from allmende.protocol.input_urls import url_problem
from allmende.protocol.limits import MAX_IMAGE_BYTES, MAX_TEXT_BYTES, MAX_URL_CHARS

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")
# img2dataset's per-sample metadata: a few hundred bytes.
MAX_JSON_BYTES = 64 * 1024


def tar_samples(path: Path, flag: str = "--input") -> Iterator[tuple[str, str, bytes, int, str]]:
    """(key, caption, image, sample number from 1, source URL or '') of a WebDataset
    shard, in shard order. `flag`: the option that named the file, for errors."""
    samples: dict[str, dict[str, bytes]] = {}
    order: list[str] = []
    try:
        with tarfile.open(path, mode="r:*") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                folder, _, name = member.name.rpartition("/")
                stem, dot, extension = name.partition(".")
                if not dot or name.startswith("."):
                    continue  # not part of a sample (e.g. a stray README)
                key = f"{folder}/{stem}" if folder else stem
                extension = extension.lower()
                limit = _limit(extension)
                if limit == 0:
                    continue  # a field of the sample this reader does not use
                where = f"sample {key!r} of {path.name}"
                if member.size > limit:
                    raise InvalidArgument(
                        "image" if extension in IMAGE_EXTENSIONS else "text",
                        f"at most {limit} bytes in {member.name}, got {member.size} ({where})",
                    )
                handle = tar.extractfile(member)
                data = handle.read() if handle is not None else b""
                fields = samples.setdefault(key, {})
                if not fields:
                    order.append(key)
                slot = "image" if extension in IMAGE_EXTENSIONS else extension
                if slot in fields:
                    raise InvalidArgument("image", f"one image per sample, two in {where}")
                fields[slot] = data
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise InvalidArgument(flag, f"a readable tar file ({path.name}: {exc})") from None
    for number, key in enumerate(order, start=1):
        fields = samples[key]
        where = f"sample {key!r} of {path.name}"
        if "image" not in fields:
            raise InvalidArgument(
                "image", f"an image ({', '.join('.' + e for e in IMAGE_EXTENSIONS)}) ({where})"
            )
        if "txt" not in fields:
            raise InvalidArgument("text", f"a caption file {key}.txt beside the image ({where})")
        try:
            caption = fields["txt"].decode("utf-8").strip()
        except UnicodeDecodeError:
            raise InvalidArgument("text", f"a UTF-8 caption ({where})") from None
        yield key, caption, fields["image"], number, _source_url(fields.get("json"), where)


def _source_url(data: bytes | None, where: str) -> str:
    """The "url" of img2dataset's KEY.json ('' without one)."""
    if data is None:
        return ""
    try:
        meta = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidArgument(
            "json", f"a JSON object in the sample's .json ({where}: {exc})"
        ) from None
    if not isinstance(meta, dict):
        raise InvalidArgument("json", f"a JSON object in the sample's .json ({where})")
    url = meta.get("url")
    if url is None or url == "":
        return ""
    if not isinstance(url, str):
        raise InvalidArgument("url", f"a string in the sample's .json ({where})")
    problem = url_problem(url)
    if problem:
        raise InvalidArgument("url", f"{problem} in the sample's .json ({where})")
    return url


def _limit(extension: str) -> int:
    if extension in IMAGE_EXTENSIONS:
        return MAX_IMAGE_BYTES
    if extension == "txt":
        return MAX_TEXT_BYTES
    if extension == "json":
        return MAX_JSON_BYTES
    return 0


def parquet_images(table: Any, name: str) -> list[tuple[bytes | None, str]]:
    """Each row's (image, url) from a table with an `image` and/or a `url` column: exactly
    one of them per row."""
    columns = table.column_names
    images = table.column("image").to_pylist() if "image" in columns else [None] * table.num_rows
    urls = table.column("url").to_pylist() if "url" in columns else [None] * table.num_rows
    out: list[tuple[bytes | None, str]] = []
    for row, (image, url) in enumerate(zip(images, urls, strict=True), start=1):
        where = f"row {row} of {name}"
        if isinstance(image, dict):  # Hugging Face datasets' Image feature
            image = image.get("bytes")
        if image is not None and not isinstance(image, bytes):
            raise InvalidArgument("image", f"binary image bytes ({where})")
        if url is not None and not isinstance(url, str):
            raise InvalidArgument("url", f"a string ({where})")
        url = url or ""
        if image is not None and url:
            raise InvalidArgument("image", f"an image or a url, not both ({where})")
        if image is None and not url:
            raise InvalidArgument("image", f"an image or a url ({where})")
        if image is not None and len(image) > MAX_IMAGE_BYTES:
            raise InvalidArgument(
                "image", f"at most {MAX_IMAGE_BYTES} bytes, got {len(image)} ({where})"
            )
        if len(url) > MAX_URL_CHARS:
            raise InvalidArgument("url", f"at most {MAX_URL_CHARS} characters ({where})")
        problem = url_problem(url) if url else ""
        if problem:
            raise InvalidArgument("url", f"{problem} ({where})")
        out.append((image, url))
    return out
