"""Gateways' message ids as the store records them: keyed digests, never in clear.

A Cloud API wamid is base64 of a struct that starts with the contact's phone
(`wamid.HBgNNTUxMTk...` decodes to `5511...`). Recorded as sent, it would sit in clear
in the event store, Kafka, the read models and Redis, where erasing the subject's key
cannot reach it. Its HMAC under the installation's digest key (`SubjectCipher.digest`)
is deterministic, so a redelivered webhook, a delivery status or a quote still finds the
message, and without that key it names no one (see docs/architecture.md, Privacy).
"""

from __future__ import annotations

from uuid import UUID

from urbana.application.ports import SubjectCipher


def provider_key(cipher: SubjectCipher, tenant_id: UUID, channel: str, provider_id: str) -> str:
    """The digest recorded for a provider message id of one tenant's channel."""
    return cipher.digest(f"message:{tenant_id}:{channel}", provider_id)
