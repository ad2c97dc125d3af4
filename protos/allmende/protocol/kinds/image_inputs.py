"""What the image task kinds (`clip-filter`, `embed-image`) share: the per-row status a
volunteer reports for an image it could not use, the limits it decodes within, the columns
every image result has, and the credit an image earns.

An image that cannot be used is not a failed unit: its row says why (`status`), with the
image's sha256 always and its size when the file's header gives one, and no model output
(all-zero embeddings, zero scores). Replicas agree on statuses like on any other column, so
a quorum decides that an image is broken just as it decides an embedding.
"""

from __future__ import annotations

from collections.abc import Sequence

from allmende.protocol.kinds.base import estimate_tokens
from allmende.protocol.kinds.exact_columns import HashColumn, IntColumn, StatusColumn

# What became of a row's image, in this order (the wire carries the index; new labels go at
# the end): ok: decoded and computed; undecodable: not an image PIL reads, or truncated;
# too-large: more pixels than MAX_IMAGE_PIXELS by its header (a decompression bomb is one),
# never decoded, or (a URL row) more than MAX_FETCH_BYTES sent; empty: zero bytes.
# URL rows only (fetched by the volunteer, see protocol/limits.py): unreachable: the fetch
# failed (name lookup, connection, TLS, an HTTP status other than 200, more than
# MAX_FETCH_REDIRECTS redirects, or over MAX_FETCH_SECONDS); wrong-type: the server said
# the body is not an image (Content-Type not image/*); private-address: the URL or a
# redirect led to a loopback, private, link-local or otherwise non-public address, which a
# volunteer does not fetch unless it allows them; unstable: set by the coordinator, never
# by a volunteer: the replicas fetched different bytes (or some fetched and some could
# not), which is nobody's fault and not a disagreement; opted-out: the server asked, in an
# X-Robots-Tag header, that the image not be used for AI or indexed (noai, noimageai,
# noindex, noimageindex, as img2dataset honours them by default), so it was not read.
STATUS_LABELS = (
    "ok",
    "undecodable",
    "too-large",
    "empty",
    "unreachable",
    "wrong-type",
    "private-address",
    "unstable",
    "opted-out",
)
(
    OK,
    UNDECODABLE,
    TOO_LARGE,
    EMPTY,
    UNREACHABLE,
    WRONG_TYPE,
    PRIVATE_ADDRESS,
    UNSTABLE,
    OPTED_OUT,
) = range(len(STATUS_LABELS))
# Pillow's own decompression-bomb warning threshold (Image.MAX_IMAGE_PIXELS): a 9459 x 9459
# image, far beyond what any CLIP-filtering pipeline resizes from. Fixed here rather than
# read from Pillow so every volunteer draws the same line whatever its Pillow says.
MAX_IMAGE_PIXELS = 89_478_485

STATUS = StatusColumn(
    "status",
    "what became of the row's image: ok, undecodable (not an image, or truncated), "
    f"too-large (over {MAX_IMAGE_PIXELS} pixels by its header, never decoded, or a URL's "
    "body over the fetch limit), empty (0 bytes); for rows fetched from a URL also "
    "unreachable, wrong-type (not served as an image), private-address (not fetched: a "
    "non-public address), opted-out (the server's X-Robots-Tag said noai, noimageai, "
    "noindex or noimageindex) and unstable (the replicas fetched different bytes)",
    labels=STATUS_LABELS,
    fetched_only=("unreachable", "wrong-type", "private-address", "opted-out"),
    unstable="unstable",
)
WIDTH = IntColumn(
    "width", "the image's width in pixels (0 when undecodable or a URL row not fetched)"
)
HEIGHT = IntColumn(
    "height", "the image's height in pixels (0 when undecodable or a URL row not fetched)"
)
# A URL row whose body was not fetched whole (unreachable, wrong-type, too-large by its
# bytes, private-address, opted-out) has width and height 0 and an all-zero image_sha256; a body
# fetched whole has its own sha256 and is decoded like an uploaded file.
IMAGE_SHA256 = HashColumn(
    "image_sha256",
    "sha256 of the image file's bytes, hex (all zeros for a URL row whose body was not "
    "fetched whole)",
    size=32,
    of_input="image",
)

# Credit for one image: what a ViT-B/32 forward pass costs next to text, in the
# coordinator's credit unit (estimated tokens). A 224 x 224 image is 49 patches + [CLS]
# through 12 layers of width 768, about a 50-token text through a 12-layer text tower;
# decoding and resizing come on top, so an image counts as 64 tokens.
IMAGE_CREDIT = 64


def image_credit(texts: Sequence[str]) -> int:
    """Credit claimed for rows of an image kind: IMAGE_CREDIT per row, plus the estimated
    tokens of captions the kind also embeds ('' for kinds without text)."""
    return sum(IMAGE_CREDIT + (estimate_tokens(t) + 2 if t else 0) for t in texts)
