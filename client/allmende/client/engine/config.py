"""The engine's settings, and which of them a running engine can take live."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from allmende.client.engine.identity import default_home
from allmende.client.engine.policy import Limits


@dataclass
class EngineConfig:
    coordinator: str
    fingerprint: str
    home: Path = field(default_factory=default_home)
    device: str = "auto"
    batch_size: int = 64
    threads: int | None = None
    exit_when_idle: bool = False
    display_name: str = ""
    # Give up after this many units in a row were refused (they cannot be trusted).
    max_refusals: int = 3
    # Give up when the coordinator stays unreachable this long (None: keep trying).
    give_up_after_s: float | None = None
    max_backoff_s: float = 30.0
    # GPU memory this process may take, in GiB (0: no cap); CUDA devices only.
    gpu_memory_gb: float = 0.0
    # Pause rules (policy.py); zero or empty turns a rule off.
    idle_only: bool = False
    idle_cpu_percent: float = 25.0
    pause_on_battery: bool = False
    max_gpu_temp_c: float = 0.0
    max_cpu_temp_c: float = 0.0
    schedule: str = ""
    # Fetch image rows given as URLs (opt-in; client/fetch/): asked for in each lease call.
    # With allow_private_addresses, also from loopback, private and other non-public
    # addresses (tests and LANs).
    fetch_urls: bool = False
    allow_private_addresses: bool = False
    # How often the monitor samples the hardware probe.
    sample_interval_s: float = 2.0

    def limits(self) -> Limits:
        return Limits(
            device=self.device,
            idle_only=self.idle_only,
            idle_cpu_percent=self.idle_cpu_percent,
            pause_on_battery=self.pause_on_battery,
            max_gpu_temp_c=self.max_gpu_temp_c,
            max_cpu_temp_c=self.max_cpu_temp_c,
            schedule=self.schedule,
        )


# Settings that only a new engine (connection, identity, registration) can change.
RESTART_FIELDS = ("coordinator", "fingerprint", "home", "display_name")
# Settings that change the computer itself; a computer the engine made is rebuilt for them.
COMPUTE_FIELDS = (
    "device",
    "batch_size",
    "threads",
    "gpu_memory_gb",
    "fetch_urls",
    "allow_private_addresses",
)
