"""A list query's WHERE: the filters set, in order, with their parameters in order."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import uuid4

import pytest

from urbana.projections.queries.paging import Conditions, InvalidCursor, encode_cursor


def test_filters_that_are_not_set_add_nothing() -> None:
    where = Conditions("tenant_id = %s", "created_at IS NOT NULL", params=["t1"])
    where.when(None, "stage = %s")
    where.when(0, "score >= %s")  # a set filter, though falsy
    where.after(None, "(at, id) < (%s, %s::uuid)")

    assert where.sql() == "WHERE tenant_id = %s AND created_at IS NOT NULL AND score >= %s"
    assert where.params == ["t1", 0]


def test_a_cursor_adds_its_key_after_the_filters() -> None:
    at, row = datetime(2026, 12, 2, 21, 30, tzinfo=UTC), uuid4()
    where = Conditions("tenant_id = %s", params=["t1"])
    where.add("c.assignee IS NULL")
    where.when("vendas", "c.queue = %s")
    where.after(encode_cursor([at, str(row)]), "(c.activity_at, c.id) < (%s, %s::uuid)")

    assert where.sql() == (
        "WHERE tenant_id = %s AND c.assignee IS NULL AND c.queue = %s"
        " AND (c.activity_at, c.id) < (%s, %s::uuid)"
    )
    assert where.params == ["t1", "vendas", at, str(row)]


def test_a_cursor_it_did_not_write_is_refused() -> None:
    with pytest.raises(InvalidCursor):
        Conditions("tenant_id = %s", params=["t1"]).after("not-a-cursor", "(at, id) < (%s, %s)")
