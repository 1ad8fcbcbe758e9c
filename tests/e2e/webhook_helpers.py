"""Building signed gateway webhooks the way the gateways send them."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from dataclasses import dataclass
from typing import Any
from uuid import uuid4

import httpx

from tests.e2e.conftest import ADMIN_KEY, Api


@dataclass
class CloudTenant:
    tenant_id: str
    phone_number_id: str
    app_secret: str
    verify_token: str


@dataclass
class SecretTenant:
    tenant_id: str
    instance: str
    secret: str
    jwt_key: str | None = None


def admin(api: Api) -> dict[str, str]:
    return {"X-Admin-Key": ADMIN_KEY}


def create_tenant(api: Api, name: str | None = None) -> str:
    r = httpx.post(
        f"{api.url}/admin/tenants",
        json={"name": name or f"Loja {uuid4().hex[:8]}"},
        headers=admin(api),
    )
    assert r.status_code == 201, r.text
    return str(r.json()["tenant_id"])


def connect(api: Api, tenant_id: str, kind: str, fields: dict[str, str]) -> None:
    r = httpx.post(
        f"{api.url}/admin/tenants/{tenant_id}/channels",
        json={"kind": kind, "fields": fields},
        headers=admin(api),
    )
    assert r.status_code == 200, r.text


def cloud_tenant(
    api: Api, phone_number_id: str | None = None, api_base_url: str | None = None
) -> CloudTenant:
    t = CloudTenant(
        tenant_id=create_tenant(api),
        phone_number_id=phone_number_id or str(uuid4().int)[:15],
        app_secret=uuid4().hex,
        verify_token=uuid4().hex,
    )
    connect(
        api,
        t.tenant_id,
        "cloud",
        {
            "phone_number_id": t.phone_number_id,
            "app_secret": t.app_secret,
            "verify_token": t.verify_token,
            "access_token": "EAAG" + uuid4().hex,
            **({"api_base_url": api_base_url} if api_base_url else {}),
        },
    )
    return t


def evolution_tenant(
    api: Api, instance: str | None = None, jwt_key: str | None = None
) -> SecretTenant:
    t = SecretTenant(
        create_tenant(api), instance or f"inst-{uuid4().hex[:8]}", uuid4().hex, jwt_key
    )
    fields = {
        "instance": t.instance,
        "webhook_secret": t.secret,
        "api_url": "http://127.0.0.1:9",
        "api_key": "k" * 20,
    }
    if jwt_key:
        fields["jwt_key"] = jwt_key
    connect(api, t.tenant_id, "evolution", fields)
    return t


def zapi_tenant(api: Api, instance_id: str | None = None) -> SecretTenant:
    t = SecretTenant(create_tenant(api), instance_id or uuid4().hex.upper(), uuid4().hex)
    connect(
        api,
        t.tenant_id,
        "zapi",
        {
            "instance_id": t.instance,
            "webhook_secret": t.secret,
            "token": "t" * 20,
            "client_token": "c" * 20,
        },
    )
    return t


def sign(body: bytes, secret: str) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def cloud_text(
    phone_number_id: str, wa_id: str, text: str, wamid: str | None = None, name: str = "Maria"
) -> dict[str, Any]:
    return {
        "object": "whatsapp_business_account",
        "entry": [
            {
                "id": "102290129340398",
                "changes": [
                    {
                        "field": "messages",
                        "value": {
                            "messaging_product": "whatsapp",
                            "metadata": {
                                "display_phone_number": "5511933334444",
                                "phone_number_id": phone_number_id,
                            },
                            "contacts": [{"profile": {"name": name}, "wa_id": wa_id}],
                            "messages": [
                                {
                                    "from": wa_id,
                                    "id": wamid or f"wamid.{uuid4().hex}",
                                    "timestamp": str(int(time.time())),
                                    "type": "text",
                                    "text": {"body": text},
                                }
                            ],
                        },
                    }
                ],
            }
        ],
    }


def cloud_status(phone_number_id: str, wamid: str, recipient: str, status: str) -> dict[str, Any]:
    """A Cloud API status webhook (`sent`, `delivered`, `read`) about a message we sent."""
    item = {"id": wamid, "status": status, "timestamp": str(int(time.time()))}
    item["recipient_id"] = recipient
    return {
        "object": "whatsapp_business_account",
        "entry": [
            {
                "id": "102290129340398",
                "changes": [
                    {
                        "field": "messages",
                        "value": {
                            "messaging_product": "whatsapp",
                            "metadata": {
                                "display_phone_number": "5511933334444",
                                "phone_number_id": phone_number_id,
                            },
                            "statuses": [item],
                        },
                    }
                ],
            }
        ],
    }


def post_cloud(
    client: httpx.Client, api: Api | str, tenant: CloudTenant, payload: dict[str, Any] | bytes
) -> httpx.Response:
    """Post a Cloud API webhook signed with the tenant's app secret (to an API or a URL)."""
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    base = api if isinstance(api, str) else api.url
    return client.post(
        f"{base}/webhooks/whatsapp-cloud",
        content=body,
        headers={
            "Content-Type": "application/json",
            "X-Hub-Signature-256": sign(body, tenant.app_secret),
        },
    )
