"""The error catalogue shared by coordinator and clients.

Domain code raises these; the transport layer maps each class to one gRPC status code
through a single table, and clients map status codes back. Messages name the field and
what was expected, because they are shown to people as they are.
"""

from __future__ import annotations


def shown(value: object, limit: int = 80) -> str:
    """A caller-supplied value quoted for a message, cut short: ids can be arbitrarily long,
    and an error message must stay small enough to travel in gRPC trailers."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


class AllmendeError(Exception):
    """Base of every error the system reports on purpose."""

    code = "INTERNAL"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(AllmendeError):
    """A request or input is malformed; nothing was changed."""

    code = "INVALID_ARGUMENT"

    def __init__(self, field: str, expected: str) -> None:
        super().__init__(f"{field}: expected {expected}")
        self.field = field
        self.expected = expected


class NotFound(AllmendeError):
    code = "NOT_FOUND"


class AlreadyExists(AllmendeError):
    code = "ALREADY_EXISTS"


class PermissionDenied(AllmendeError):
    code = "PERMISSION_DENIED"


class Unauthenticated(AllmendeError):
    code = "UNAUTHENTICATED"


class FailedPrecondition(AllmendeError):
    code = "FAILED_PRECONDITION"


class ResourceExhausted(AllmendeError):
    code = "RESOURCE_EXHAUSTED"


class Unavailable(AllmendeError):
    """Nothing was changed, and the same call may succeed when tried again (e.g. two
    coordinators' transactions conflicted and the database rolled one back)."""

    code = "UNAVAILABLE"


class IntegrityError(AllmendeError):
    """A signature, checksum or size does not match: the data cannot be trusted."""

    code = "DATA_LOSS"
