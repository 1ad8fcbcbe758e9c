"""Opening the sealed personal fields the read models keep (see the package docstring)."""

from __future__ import annotations

import asyncio
from typing import Any

from urbana.application.ports import SubjectCipher
from urbana.application.store import open_sealed


def _open_all(cipher: SubjectCipher | None, blobs: list[Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    cache: dict[str, dict[str, Any]] = {}
    for blob in blobs:
        if not blob or cipher is None:
            out.append({})
            continue
        marker = blob["ciphertext"]
        opened = cache.get(marker)
        if opened is None:
            opened = cache[marker] = open_sealed(
                cipher, {"k": blob["key_id"], "f": blob["fields"], "c": blob["ciphertext"]}
            )
        out.append(opened)
    return out


async def decrypt(cipher: SubjectCipher | None, blobs: list[Any]) -> list[dict[str, Any]]:
    if cipher is None or not any(blobs):
        return [{} for _ in blobs]
    return await asyncio.to_thread(_open_all, cipher, blobs)


def field_text(fields: dict[str, Any], name: str) -> str | None:
    value = fields.get(name)
    return None if value is None else str(value)
