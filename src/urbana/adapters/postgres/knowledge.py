"""The tenants' knowledge bases in PostgreSQL with pgvector.

A document is chunked (`chunk_markdown`), embedded as passages, and stored one row
per chunk with its vector, the model that made it and its dimension; a search only
compares vectors of the model the store embeds queries with. An HNSW index
(`vector_cosine_ops`) serves the nearest-neighbour search.

The table (made by `adapters.postgres.schema`) is a projection of the tenants'
`KnowledgeDocumentAdded` events: each row keeps the tenant stream version of the event
it came from, and an event older than what a document already holds changes nothing
(redeliveries, replays out of order).

Knowledge text is the tenant's own published content (opening hours, prices,
policies), not personal data of leads: it is stored in the clear and is not subject
to crypto-shredding. Tenants must not upload documents about identifiable people.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any
from uuid import UUID

from psycopg import Connection
from psycopg import Error as PsycopgError
from psycopg_pool import ConnectionPool

from urbana.adapters.postgres.schema import KNOWLEDGE_DIM as DIM
from urbana.application.ai import DEFAULT_K, Passage, chunk_markdown, document_id_for
from urbana.application.ports import Embeddings
from urbana.errors import Unavailable

__all__ = ["PgKnowledgeStore", "document_id_for"]


def _literal(vector: Sequence[float]) -> str:
    return "[" + ",".join(f"{x:.7g}" for x in vector) + "]"


def _version_in(conn: Connection[Any], tenant_id: UUID, document_id: UUID) -> int | None:
    """The tenant stream version the stored document comes from (None: not stored)."""
    row = conn.execute(
        "SELECT max(source_version) FROM kb_chunks WHERE tenant_id = %s AND document_id = %s",
        (tenant_id, document_id),
    ).fetchone()
    return None if row is None or row[0] is None else int(row[0])


class PgKnowledgeStore:
    """`KnowledgeStore` on pgvector; SQL runs in worker threads on the given pool.

    The pool's connections must have the store's schema on their search_path, with
    `public` (where the `vector` type lives) after it, as `conninfo(url, schema)` does.
    """

    def __init__(
        self,
        pool: ConnectionPool,
        embeddings: Embeddings,
        *,
        max_chars: int = 800,
        overlap: int = 120,
        ef_search: int = 100,
    ) -> None:
        if embeddings.dim != DIM:
            raise ValueError(f"kb_chunks holds {DIM}-d vectors, not {embeddings.dim}-d")
        self._pool = pool
        self._embeddings = embeddings
        self._max_chars = max_chars
        self._overlap = overlap
        self._ef_search = ef_search

    async def add_document(
        self,
        tenant_id: UUID,
        name: str,
        text: str,
        *,
        version: int | None = None,
        force: bool = False,
    ) -> UUID:
        """Chunk, embed and store a document, replacing one of the same name; its id.

        `version` is the tenant stream version of the event the text comes from: a
        document already stored from that event or a later one is left alone (no
        embedding either); `force` re-embeds the same version (a rebuild, say after a
        model change). Without a version the document is replaced unconditionally.
        """
        if not name.strip():
            raise ValueError("document name is required")
        chunks = chunk_markdown(text, max_chars=self._max_chars, overlap=self._overlap)
        if not chunks:
            raise ValueError("document has no text")
        document_id = document_id_for(tenant_id, name.strip())
        if (
            version is not None
            and not force
            and await asyncio.to_thread(self._stored_version, tenant_id, document_id) >= version
        ):
            return document_id
        vectors = await self._embeddings.embed_passages(chunks)
        await asyncio.to_thread(
            self._replace, tenant_id, document_id, chunks, vectors, version, force
        )
        return document_id

    def _stored_version(self, tenant_id: UUID, document_id: UUID) -> int:
        try:
            with self._pool.connection() as conn:
                stored = _version_in(conn, tenant_id, document_id)
        except PsycopgError as exc:
            raise Unavailable(f"cannot read kb_chunks: {exc}") from exc
        return -1 if stored is None else stored

    async def search(
        self, tenant_id: UUID, query_vector: Sequence[float], k: int = DEFAULT_K
    ) -> list[Passage]:
        """The tenant's `k` chunks closest to the vector (cosine), best first."""
        return await asyncio.to_thread(self.search_sync, tenant_id, query_vector, k)

    def search_sync(
        self, tenant_id: UUID, query_vector: Sequence[float], k: int = DEFAULT_K
    ) -> list[Passage]:
        """`search` in the calling thread."""
        if len(query_vector) != DIM:
            raise ValueError(f"query vector has {len(query_vector)} dimensions, not {DIM}")
        try:
            # One round trip for BEGIN, SET and the search (pipeline mode), one for COMMIT.
            with self._pool.connection() as conn, conn.pipeline(), conn.transaction():
                # The tenant filter runs after the index scan: look wider than k.
                conn.execute(f"SET LOCAL hnsw.ef_search = {int(self._ef_search)}")
                rows = conn.execute(
                    "SELECT text, 1 - (embedding <=> %s::vector) AS score, document_id, chunk_no "
                    "FROM kb_chunks WHERE tenant_id = %s AND model = %s "
                    "ORDER BY embedding <=> %s::vector LIMIT %s",
                    (
                        _literal(query_vector),
                        tenant_id,
                        self._embeddings.model,
                        _literal(query_vector),
                        k,
                    ),
                ).fetchall()
        except PsycopgError as exc:
            raise Unavailable(f"knowledge search failed: {exc}") from exc
        return [
            Passage(text=r[0], score=float(r[1]), document_id=r[2], chunk_no=r[3]) for r in rows
        ]

    def _replace(
        self,
        tenant_id: UUID,
        document_id: UUID,
        chunks: Sequence[str],
        vectors: Sequence[Sequence[float]],
        version: int | None = None,
        force: bool = False,
    ) -> None:
        model = self._embeddings.model
        try:
            with self._pool.connection() as conn, conn.transaction():
                # Serialise writers of one document, then re-check under the lock.
                conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"kb:{document_id}",))
                stored = _version_in(conn, tenant_id, document_id)
                if (
                    version is not None
                    and stored is not None
                    and (stored > version or (stored == version and not force))
                ):
                    return
                conn.execute(
                    "DELETE FROM kb_chunks WHERE tenant_id = %s AND document_id = %s",
                    (tenant_id, document_id),
                )
                # One statement and round trip for every chunk. Not executemany, which
                # psycopg runs in pipeline mode, the mode whose send path hung the
                # store's large writes (see BoundedRecorder in store.py).
                conn.execute(
                    "INSERT INTO kb_chunks (tenant_id, document_id, chunk_no, text, "
                    "embedding, model, dim, source_version) "
                    "SELECT %s, %s, c.n - 1, c.text, c.vec::vector, %s, c.dim, %s "
                    "FROM unnest(%s::text[], %s::text[], %s::int[]) "
                    "WITH ORDINALITY AS c(text, vec, dim, n)",
                    (
                        tenant_id,
                        document_id,
                        model,
                        version or 0,
                        list(chunks),
                        [_literal(v) for v in vectors],
                        [len(v) for v in vectors],
                    ),
                )
        except PsycopgError as exc:
            raise Unavailable(f"cannot store document: {exc}") from exc
