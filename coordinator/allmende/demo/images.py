"""`allmende demo --kind clip-filter`: the bundled photographs as image-caption pairs, the
CLIP the demo's coordinator serves, and the rows the summary shows.

The pairs are the eight scikit-image photographs of data/images/ (licences in its
README.md) with their hand-written captions, and the same photographs with the captions
shifted by one (`-shuffled` ids): mismatched pairs, which a real CLIP scores far lower, so
that the job's `keep` means something when the demo runs with the real ViT-B/32.

No package ships CLIP weights and the demo fetches nothing, so by default it builds the
seeded tiny CLIP with random weights (tiny_clip.py) and serves it; `--clip-model DIR`
serves a Hugging Face CLIP folder instead. Either way the model reaches the volunteers as
`allmende model add` sends it: checked and hashed here, uploaded to the coordinator, which
signs its manifest; each volunteer fetches it, checks every file and computes with it.
"""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

from allmende.api.client import ApiClient
from allmende.cli.common import out
from allmende.coordinator.cli.inputs import Item
from allmende.coordinator.cli.model_cmds import read_folder, upload_requests
from allmende.protocol.errors import InvalidArgument
from allmende.protocol.model_manifest import ModelManifest, new_manifest, spec_hints
from allmende.protocol.models import ModelFile
from allmende.v1 import allmende_pb2 as pb

IMAGES = Path(__file__).resolve().parent / "data" / "images"
KINDS = ("clip-filter", "embed-image")
CLIP_SEQ = 77  # CLIP's text context, where a folder does not state it
REAL = "openai/clip-vit-base-patch32"
DOWNLOAD = (
    f'huggingface-cli download {REAL} --include "*.json" "*.txt" "model.safetensors" '
    "--local-dir clip-vit-base-patch32"
)
FLAG = "--clip-model"


def pairs() -> list[Item]:
    """The photographs with their captions, then each with the next one's caption."""
    with (IMAGES / "captions.tsv").open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    images = [(IMAGES / row["file"]).read_bytes() for row in rows]
    shifted = rows[1:] + rows[:1]
    matched = [
        Item(row["id"], row["caption"], n + 1, image)
        for n, (row, image) in enumerate(zip(rows, images, strict=True))
    ]
    mismatched = [
        Item(f"{row['id']}-shuffled", other["caption"], len(rows) + n + 1, image)
        for n, (row, other, image) in enumerate(zip(rows, shifted, images, strict=True))
    ]
    return matched + mismatched


def check_clip_folder(folder: Path) -> None:
    """Refuse, naming --clip-model, a path that is not a Hugging Face CLIP model folder."""
    if not folder.is_dir():
        raise InvalidArgument(FLAG, f"a Hugging Face CLIP model folder, {folder} is not a folder")
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        config = None
    if not isinstance(config, dict) or config.get("model_type") != "clip":
        raise InvalidArgument(
            FLAG,
            f'a Hugging Face CLIP model folder (config.json with model_type "clip", as '
            f"{REAL} has); {folder} has none",
        )
    wanted = ["model.safetensors", "preprocessor_config.json"]
    if not (folder / "tokenizer.json").is_file():
        wanted += ["vocab.json", "merges.txt"]
    missing = [name for name in wanted if not (folder / name).is_file()]
    if missing:
        raise InvalidArgument(
            FLAG, f"a CLIP folder with {', '.join(missing)}; {folder} lacks them ({DOWNLOAD})"
        )


def model_folder(root: Path, clip_model: str | None) -> tuple[str, Path]:
    """The name to serve the CLIP under and its folder: the given one, checked, or the tiny
    random one built into the demo's folder."""
    if clip_model:
        folder = Path(clip_model).expanduser().resolve()
        check_clip_folder(folder)
        return "clip-vit-base-patch32", folder
    from allmende.demo.tiny_clip import NAME, build

    folder = root / "tiny-clip"
    build(folder)
    return NAME, folder


def local_manifest(name: str, folder: Path) -> tuple[ModelManifest, list[tuple[ModelFile, Path]]]:
    """Every file checked and hashed as `model add` does, before the coordinator starts;
    errors name --clip-model (the tiny CLIP passes every check)."""
    try:
        files = read_folder(folder)
        dims, seq = spec_hints(folder)
        manifest = new_manifest(
            name, list(KINDS), [f for f, _ in files], dims, seq or CLIP_SEQ, int(time.time() * 1e3)
        )
    except InvalidArgument as exc:
        raise InvalidArgument(FLAG, f"a model folder the coordinator accepts; {exc}") from None
    return manifest, files


def serve_model(
    admin: ApiClient, manifest: ModelManifest, files: list[tuple[ModelFile, Path]]
) -> str:
    """Upload the folder to the coordinator as `allmende model add` does; the served name.
    A coordinator folder reused by a later demo may serve these files already (under any
    name: the coordinator serves the same files once), or another model under this name:
    this one then gets its pin's start as a suffix."""
    models = admin.list_models()
    same = [m.name for m in models if m.pin == manifest.pin]
    if same:
        out(f"   model {same[0]} already served, pin {manifest.pin[:16]}…")
        return str(same[0])
    name = manifest.name
    if name in {m.name for m in models}:
        name = f"{name}-{manifest.pin[:12]}"
    header = pb.AddModelHeader(
        name=name,
        task_kinds=list(manifest.task_kinds),
        files=[
            pb.ModelFileInfo(path=f.path, bytes=f.bytes, sha256=f.sha256) for f in manifest.files
        ],
        dims=manifest.dims,
        max_seq_length=manifest.max_seq_length,
        weights_file=manifest.weights_file,
    )
    ordered = sorted(files, key=lambda pair: pair[0].path)
    info = admin.add_model(upload_requests(header, ordered))
    out(
        f"   model {info.name} served: {info.files} files, {info.bytes} bytes, pin {info.pin[:16]}…"
    )
    return str(info.name)


def explain(tiny: bool) -> None:
    """Say which CLIP computed, and what its numbers mean."""
    if tiny:
        out(
            "   the CLIP is a tiny one with random weights (seeded, built here): its "
            "similarity values mean nothing, but the path is real (served by the "
            "coordinator, fetched and checked by each volunteer, computed twice and compared)"
        )
        out(f"   with the real {REAL}: {DOWNLOAD}")
        out("   then: allmende demo --kind clip-filter --clip-model clip-vit-base-patch32")
    else:
        out(
            "   with the real CLIP the matched pairs should score above the rule's 0.28 and "
            "the -shuffled ones (each photograph with the next one's caption) below it"
        )


def show_rows(folder: Path, count: int = 6) -> None:
    """A few rows of the pulled dataset: photographs with their own and a shuffled caption."""
    import pyarrow.parquet as pq

    shards = [p for p in sorted(folder.rglob("*.parquet")) if "_allmende" not in p.parts]
    columns = ["id", "text", "similarity", "punsafe", "keep"]
    table = pq.ParquetDataset([str(p) for p in shards]).read(columns=columns).to_pylist()
    rows = {str(r["id"]): r for r in table}
    ids = sorted(rows, key=lambda i: (i.removesuffix("-shuffled"), i))[:count]
    out(f"  {'id':<26} {'caption':<44} {'similarity':>10} {'punsafe':>8}  keep")
    for i in ids:
        r = rows[i]
        caption = str(r["text"])
        caption = caption if len(caption) <= 44 else caption[:43] + "…"
        out(f"  {i:<26} {caption:<44} {r['similarity']:>10.4f} {r['punsafe']:>8.4f}  {r['keep']}")
