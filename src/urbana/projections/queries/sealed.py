"""Opening the sealed personal fields the read models keep (see the package docstring)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import Any
from uuid import UUID

from urbana.application.ports import SubjectCipher
from urbana.application.store import open_sealed


def _open_all(
    cipher: SubjectCipher | None, blobs: list[Any], subjects: dict[str, UUID]
) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    cache: dict[str, dict[str, Any]] = {}
    for blob in blobs:
        if not blob or cipher is None:
            out.append({})
            continue
        marker = blob["ciphertext"]
        opened = cache.get(marker)
        if opened is None:
            key_id = blob["key_id"]
            opened = cache[marker] = open_sealed(
                cipher,
                {"k": key_id, "f": blob["fields"], "c": marker},
                subjects.get(key_id),
            )
        out.append(opened)
    return out


async def decrypt(cipher: SubjectCipher | None, blobs: list[Any]) -> list[dict[str, Any]]:
    if cipher is None or not any(blobs):
        return [{} for _ in blobs]
    # With every key in memory, opening a page is a few milliseconds of AES-GCM at most:
    # cheaper on the event loop than the hop to a worker thread (on a busy machine that
    # hop was half a list's time). A key to load is a database read: off the loop.
    # A page's rows share leads (a conversation's contact and last message, one key):
    # each distinct key id parsed once.
    subjects = {k: UUID(k) for k in {b["key_id"] for b in blobs if b}}
    # A cipher that can tell when opening needs no I/O (its keys are in memory) has
    # `holds`; looked up, as a runtime-checkable protocol's isinstance walks its members.
    holds: Callable[[Iterable[UUID]], bool] | None = getattr(cipher, "holds", None)
    if holds is not None and holds(subjects.values()):
        return _open_all(cipher, blobs, subjects)
    return await asyncio.to_thread(_open_all, cipher, blobs, subjects)


def field_text(fields: dict[str, Any], name: str) -> str | None:
    value = fields.get(name)
    return None if value is None else str(value)
