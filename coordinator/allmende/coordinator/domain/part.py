"""What each use-case mixin of the `Coordinator` facade (leasing.py, submit.py) may use of
it: the parts it holds, and the volunteer checks it defines (coordinator.py)."""

from __future__ import annotations

from collections.abc import Callable

from allmende.coordinator.domain.gold import GoldPool
from allmende.coordinator.domain.trust import TrustPolicy
from allmende.coordinator.store.base import Store
from allmende.coordinator.store.records import VolunteerRecord
from allmende.protocol.models import ModelRegistry


class CoordinatorPart:
    store: Store
    policy: TrustPolicy
    gold: GoldPool
    registry: ModelRegistry
    clock: Callable[[], int]

    def _volunteer(self, volunteer_id: str) -> VolunteerRecord:  # pragma: no cover
        """A registered volunteer that may work (raises otherwise), read from the store."""
        raise NotImplementedError

    def _admitted(
        self, volunteer_id: str, record: VolunteerRecord | None
    ) -> VolunteerRecord:  # pragma: no cover
        """`record` if its volunteer may work; raises otherwise."""
        raise NotImplementedError
