"""Write the bundled photographs from scikit-image's data into the demo's package data,
where the demo and the tests read them (coordinator/allmende/demo/data/images/README.md)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import skimage.data
from PIL import Image

ROOT = Path(__file__).resolve().parents[3]
HERE = ROOT / "coordinator" / "allmende" / "demo" / "data" / "images"


def main() -> None:
    with (HERE / "captions.tsv").open(encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    for row in rows:
        array = getattr(skimage.data, row["id"])()
        if array.dtype == bool:
            array = (~array).astype(np.uint8) * 255
        image = Image.fromarray(array)
        image.thumbnail((256, 256))
        path = HERE / row["file"]
        if path.suffix == ".jpg":
            image.convert("RGB").save(path, quality=90)
        else:
            image.save(path, optimize=True)


if __name__ == "__main__":
    main()
