"""The conversation lists' JSON, written directly (`/v1/conversations`, `/v1/queue`).

Their `response_model` (`ConversationPage` in `workspace_models`) still documents them.
"""

from __future__ import annotations

from typing import Any

import orjson

from urbana.projections import queries


def conversation_page_json(page: queries.Page[queries.ConversationItem]) -> bytes:
    """`ConversationPage.of(page)` as JSON, byte for byte, without the 100 models.

    The list routes answer it as is (their `response_model` still documents it): the
    items are the query's typed rows, so there is nothing to validate, and building
    then dumping the models was a twentieth of a list's time. orjson writes UUIDs and
    datetimes as pydantic does (`Z` for a zero offset with OPT_UTC_Z); the keys are
    the models' fields in their order (tests/unit/test_workspace_json.py holds it).
    """
    return orjson.dumps(
        {"items": [conversation_json(c) for c in page.items], "next_cursor": page.next_cursor},
        option=orjson.OPT_UTC_Z,
    )


def conversation_json(c: queries.ConversationItem) -> dict[str, Any]:
    """A conversation list item as the dict `ConversationOut` documents (and is made of)."""
    last = None
    if c.last_message_at is not None:
        last = {
            "author": c.last_message_author,
            "direction": c.last_message_direction,
            "kind": c.last_message_kind,
            "preview": c.last_message_preview,
            "at": c.last_message_at,
        }
    return {
        "id": c.id,
        "status": c.status,
        "channel": c.channel,
        "contact_name": c.contact_name,
        "lead_id": c.lead_id,
        "lead_score": c.lead_score,
        "lead_stage": c.lead_stage,
        "assignee": c.assignee,
        "queue": c.queue,
        "labels": c.labels,
        "last_message": last,
        "unread": c.unread,
        "waiting_since": c.waiting_since,
        "assigned_at": c.assigned_at,
        "last_inbound_at": c.last_inbound_at,
        "handoff_reason": c.handoff_reason,
        "started_at": c.started_at,
        "closed_at": c.closed_at,
        "updated_at": c.updated_at,
        "position": c.position,
    }
