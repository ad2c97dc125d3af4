"""The volunteer's connection to its coordinator: the shared API client (allmende.api) plus
the calls a volunteer signs with its key.

Failures are `RemoteError` (allmende.api.channel), which says whether retrying may help
(UNAVAILABLE) or not (everything else: a refused request stays refused). Every call has a
deadline.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from allmende.api.channel import DEFAULT_TIMEOUT_S, RemoteError, remote_call
from allmende.api.client import ApiClient
from allmende.protocol.limits import MAX_REASON_CHARS
from allmende.protocol.requests import sign_request
from allmende.protocol.signing import SigningKey
from allmende.v1 import allmende_pb2 as pb

__all__ = ["CoordinatorClient", "RemoteError"]

VOLUNTEER = "/allmende.v1.VolunteerService/"


class CoordinatorClient(ApiClient):
    """Talks to one coordinator as a volunteer (and, given the admin token, as its operator:
    every call of `ApiClient` too). The channel opens on first use: TLS when the coordinator
    offers it (the certificate is then pinned through the coordinator key, see
    protocol/tls.py), plaintext only to a loopback address or with `insecure`."""

    def __init__(
        self,
        address: str,
        admin_token: str | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        signer: SigningKey | None = None,
        insecure: bool = False,
    ) -> None:
        super().__init__(address, admin_token, timeout_s, insecure)
        # The volunteer key that signs LeaseWork, SubmitResult(s) and ReleaseWork calls.
        self.signer = signer

    def register(self, request: pb.RegisterVolunteerRequest) -> str:
        response = self._unary(self.volunteers.RegisterVolunteer, request)
        return str(response.volunteer_id)

    def _signed(self, name: str, method: Any, request: Any, timeout: float | None = None) -> Any:
        """A volunteer call, signed with `signer` (method, body hash, time, nonce)."""
        if self.signer is None:
            raise RuntimeError("volunteer calls need a signer (the volunteer's key)")
        metadata = [*self._metadata, *sign_request(self.signer, f"{VOLUNTEER}{name}", request)]
        return remote_call(
            lambda: method(request, timeout=timeout or self.timeout_s, metadata=metadata)
        )

    def lease(
        self, volunteer_id: str, max_units: int = 1, fetch_urls: bool = False
    ) -> pb.LeaseWorkResponse:
        """Up to `max_units` leases: the first in `lease`, the others in `more_leases`.
        `fetch_urls`: this volunteer fetches URL rows (it opted in)."""
        request = pb.LeaseWorkRequest(
            volunteer_id=volunteer_id,
            max_units=max_units if max_units > 1 else 0,
            fetch_urls=fetch_urls,
        )
        return self._signed("LeaseWork", self.volunteers.LeaseWork, request)

    def submit(self, envelope: bytes, signature: bytes, payload: bytes) -> pb.SubmitResultResponse:
        request = pb.SubmitResultRequest(envelope=envelope, signature=signature, payload=payload)
        return self._signed("SubmitResult", self.volunteers.SubmitResult, request)

    def submit_many(
        self, volunteer_id: str, results: Sequence[tuple[bytes, bytes, bytes]]
    ) -> pb.SubmitResultsResponse:
        """Several (envelope, signature, payload) results in one call, each answered alone."""
        request = pb.SubmitResultsRequest(
            volunteer_id=volunteer_id,
            results=[
                pb.SubmitResultRequest(envelope=e, signature=s, payload=p) for e, s, p in results
            ],
        )
        return self._signed("SubmitResults", self.volunteers.SubmitResults, request)

    def release(self, volunteer_id: str, lease_id: str, reason: str) -> None:
        request = pb.ReleaseWorkRequest(
            volunteer_id=volunteer_id, lease_id=lease_id, reason=reason[:MAX_REASON_CHARS]
        )
        self._signed("ReleaseWork", self.volunteers.ReleaseWork, request)

    def held_leases(self, volunteer_id: str) -> list[pb.Lease]:
        """The unexpired leases this volunteer holds, each with its unit as handed out."""
        request = pb.ListLeasesRequest(volunteer_id=volunteer_id)
        return list(self._signed("ListLeases", self.volunteers.ListLeases, request).leases)

    def verdicts(self, volunteer_id: str, unit_ids: Sequence[str]) -> pb.GetVerdictsResponse:
        """The final verdicts on this volunteer's results for `unit_ids` (undecided ones are
        left out), and its lifetime totals."""
        request = pb.GetVerdictsRequest(volunteer_id=volunteer_id, unit_ids=list(unit_ids))
        # Short: asking is best effort and must never hold up work or a stop.
        return self._signed("GetVerdicts", self.volunteers.GetVerdicts, request, timeout=5.0)
