"""Size limits both sides enforce, so that a client can refuse early what a server would."""

from __future__ import annotations

# The largest gRPC message either side sends or accepts.
MAX_MESSAGE_BYTES = 16 * 1024 * 1024
# A single input text may be long (the model truncates it), but not unbounded.
MAX_TEXT_BYTES = 256 * 1024
# An input id.
MAX_ID_CHARS = 1024
# Everything one job upload may hold (ids and texts), checked while the stream arrives.
MAX_JOB_BYTES = 2 * 1024 * 1024 * 1024
MAX_JOB_ITEMS = 10_000_000
