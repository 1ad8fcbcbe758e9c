"""Our own faults are 503 with Retry-After, write nothing partial, and heal by themselves."""

from __future__ import annotations

import os
import time
from pathlib import Path
from uuid import UUID, uuid4

import httpx
import pytest

from tests.e2e.conftest import start_api, stop_api
from tests.e2e.webhook_helpers import cloud_tenant, cloud_text, post_cloud
from urbana.adapters.embedded import EmbeddedStack, ServiceUrls
from urbana.domain.conversation import Conversation

pytestmark = pytest.mark.e2e


def test_store_down_is_503_then_accepts_again_after_restart(
    services: ServiceUrls, tmp_path: Path
) -> None:
    stack = EmbeddedStack(tmp_path / "pg", kafka_bootstrap=services.kafka, redis_url=services.redis)
    urls = stack.start()
    api = start_api(urls, f"outage_{uuid4().hex[:8]}", os.urandom(32), database_url=urls.postgres)
    try:
        t = cloud_tenant(api)
        wa_id = f"55119{uuid4().int % 10**8:08d}"
        with httpx.Client(timeout=15) as client:
            assert (
                post_cloud(client, api, t, cloud_text(t.phone_number_id, wa_id, "um")).status_code
                == 200
            )
            before = api.event_count()
            api.store.close()
            stack.stop()
            down = post_cloud(client, api, t, cloud_text(t.phone_number_id, wa_id, "dois"))
            assert down.status_code == 503, down.text
            assert down.headers["retry-after"]
            assert down.headers["content-type"] == "application/problem+json"
            stack.start()
            retried = cloud_text(t.phone_number_id, wa_id, "três", wamid=f"wamid.{uuid4().hex}")
            deadline = time.monotonic() + 30
            while True:  # the pool reconnects on its own; no operator action
                r = post_cloud(client, api, t, retried)
                if r.status_code == 200 or time.monotonic() > deadline:
                    break
                assert r.status_code == 503
                time.sleep(0.5)
            assert r.status_code == 200, r.text
        from urbana.adapters.postgres.store import open_store

        api.store = open_store(
            urls.postgres, _key(api), schema=api.settings.database_schema, pool_size=1
        )
        conv = api.store.app.get_conversation(
            Conversation.create_id(UUID(t.tenant_id), "cloud", wa_id)
        )
        texts = [h["text"] for h in conv.history if h["role"] == "lead"]
        assert texts == ["um", "três"]  # the 503'd one left nothing behind
        assert api.event_count() > before
    finally:
        stop_api(api)
        stack.stop()


def _key(api: object) -> bytes:
    import base64

    value = api.settings.master_key.get_secret_value()  # type: ignore[attr-defined]
    return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
