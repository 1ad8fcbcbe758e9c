"""Read-model queries for the attendant API and dashboards.

Every function takes the caller's tenant and only returns that tenant's rows: it says
`WHERE tenant_id = ...` itself, and the API runs it inside `access.tenant_read`, where
row-level security would hide other tenants' rows even if it did not. Personal text is
stored sealed in the read models and decrypted here, with the `SubjectCipher` the
caller passes (in a worker thread: the cipher may read its key table). A lead whose
key was destroyed reads as `ERASED`; without a cipher, personal fields are None.

Lists are pages: `Page(items, next_cursor)`, ordered by a unique key; `next_cursor`
(None on the last page) is that key of the page's last item, base64url-encoded JSON,
opaque to clients. A cursor that does not decode raises `InvalidCursor`.
Every item carries `position`: the global position of the last event applied to it.

One module per resource (conversations, messages, leads, workspace, kpis), over the
shared paging and decryption; callers import this package and use its names.
"""

from __future__ import annotations

from urbana.projections.queries.conversations import (
    ME,
    NO_ASSIGNEE,
    PREVIEW_CHARS,
    ConversationDetail,
    ConversationItem,
    NoteItem,
    get_conversation,
    list_conversations,
    waiting_queue,
)
from urbana.projections.queries.kpis import KpiDay, KpiReport, kpi_report, kpis_by_day
from urbana.projections.queries.leads import (
    LeadDetail,
    LeadItem,
    get_lead,
    list_leads,
    pipeline_counts,
)
from urbana.projections.queries.messages import MessageItem, list_messages
from urbana.projections.queries.paging import (
    DEFAULT_LIMIT,
    MAX_LIMIT,
    InvalidCursor,
    Page,
    decode_cursor,
    encode_cursor,
)
from urbana.projections.queries.workspace import (
    CannedResponse,
    QueueItem,
    TeamMember,
    list_canned_responses,
    list_queues,
    team,
)

__all__ = [
    "DEFAULT_LIMIT",
    "MAX_LIMIT",
    "ME",
    "NO_ASSIGNEE",
    "PREVIEW_CHARS",
    "CannedResponse",
    "ConversationDetail",
    "ConversationItem",
    "InvalidCursor",
    "KpiDay",
    "KpiReport",
    "LeadDetail",
    "LeadItem",
    "MessageItem",
    "NoteItem",
    "Page",
    "QueueItem",
    "TeamMember",
    "decode_cursor",
    "encode_cursor",
    "get_conversation",
    "get_lead",
    "kpi_report",
    "kpis_by_day",
    "list_canned_responses",
    "list_conversations",
    "list_leads",
    "list_messages",
    "list_queues",
    "pipeline_counts",
    "team",
    "waiting_queue",
]
