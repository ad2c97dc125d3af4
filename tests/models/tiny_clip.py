"""The seeded tiny CLIP now lives with the demo, which builds it too
(allmende.demo.tiny_clip); this name stays for the benchmarks that import it from here."""

from __future__ import annotations

from allmende.demo.tiny_clip import DIMS, IMAGE_SIZE, NAME, SEED, build

__all__ = ["DIMS", "IMAGE_SIZE", "NAME", "SEED", "build"]
