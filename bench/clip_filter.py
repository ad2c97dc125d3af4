"""clip-filter throughput: images/s through a coordinator and one volunteer, divided by the
same CLIPModel called directly on the same images already decoded; and where the time goes.

    python bench/clip_filter.py [--n 512] [--unit-size 64] [--batch-size 32] [--model-dir DIR]

`--model-dir`: a CLIP folder in Hugging Face layout (e.g. openai/clip-vit-base-patch32,
registered for this run); without it a tiny random CLIP is built (tests/models/tiny_clip.py),
whose model time is so small that decoding dominates: the ratio then says how much the
pipeline costs around a model, not what a real model achieves. The images are the bundled
photographs (tests/data/images), each re-encoded at a few JPEG qualities and sizes so that
no two rows are identical (identical ones would be computed once).

The coordinator runs in this process (`serve(..., registry=...)`: a locally registered
model cannot be named to `coordinator serve` yet), the volunteer is the real engine. Both
share the machine's cores. Reported: the direct baseline (CLIP's image and text towers on
pre-decoded pixels, in batches), the end-to-end rate, decode + resize per image (one thread
and the pool), Open-NSFW per image, and wire bytes per row (unit in, result out). Goal on
CPU with the real ViT-B/32: >= 0.9 of the CLIP-only baseline.
"""

from __future__ import annotations

import argparse
import io
import logging
import sys
import tempfile
import time
from pathlib import Path

from corpus import ROOT

GOAL = 0.9


def images(n: int) -> list[tuple[str, bytes, str]]:
    from PIL import Image

    sys.path.insert(0, str(ROOT))
    from tests.conftest import read_images

    base = read_images()
    out = []
    for k in range(n):
        item_id, data, caption = base[k % len(base)]
        image = Image.open(io.BytesIO(data)).convert("RGB")
        step = k // len(base)
        size = (image.width - step % 32, image.height - step % 32)
        buffer = io.BytesIO()
        image.resize(size).save(buffer, format="JPEG", quality=70 + step % 25)
        out.append((f"{item_id}-{k}", buffer.getvalue(), caption))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=512)
    parser.add_argument("--unit-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--model-dir", type=Path)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    import hashlib

    import numpy as np

    from allmende.api.client import ApiClient
    from allmende.client.engine import EngineConfig, VolunteerEngine
    from allmende.client.tasks.clip_filter import ClipFilter
    from allmende.client.tasks.computer import TaskComputer
    from allmende.client.tasks.images import decode
    from allmende.coordinator.app import serve
    from allmende.coordinator.home import CoordinatorHome
    from allmende.protocol.models import ModelRegistry, ModelSpec
    from allmende.v1 import allmende_pb2 as pb

    rows = images(args.n)
    with tempfile.TemporaryDirectory() as tmp:
        if args.model_dir:
            folder = args.model_dir.resolve()
            digest = hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()
            import json

            dims = json.loads((folder / "config.json").read_text())["projection_dim"]
            spec = ModelSpec("clip", dims, digest, 77, ("clip-filter", "embed-image"), str(folder))
        else:
            from tests.models.tiny_clip import build

            spec = build(Path(tmp) / "tiny-clip")
        registry = ModelRegistry(extra=(spec,))
        computer = TaskComputer(registry, "cpu", args.batch_size)
        filt = computer.loaded("clip-filter", spec.name)
        assert isinstance(filt, ClipFilter)
        clip = filt.clip

        # Where the time goes, per image.
        data = [r[1] for r in rows]
        started = time.perf_counter()
        decoded = [decode(d, [clip.pixels]) for d in data]
        decode_one = (time.perf_counter() - started) / len(rows)
        started = time.perf_counter()
        list(filt.pool.batches(data, args.batch_size))
        decode_pool = (time.perf_counter() - started) / len(rows)
        pixels = np.stack([d.arrays[0] for d in decoded])
        texts = [r[2] for r in rows]
        clip.embed_pixels(pixels[: args.batch_size])  # warm up
        started = time.perf_counter()
        for s in range(0, len(rows), args.batch_size):
            clip.embed_pixels(pixels[s : s + args.batch_size])
            clip.embed_texts(texts[s : s + args.batch_size])
        raw = len(rows) / (time.perf_counter() - started)
        assert filt.nsfw is not None
        nsfw_in = [filt.nsfw.preprocess(_rgb(data[k])) for k in range(min(64, len(rows)))]
        started = time.perf_counter()
        filt.nsfw.score(nsfw_in)
        nsfw = (time.perf_counter() - started) / len(nsfw_in)

        home = CoordinatorHome(Path(tmp) / "coordinator")
        home.init()
        with serve(home.root, "127.0.0.1:0", drain_s=0.2, registry=registry) as running:
            items = [
                pb.InputItem(id=i, text=caption, image=image, line=n + 1)
                for n, (i, image, caption) in enumerate(rows)
            ]
            job = pb.JobSpec(
                kind="clip-filter",
                model=spec.name,
                redundancy=1,
                unit_size=args.unit_size,
                gold_fraction=0.0,
            )
            with ApiClient(running.address, home.load_token()) as admin:
                job_id = admin.create_job(
                    [pb.CreateJobRequest(spec=job), pb.CreateJobRequest(items=items)]
                ).job_id
            config = EngineConfig(
                coordinator=running.address,
                fingerprint=running.coordinator.key.fingerprint,
                home=Path(tmp) / "volunteer",
                device="cpu",
                batch_size=args.batch_size,
                exit_when_idle=True,
            )
            engine = VolunteerEngine(config, computer=computer, registry=registry)
            started = time.perf_counter()
            if engine.run() != 0:
                raise SystemExit("volunteer failed")
            with ApiClient(running.address) as client:
                while client.get_job(job_id).state != "complete":
                    time.sleep(0.005)
            e2e = len(rows) / (time.perf_counter() - started)
            units = running.coordinator.store.dataset_units(job_id)
            unit_bytes = sum(len(u.blob) for u in units)
        # A result as it travels (the store keeps a lone replica's payload elsewhere).
        from allmende.protocol.kinds import get_kind

        sample = filt.compute(texts[: args.unit_size], None, images=data[: args.unit_size])
        shape = get_kind("clip-filter").shape(spec, "float16")
        result_bytes = len(shape.encode(sample)) / len(sample) * len(rows)

    print(
        f"{len(rows)} images ({sum(map(len, data)) / len(rows) / 1024:.1f} KiB each), "
        f"model {spec.name} ({spec.dims}-d), unit size {args.unit_size}, "
        f"batch size {args.batch_size}, cpu"
    )
    print(f"{'CLIP directly on decoded pixels + captions':<46} {raw:8.1f} images/s")
    print(f"{'coordinator + one volunteer (decode, CLIP, NSFW)':<46} {e2e:8.1f} images/s")
    print(f"  decode + resize, one thread      {decode_one * 1000:7.2f} ms/image")
    print(
        f"  decode + resize + NSFW prep, pool {decode_pool * 1000:7.2f} ms/image "
        f"({filt.pool.workers} workers)"
    )
    print(f"  CLIP (image + text)              {1000 / raw:7.2f} ms/image")
    print(f"  Open-NSFW                        {nsfw * 1000:7.2f} ms/image")
    print(
        f"  wire: {unit_bytes / len(rows):.0f} B/row to the volunteer, "
        f"{result_bytes / len(rows):.0f} B/row back"
    )
    ratio = e2e / raw
    verdict = "PASS" if ratio >= GOAL else "below goal"
    print(f"ratio end-to-end / CLIP alone = {ratio:.3f}   (goal >= {GOAL} on CPU)  {verdict}")


def _rgb(data: bytes):  # type: ignore[no-untyped-def]
    from PIL import Image

    return Image.open(io.BytesIO(data)).convert("RGB")


if __name__ == "__main__":
    main()
