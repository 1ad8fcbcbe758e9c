"""/v1 notification settings (admin): where the tenant's handoff notices go (Telegram).

The same setting as `urbana tenant telegram`. The bot token opens the tenant's bot to
whoever holds it: it is write-only (stored encrypted, never answered back; an answer
says only whether one is configured), and a new chat without a token keeps the bot
already configured.
"""

from __future__ import annotations

from fastapi import Request, Response
from pydantic import BaseModel, Field

from urbana.adapters.http.auth import Admin, v1_router
from urbana.adapters.http.common import container_of, examples, on_store, route_errors, tenant_of
from urbana.domain.tenant import Tenant

# A chat's id (groups and channels are negative) or a public channel's @username; a
# token as @BotFather gives it (`<bot id>:<secret>`).
CHAT_PATTERN = r"^(-?[0-9]{1,20}|@[A-Za-z0-9_]{5,32})$"
BOT_KEY_SHAPE = r"^[0-9]{1,20}:[A-Za-z0-9_-]{20,100}$"
ERRORS = route_errors("Only admins change the notifications")
router = v1_router(tags=["settings"], responses=ERRORS)


class TelegramIn(BaseModel):
    model_config = examples(
        {"chat_id": "-1001234567890", "bot_token": "7123456789:AAH3xJ9kq0bS2mZ4vW8yR1tL6nP5c"},
        {"chat_id": "-1009876543210"},
    )
    chat_id: str = Field(pattern=CHAT_PATTERN, description="The chat (or group) the bot posts to")
    bot_token: str | None = Field(
        default=None,
        pattern=BOT_KEY_SHAPE,
        description="The tenant's bot, from @BotFather; omitted: the one configured stays",
    )


class TelegramOut(BaseModel):
    model_config = examples(
        {"enabled": True, "chat_id": "-1001234567890", "bot_token_configured": True},
        {"enabled": False, "chat_id": None, "bot_token_configured": False},
    )
    enabled: bool = Field(description="Handoff notices are sent to the chat")
    chat_id: str | None
    bot_token_configured: bool = Field(description="A bot token is stored (it is never shown)")

    @classmethod
    def of(cls, tenant: Tenant) -> TelegramOut:
        target = tenant.telegram
        return cls(
            enabled=target is not None,
            chat_id=target.chat_id if target else None,
            bot_token_configured=target is not None,
        )


@router.get(
    "/settings/telegram",
    summary="Where handoff notices go (Telegram)",
)
async def get_telegram(principal: Admin, request: Request) -> TelegramOut:
    return TelegramOut.of(await tenant_of(request, principal.tenant_id))


@router.put(
    "/settings/telegram",
    responses={
        422: {"description": "A bad chat id or token, or no token configured yet: nothing changes"},
    },
    summary="Send handoff notices to a Telegram chat",
)
async def put_telegram(body: TelegramIn, principal: Admin, request: Request) -> TelegramOut:
    """A notice per handoff goes to the chat, through the tenant's bot."""
    app = container_of(request).store.app

    def work() -> TelegramOut:
        app.configure_telegram(principal.tenant_id, chat_id=body.chat_id, bot_token=body.bot_token)
        return TelegramOut.of(app.get(Tenant, principal.tenant_id))

    return await on_store(request, work)


@router.delete(
    "/settings/telegram",
    status_code=204,
    summary="Stop sending handoff notices (the token is forgotten)",
)
async def delete_telegram(principal: Admin, request: Request) -> Response:
    app = container_of(request).store.app

    def work() -> None:
        if app.get(Tenant, principal.tenant_id).telegram is not None:  # already off: no event
            app.configure_telegram(principal.tenant_id, chat_id=None)

    await on_store(request, work)
    return Response(status_code=204)
