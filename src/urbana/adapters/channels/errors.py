"""How channel adapters fail to send: one exception, and the HTTP edge that raises it."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import httpx
import orjson

from urbana.application.channels import SendFailed


class ChannelSendError(SendFailed):
    """A gateway refused or could not take a message; `retryable` says whether to try again."""


def is_retryable_status(status: int) -> bool:
    """Whether an HTTP status from a gateway means "try again later" rather than "never"."""
    # 408/425/429 are the 4xx that describe the server's state, not the request's.
    return status >= 500 or status in (408, 425, 429)


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
    retryable_body: Callable[[object], bool] | None = None,
) -> object:
    """POST `payload` as JSON and return the decoded answer; every failure is a ChannelSendError.

    `retryable_body` lets a gateway mark some 4xx answers as transient (Meta reports rate
    limits as 400 with a specific error code).
    """
    try:
        response = await client.post(url, json=payload, headers=dict(headers))
    except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
        # A misconfigured base URL will not fix itself by retrying.
        raise ChannelSendError(False, f"{gateway}: bad gateway URL: {exc}") from exc
    except httpx.TimeoutException as exc:
        raise ChannelSendError(True, f"{gateway}: request timed out") from exc
    except httpx.HTTPError as exc:
        raise ChannelSendError(True, f"{gateway}: transport error: {exc!r}") from exc
    body = _decode_or_none(response.content)
    if response.status_code >= 400:
        retryable = is_retryable_status(response.status_code) or (
            retryable_body is not None and retryable_body(body)
        )
        snippet = response.text[:300]
        raise ChannelSendError(
            retryable,
            f"{gateway}: HTTP {response.status_code}: {snippet}",
            status=response.status_code,
        )
    if body is None:
        # The gateway accepted the request, so the message may be out: retrying could
        # duplicate it.
        raise ChannelSendError(
            False, f"{gateway}: unreadable success response", status=response.status_code
        )
    return body


def _decode_or_none(content: bytes) -> object:
    try:
        return orjson.loads(content)
    except orjson.JSONDecodeError:
        return None
