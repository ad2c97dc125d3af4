"""The images a researcher supplies to recompute an image dataset's rows (`dataset verify
--recompute --images PATH`): the job's inputs as given to `job create`, WebDataset `.tar`
shards (img2dataset's KEY.jpg|png|webp beside KEY.txt) and `.parquet` files with `id` and
`image` columns, read by the same readers (protocol/image_files.py). A folder stands for
the `.tar` and `.parquet` files in it (not its subfolders).

Datasets hold no image bytes, but each row names its image's sha256, so a supplied image is
a row's when its sha256 is the row's (whatever file or id it came with); rows are also
matched by id (a shard's sample key, a Parquet row's `id`), so that a supplied image with
another sha256 can be reported. Only the wanted ids' and digests' bytes are kept, so a
sample of a large dataset needs memory for the sample's images only."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from collections.abc import Set as AbstractSet
from pathlib import Path

from allmende.protocol.errors import InvalidArgument
from allmende.protocol.image_files import tar_samples

FLAG = "--images"
SUFFIXES = (".tar", ".parquet")


def image_files(paths: Sequence[Path]) -> list[Path]:
    """The files `paths` name (folders expanded), checked to exist; InvalidArgument naming
    the flag when one does not, or when a path is neither a folder nor a .tar or .parquet."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            inside = sorted(p for p in path.iterdir() if p.suffix in SUFFIXES and p.is_file())
            if not inside:
                raise InvalidArgument(FLAG, f"a folder with .tar or .parquet files, got {path}")
            found += inside
        elif not path.exists():
            raise InvalidArgument(FLAG, f"an existing .tar, .parquet or folder, got {path}")
        elif path.suffix not in SUFFIXES:
            raise InvalidArgument(
                FLAG, f"a WebDataset .tar, a .parquet with id and image, or a folder, got {path}"
            )
        else:
            found.append(path)
    return found


def read_images(
    files: Sequence[Path], wanted: AbstractSet[str], digests: AbstractSet[str] = frozenset()
) -> tuple[dict[str, bytes], dict[str, bytes]]:
    """The image bytes the files hold of each wanted id, and of each wanted sha256 (hex),
    the first file's when several do. Unreadable files and a Parquet without `id` and
    `image` columns are InvalidArgument naming the flag and the file."""
    by_id: dict[str, bytes] = {}
    by_digest: dict[str, bytes] = {}

    def take(key: str, image: bytes) -> None:
        if key in wanted:
            by_id.setdefault(key, image)
        if digests:
            digest = hashlib.sha256(image).hexdigest()
            if digest in digests:
                by_digest.setdefault(digest, image)

    for path in files:
        if path.suffix == ".tar":
            for key, _, image, _, _ in tar_samples(path, FLAG):
                take(key, image)
        else:
            for key, data in _parquet(path):
                if data is not None:
                    take(key, data)
    return by_id, by_digest


def _parquet(path: Path) -> list[tuple[str, bytes | None]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        names = pq.read_schema(path).names
        if "id" not in names or "image" not in names:
            raise InvalidArgument(
                FLAG, f"a .parquet with columns id and image, {path.name} has {names}"
            )
        table = pq.read_table(path, columns=["id", "image"])
    except (pa.ArrowException, OSError) as exc:
        raise InvalidArgument(FLAG, f"a readable .parquet file ({path.name}: {exc})") from None
    out: list[tuple[str, bytes | None]] = []
    for row, (key, image) in enumerate(
        zip(table.column("id").to_pylist(), table.column("image").to_pylist(), strict=True),
        start=1,
    ):
        if isinstance(image, dict):  # Hugging Face datasets' Image feature
            image = image.get("bytes")
        if image is not None and not isinstance(image, bytes):
            raise InvalidArgument(FLAG, f"binary image bytes (row {row} of {path.name})")
        out.append((str(key), image))
    return out
