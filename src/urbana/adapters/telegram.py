"""The `Messenger` port on the Telegram Bot API: `sendMessage` with an inline URL button.

    POST {base_url}/bot{token}/sendMessage
    {"chat_id": ..., "text": ..., "reply_markup": {"inline_keyboard": [[{"text", "url"}]]}}
    -> {"ok": true, "result": {"message_id": ...}}
    -> {"ok": false, "error_code": 429, "description": ..., "parameters": {"retry_after": 5}}

The base URL is configurable (`URBANA_TELEGRAM_API_URL`), so tests point it at a local
server speaking this API. Faults are told apart by whether the message may have
reached the chat: no connection, a 429 or a 5xx surely did not deliver it (retryable);
any other 4xx is a refusal for good (bad token, unknown chat, bot blocked); a request
that went out and got no answer may have (`NotifyOutcomeUnknown`), so it is not sent
again. The bot token is part of the URL: nothing here logs a URL or an httpx message.
"""

from __future__ import annotations

from typing import Any

import httpx

from urbana.application.notifications import NotifyFailed, NotifyOutcomeUnknown
from urbana.domain.tenant import TelegramTarget

DEFAULT_API_URL = "https://api.telegram.org"


class TelegramBot:
    """Sends handoff notices through each tenant's own bot."""

    def __init__(
        self, http: httpx.AsyncClient, *, base_url: str = DEFAULT_API_URL, timeout: float = 10.0
    ) -> None:
        self._http = http
        self._base_url = base_url.rstrip("/")
        self._timeout = timeout

    async def send(
        self, target: TelegramTarget, text: str, button: str | None, url: str | None
    ) -> str:
        """Send one message (with a link button when both are given); Telegram's message id."""
        body: dict[str, Any] = {"chat_id": target.chat_id, "text": text}
        if button and url:
            body["reply_markup"] = {"inline_keyboard": [[{"text": button, "url": url}]]}
        endpoint = f"{self._base_url}/bot{target.bot_token}/sendMessage"
        try:
            response = await self._http.post(endpoint, json=body, timeout=self._timeout)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            raise NotifyFailed(
                f"telegram unreachable ({type(exc).__name__})", retryable=True
            ) from None
        except httpx.TransportError as exc:  # sent, but no (whole) answer came back
            raise NotifyOutcomeUnknown(f"no answer from telegram ({type(exc).__name__})") from None
        return _message_id(response)


def _message_id(response: httpx.Response) -> str:
    try:
        doc: Any = response.json()
    except ValueError:
        doc = {}
    if not isinstance(doc, dict):
        doc = {}
    status = response.status_code
    if status == 200 and doc.get("ok") is True:
        result = doc.get("result")
        if isinstance(result, dict) and "message_id" in result:
            return str(result["message_id"])
        raise NotifyOutcomeUnknown("telegram answered ok without a message id")
    description = str(doc.get("description") or response.reason_phrase)[:200]
    code = doc.get("error_code", status)
    if status == 429 or status >= 500:
        parameters = doc.get("parameters")
        retry_after = parameters.get("retry_after") if isinstance(parameters, dict) else None
        raise NotifyFailed(
            f"telegram {code}: {description}",
            retryable=True,
            retry_after=float(retry_after) if isinstance(retry_after, int | float) else None,
        )
    refused_button = "BUTTON_URL_INVALID" in description or "button URL" in description
    raise NotifyFailed(
        f"telegram {code}: {description}", retryable=False, button_refused=refused_button
    )
