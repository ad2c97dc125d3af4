"""Size limits both sides enforce, so that a client can refuse early what a server would.

Requests are also limited per method (`request_limit`), on their raw bytes before they are
parsed: a refused request then costs what its bytes cost while they are read, and nothing
after. The figures come from what honest calls carry:

- one result (SubmitResult): the largest unit a job may have (8192 rows) with the most gold
  rows mixed in (50 %), 384-dimensional fp16 rows: 12,288 x 384 x 2 bytes = 9 MiB, plus an
  envelope and signature of well under a kibibyte. A default unit (256 rows) is ~0.2 MiB.
- several results (SubmitResults): the same budget for the whole call; the volunteer cuts
  its batches at it, so a batch of default units holds up to 32 of them.
- every other volunteer, admin and researcher request: ids, counts and short texts (the
  longest: a display name, a hardware summary, a release or ban reason of a few hundred
  characters). 64 KiB is many times that.
- a CreateJob upload message: the CLI sends chunks of at most 4 MiB of text (2,000 items),
  one text being at most 256 KiB; the limit is that of a result, 10 MiB.
- a ListLeases request: a volunteer id (64 hex characters) and nothing else; 1 KiB.
- an AddModel upload message: the header (at most 64 file entries of a path and a hash) or
  one chunk of one model file, which the CLI cuts at 4 MiB (`MODEL_CHUNK_BYTES`); the limit
  is that of a result, 10 MiB. GetModelManifest and DownloadModelFile carry a name, a path
  and an offset; ListModels nothing: the small limit.

The largest of these is also grpc's own limit on what the coordinator reads
(`MAX_REQUEST_BYTES`), so a larger request is refused by grpc as it arrives, before Python
sees a byte of it. Responses (a LeaseWork of several units) may be larger, up to
`MAX_MESSAGE_BYTES`.
"""

from __future__ import annotations

# The largest gRPC message either side sends, and a volunteer accepts.
MAX_MESSAGE_BYTES = 16 * 1024 * 1024
# A single input text may be long (the model truncates it), but not unbounded.
MAX_TEXT_BYTES = 256 * 1024
# An input image file (image task kinds). A job's units are cut at 4 MiB, so a unit holds
# at least two of the largest; LAION-style shards (img2dataset, resized to a few hundred
# pixels) are tens of kilobytes an image.
MAX_IMAGE_BYTES = 2 * 1024 * 1024
# An input URL (rows a volunteer fetches; http and https only).
MAX_URL_CHARS = 4096
# Fetching a URL row (volunteers that opted in with --fetch-urls). Every volunteer draws the
# same lines, so replicas that fetched the same bytes report the same status. The body may
# be no larger than an uploaded image; one URL gets MAX_FETCH_SECONDS in all (connecting,
# redirects and reading), as img2dataset's default timeout; redirects are followed up to
# MAX_FETCH_REDIRECTS hops, each checked like the first URL.
MAX_FETCH_BYTES = MAX_IMAGE_BYTES
MAX_FETCH_SECONDS = 10.0
MAX_FETCH_REDIRECTS = 5
# An input id.
MAX_ID_CHARS = 1024
# Everything one job upload may hold (ids and texts), checked while the stream arrives.
MAX_JOB_BYTES = 2 * 1024 * 1024 * 1024
MAX_JOB_ITEMS = 10_000_000

# One SubmitResult request, and one SubmitResults request with all its results.
MAX_SUBMIT_BYTES = 10 * 1024 * 1024
# Results in one SubmitResults call.
MAX_SUBMIT_RESULTS = 32
# Any request not named in REQUEST_LIMITS.
MAX_SMALL_REQUEST_BYTES = 64 * 1024
# A ListLeases request: a volunteer id, nothing else.
MAX_LIST_LEASES_REQUEST_BYTES = 1024
# One chunk of a model file, uploaded (AddModel) or downloaded (DownloadModelFile).
MODEL_CHUNK_BYTES = 4 * 1024 * 1024
# A free-text reason a volunteer or an administrator sends (release, ban).
MAX_REASON_CHARS = 500

_VOLUNTEERS = "/allmende.v1.VolunteerService/"
REQUEST_LIMITS: dict[str, int] = {
    f"{_VOLUNTEERS}SubmitResult": MAX_SUBMIT_BYTES,
    f"{_VOLUNTEERS}SubmitResults": MAX_SUBMIT_BYTES,
    "/allmende.v1.JobService/CreateJob": MAX_SUBMIT_BYTES,
    "/allmende.v1.ModelService/AddModel": MAX_SUBMIT_BYTES,
    f"{_VOLUNTEERS}ListLeases": MAX_LIST_LEASES_REQUEST_BYTES,
}
# The largest request the coordinator reads at all.
MAX_REQUEST_BYTES = max(REQUEST_LIMITS.values())
# Repeated fields counted on the raw bytes before parsing: method -> (field name, field
# number, most entries). Entries are cheap to send (two bytes each) and dear to parse.
REQUEST_COUNTS: dict[str, tuple[str, int, int]] = {
    f"{_VOLUNTEERS}SubmitResults": ("results", 2, MAX_SUBMIT_RESULTS),
}


def request_limit(method: str) -> int:
    """The most bytes one request message of `method` (a full gRPC method name) may have."""
    return REQUEST_LIMITS.get(method, MAX_SMALL_REQUEST_BYTES)
