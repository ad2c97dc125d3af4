"""How much GPU memory this process's torch may take (`gpu_memory_gb`): torch code, so it
lives with the tasks, the only code that imports torch."""

from __future__ import annotations


def cap_gpu_memory(device: str, gib: float) -> None:
    """Limit this process's CUDA caching allocator to `gib` on the device."""
    if not device.startswith("cuda"):
        return
    import torch

    index = int(device.partition(":")[2] or 0)
    total = torch.cuda.get_device_properties(index).total_memory
    fraction = min(1.0, gib * 1024**3 / total)
    torch.cuda.set_per_process_memory_fraction(fraction, index)
