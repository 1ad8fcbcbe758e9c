"""The unit of work retries write conflicts; one that never clears is `Unavailable`, not a crash."""

from __future__ import annotations

from collections.abc import Iterable
from uuid import UUID

import pytest
from eventsourcing.persistence import IntegrityError
from tests.fakes import InMemoryCipher

from urbana.application.app import UrbanaApp
from urbana.application.unit_of_work import CONFLICT_RETRIES
from urbana.domain.tenant import Tenant
from urbana.errors import Unavailable


class RivalWriter(InMemoryCipher):
    """Just before each save, another writer changes the same tenant: every save conflicts."""

    def __init__(self) -> None:
        super().__init__()
        self.app: UrbanaApp | None = None
        self.tenant_id: UUID | None = None
        self.rival_writes = 0
        self._writing = False

    def prepare(self, subject_ids: Iterable[UUID]) -> None:
        super().prepare(subject_ids)
        if self.app is None or self.tenant_id is None or self._writing:
            return
        self._writing = True
        try:
            self.app.change_prompt(self.tenant_id, f"rival {self.rival_writes}")
            self.rival_writes += 1
        finally:
            self._writing = False


def test_a_stream_that_keeps_changing_under_a_command_is_unavailable() -> None:
    rival = RivalWriter()
    app = UrbanaApp(env={"PERSISTENCE_MODULE": "eventsourcing.popo"}, cipher=rival)
    tenant_id, _ = app.register_tenant("Loja disputada")
    rival.app, rival.tenant_id = app, tenant_id
    with pytest.raises(Unavailable, match="write conflicts") as caught:
        app.change_prompt(tenant_id, "o nosso")
    assert isinstance(caught.value.__cause__, IntegrityError)
    assert rival.rival_writes == CONFLICT_RETRIES
    assert app.get(Tenant, tenant_id).settings.prompt == f"rival {CONFLICT_RETRIES - 1}"
