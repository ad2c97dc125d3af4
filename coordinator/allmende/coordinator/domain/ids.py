"""Ids as people type them: a whole id or an unambiguous prefix of one.

Every admin action and `job status` take a full id or an unambiguous prefix of one (at
least `MIN_PREFIX` characters; for jobs, not counting the `job-` every job id starts with,
which may be left out), so the CLI and `coordinator top` resolve ids the same way and a slip
of the keyboard cannot ban or cancel something by a one-character prefix.
"""

from __future__ import annotations

from allmende.coordinator.store.base import Store
from allmende.coordinator.store.lookup_sql import IdKind
from allmende.protocol.errors import InvalidArgument, NotFound, shown

# The shortest id prefix an action accepts: 6 hex digits are 16.7 million ids, so a prefix
# that long names one thing on any real coordinator, and a shorter one is likely a slip.
MIN_PREFIX = 6
# How many matches an ambiguous prefix's error lists.
SHOWN_MATCHES = 8
JOB_TAG = "job-"
# Longer than any id the coordinator makes (volunteer ids are 64 hex digits, job ids far
# shorter): anything longer is no id, and is refused before it reaches a LIKE pattern.
MAX_ID_CHARS = 128


def resolve_id(store: Store, kind: IdKind, given: str) -> str:
    """The one id of `kind` that `given` is, or is an unambiguous prefix of.

    InvalidArgument for a prefix that is too short or matches several ids (the message
    lists what it matched); NotFound when nothing matches."""
    field = f"{kind}_id"
    if not given:
        listing = "job list" if kind == "job" else "volunteers list"
        raise InvalidArgument(field, f"a {kind} id (see `allmende {listing}`)")
    if len(given) > MAX_ID_CHARS:
        raise InvalidArgument(field, f"at most {MAX_ID_CHARS} characters, got {len(given)}")
    if store.ids_with_prefix(kind, given, 1) == [given]:
        return given  # a whole id: no length rule for ids the store itself holds
    significant = given.removeprefix(JOB_TAG) if kind == "job" else given
    prefixes = [given]
    if kind == "job" and not given.startswith(JOB_TAG):
        prefixes.append(JOB_TAG + given)  # `job pause 4f2a9c` means job-4f2a9c...
    matches = sorted(
        {m for p in prefixes for m in store.ids_with_prefix(kind, p, SHOWN_MATCHES + 1)}
    )
    if len(significant) < MIN_PREFIX:
        extra = "" if kind == "volunteer" else f" after {JOB_TAG!r}"
        raise InvalidArgument(
            field,
            f"at least {MIN_PREFIX} characters of the id{extra}, got {shown(given)}"
            + (f", which matches {_listed(kind, matches)}" if matches else ""),
        )
    if not matches:
        raise NotFound(f"{kind} {shown(given)} does not exist")
    if len(matches) > 1:
        raise InvalidArgument(
            field, f"a prefix of one {kind}; {shown(given)} matches {_listed(kind, matches)}"
        )
    return matches[0]


def find_id(store: Store, kind: IdKind, given: str) -> str:
    """`resolve_id` for reading: an id nothing starts with is NotFound whatever its length
    (a status query for a mistyped id says it does not exist, not that it is short)."""
    if given and len(given) <= MAX_ID_CHARS:
        prefixes = [given] + ([JOB_TAG + given] if kind == "job" else [])
        if not any(store.ids_with_prefix(kind, p, 1) for p in prefixes):
            raise NotFound(f"{kind} {shown(given)} does not exist")
    return resolve_id(store, kind, given)


def _listed(kind: IdKind, matches: list[str]) -> str:
    """'2 volunteers: 1a2b3c4d5e6f7a8b…, 1f0e…' for an error message; at most a few."""
    width = 16 if kind == "volunteer" else 24
    shown_ids = [m if len(m) <= width else m[:width] + "…" for m in matches[:SHOWN_MATCHES]]
    more = len(matches) > SHOWN_MATCHES
    count = f"more than {SHOWN_MATCHES}" if more else str(len(matches))
    noun = kind if len(matches) == 1 else f"{kind}s"
    return f"{count} {noun}: {', '.join(shown_ids)}" + (", …" if more else "")
