"""How channel adapters fail to send: one exception, and the HTTP edge that raises it.

Every failure says whether it is worth retrying and whether the message may have gone
out anyway: a request that never reached the gateway (connection refused, connect or
pool timeout) is known not to be sent; one that timed out or broke after it was
written may have been taken, so repeating it could deliver the message twice.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import httpx
import orjson

from urbana.application.channels import SendFailed
from urbana.domain.channels import ChannelKind

# Transport errors raised before the request reached the gateway.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
MAX_RETRY_AFTER_S = 3600.0


class ChannelSendError(SendFailed):
    """A gateway refused or could not take a message; `retryable` says whether to try again."""


@dataclass(frozen=True, slots=True)
class BodyVerdict:
    """What a gateway's error body says beyond its HTTP status."""

    code: str | None = None
    retryable: bool | None = None  # None: decide by the HTTP status
    channel_wide: bool = True


def is_retryable_status(status: int) -> bool:
    """Whether an HTTP status from a gateway means "try again later" rather than "never"."""
    # 408/425/429 are the 4xx that describe the server's state, not the request's.
    return status >= 500 or status in (408, 425, 429)


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """`Retry-After` as seconds from now: delta-seconds or an HTTP date (RFC 9110)."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    if text.isdigit():
        return min(float(text), MAX_RETRY_AFTER_S)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    seconds = when.timestamp() - (time.time() if now is None else now)
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_S)


def require_config(config: Mapping[str, str], *keys: str) -> None:
    """Raise a non-retryable ChannelSendError when a channel configuration lacks any of `keys`."""
    absent = [key for key in keys if not config.get(key)]
    if absent:
        raise ChannelSendError(False, f"channel configuration lacks {', '.join(absent)}")


async def post_json(
    client: httpx.AsyncClient,
    url: str,
    *,
    gateway: str,
    headers: Mapping[str, str],
    payload: Mapping[str, object],
    timeout_s: float | None = None,
    judge_body: Callable[[object], BodyVerdict] | None = None,
) -> object:
    """POST `payload` as JSON and return the decoded answer; every failure is a ChannelSendError.

    `judge_body` lets a gateway read its error body (Meta reports rate limits as 400
    with a specific error code, and some of them concern one recipient only).
    """
    try:
        response = await client.post(
            url,
            json=payload,
            headers=dict(headers),
            timeout=httpx.USE_CLIENT_DEFAULT if timeout_s is None else timeout_s,
        )
    except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
        # A misconfigured base URL will not fix itself by retrying.
        raise ChannelSendError(False, f"{gateway}: bad gateway URL: {exc}") from exc
    except _NOT_SENT as exc:
        raise ChannelSendError(True, f"{gateway}: gateway unreachable: {exc!r}") from exc
    except httpx.TimeoutException as exc:
        raise ChannelSendError(True, f"{gateway}: request timed out", outcome_unknown=True) from exc
    except httpx.HTTPError as exc:
        raise ChannelSendError(
            True, f"{gateway}: transport error: {exc!r}", outcome_unknown=True
        ) from exc
    body = _decode_or_none(response.content)
    if response.status_code >= 400:
        verdict = judge_body(body) if judge_body is not None else BodyVerdict()
        retryable = (
            verdict.retryable
            if verdict.retryable is not None
            else is_retryable_status(response.status_code)
        )
        snippet = response.text[:300]
        raise ChannelSendError(
            retryable,
            f"{gateway}: HTTP {response.status_code}: {snippet}",
            status=response.status_code,
            code=verdict.code,
            retry_after=retry_after_seconds(response.headers.get("retry-after")),
            # A gateway timing out upstream may have passed the message on.
            outcome_unknown=response.status_code == 504,
            channel_wide=verdict.channel_wide,
        )
    if body is None:
        # The gateway accepted the request, so the message may be out.
        raise unknown_outcome(f"{gateway}: unreadable success response", response.status_code)
    return body


def unknown_outcome(reason: str, status: int | None = None) -> ChannelSendError:
    """A 2xx the adapter cannot read: the message may be out, but we do not know its id."""
    return ChannelSendError(True, reason, status=status, outcome_unknown=True)


def _decode_or_none(content: bytes) -> object:
    try:
        return orjson.loads(content)
    except orjson.JSONDecodeError:
        return None


class HttpGateway:
    """What every gateway adapter holds to send: the process's shared HTTP client (its
    connection pool) and the timeout of one send (None: the client's own)."""

    kind: ChannelKind

    def __init__(self, client: httpx.AsyncClient, *, timeout: float | None = None) -> None:
        self._client = client
        self._timeout = timeout

    async def _post(
        self,
        url: str,
        *,
        headers: Mapping[str, str],
        payload: Mapping[str, object],
        judge_body: Callable[[object], BodyVerdict] | None = None,
    ) -> object:
        return await post_json(
            self._client,
            url,
            gateway=self.kind,
            headers=headers,
            payload=payload,
            timeout_s=self._timeout,
            judge_body=judge_body,
        )
