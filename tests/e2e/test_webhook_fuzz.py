"""Whatever a client sends, the answer is never a 5xx and nothing is appended."""

from __future__ import annotations

import json
from typing import TypedDict
from uuid import uuid4

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.e2e.conftest import Api
from tests.e2e.webhook_helpers import (
    CloudTenant,
    SecretTenant,
    cloud_tenant,
    cloud_text,
    evolution_tenant,
    sign,
    zapi_tenant,
)

pytestmark = pytest.mark.e2e

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)
header_text = st.text(
    alphabet=st.characters(min_codepoint=33, max_codepoint=126), min_size=0, max_size=80
)


class Tenants(TypedDict):
    cloud: CloudTenant
    evolution: SecretTenant
    zapi: SecretTenant


@pytest.fixture(scope="module")
def tenants(api: Api) -> Tenants:
    return {
        "cloud": cloud_tenant(api),
        "evolution": evolution_tenant(api),
        "zapi": zapi_tenant(api),
    }


def _mutations(api: Api, tenants: Tenants) -> st.SearchStrategy[tuple[str, bytes, dict[str, str]]]:
    cloud = tenants["cloud"]
    valid = json.dumps(cloud_text(cloud.phone_number_id, "5511999990000", "oi")).encode()
    paths = st.sampled_from(
        [
            "/webhooks/whatsapp-cloud",
            f"/webhooks/evolution/{tenants['evolution'].secret}",
            f"/webhooks/zapi/{tenants['zapi'].secret}",
            f"/webhooks/zapi/{uuid4().hex}",
        ]
    )
    bodies = st.one_of(
        st.binary(max_size=300),
        json_values.map(lambda v: json.dumps(v).encode()),
        st.just(valid),
        st.builds(lambda cut: valid[:cut], st.integers(0, len(valid))),
    )
    headers = st.dictionaries(
        st.sampled_from(["X-Hub-Signature-256", "Authorization", "Content-Type", "Content-Length"]),
        header_text,
        max_size=3,
    )
    return st.tuples(paths, bodies, headers)


def test_random_requests_never_5xx_and_never_append(api: Api, tenants: Tenants) -> None:
    before = api.event_count()
    with httpx.Client(timeout=10) as client:

        @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
        @given(case=_mutations(api, tenants))
        def check(case: tuple[str, bytes, dict[str, str]]) -> None:
            path, body, headers = case
            headers = {k: v for k, v in headers.items() if k != "Content-Length"}
            r = client.post(api.url + path, content=body, headers=headers)
            assert r.status_code < 500, (path, body[:200], r.text)
            if r.status_code >= 400:
                assert r.headers["content-type"] == "application/problem+json"
            # A correctly signed, valid Cloud body cannot be produced by this strategy
            # (the signature would have to be right), so nothing may ever be appended.
            assert r.status_code != 200 or r.json().get("received", 0) == 0

        check()
    assert api.event_count() == before


def test_signed_garbage_is_still_a_client_error(api: Api, tenants: Tenants) -> None:
    secret = tenants["cloud"].app_secret
    before = api.event_count()
    with httpx.Client(timeout=10) as client:
        for body in [b"", b"null", b'{"object":"whatsapp_business_account","entry":"x"}']:
            r = client.post(
                api.url + "/webhooks/whatsapp-cloud",
                content=body,
                headers={"X-Hub-Signature-256": sign(body, secret)},
            )
            assert 400 <= r.status_code < 500, r.text
    assert api.event_count() == before
