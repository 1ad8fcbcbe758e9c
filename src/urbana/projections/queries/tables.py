"""The physical names of the read-model tables the queries read (this code's versions)."""

from __future__ import annotations

from urbana.projections.base import physical_name
from urbana.projections.conversation_view import ConversationView
from urbana.projections.kpis import Kpis
from urbana.projections.lead_pipeline import LeadPipeline
from urbana.projections.team import Team
from urbana.projections.workspace import Workspace

CONVERSATIONS = physical_name(ConversationView(), "conversations")
MESSAGES = physical_name(ConversationView(), "messages")
NOTES = physical_name(ConversationView(), "notes")
LEADS = physical_name(LeadPipeline(), "leads")
KPI_DAILY = physical_name(Kpis(), "kpi_daily")
KPI_RESPONSES = physical_name(Kpis(), "kpi_responses")
USERS = physical_name(Team(), "users")
QUEUES = physical_name(Workspace(), "queues")
CANNED = physical_name(Workspace(), "canned_responses")
