"""AES-GCM data keys per data subject, wrapped by the master key, kept in PostgreSQL.

Envelope encryption: each subject (lead, tenant) gets a random 256-bit data key;
the key is stored wrapped (AES-GCM under the master key, bound to the subject id)
in `urbana_subject_keys` (made by `adapters.postgres.schema`). Erasure destroys the key
(crypto-shredding): every copy of the subject's data, in the store, Kafka or backups
taken afterwards, becomes unreadable. Erasure deletes the key material and keeps the
row (`wrapped` NULL, `erased_at`), so sealing for an erased subject is refused instead
of starting a new key under the old id. Unwrapped keys are cached in process for speed;
a shredded key is evicted from this process's cache at once, and from every other
process's when it consumes the `SubjectErased` event (`forget`), at the latest within
`cache_ttl`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable
from uuid import UUID

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from psycopg_pool import ConnectionPool

from urbana.adapters.postgres.faults import store_call
from urbana.domain.lead import ErasedSubject
from urbana.errors import ConfigurationError, UrbanaError

NONCE = 12
DIGEST_CHARS = 32  # 128 bits of HMAC-SHA256, in hex


class TamperedRecord(UrbanaError):
    """Sealed data failed authentication: it was altered, or sealed for another subject."""


def parse_master_key(value: str) -> bytes:
    """A 32-byte key given as base64 (standard or urlsafe)."""
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except ValueError as exc:
        raise ConfigurationError("master key is not base64") from exc
    if len(raw) != 32:
        raise ConfigurationError("master key must be 32 bytes (base64 of 32 random bytes)")
    return raw


def new_master_key() -> str:
    return base64.urlsafe_b64encode(os.urandom(32)).decode("ascii")


class PostgresSubjectCipher:
    """SubjectCipher on AES-GCM with data keys stored wrapped in PostgreSQL."""

    def __init__(
        self,
        pool: ConnectionPool,
        master_key: bytes,
        *,
        schema: str | None = None,
        cache_size: int = 50_000,
        cache_ttl: float = 60.0,
    ) -> None:
        self._pool = pool
        self._master = AESGCM(master_key)
        # A key of its own for digests, derived from the master key: every process of
        # the installation computes the same digests, and none is the master key itself.
        self._digest_key = HKDF(
            algorithm=hashes.SHA256(), length=32, salt=None, info=b"urbana id digests v1"
        ).derive(master_key)
        self._table = f'"{schema}".urbana_subject_keys' if schema else "urbana_subject_keys"
        # None for an erased subject: known, and without a key.
        self._cache: OrderedDict[UUID, tuple[AESGCM | None, float]] = OrderedDict()
        self._cache_size = cache_size
        self._cache_ttl = cache_ttl
        self._lock = threading.Lock()

    # -- SubjectCipher -------------------------------------------------------

    def seal(self, subject_id: UUID, plaintext: bytes) -> bytes:
        """Encrypt with the subject's data key, creating the key if it has none.

        `ErasedSubject` when the subject was erased: a new key under the old id would
        make everything sealed before fail authentication instead of reading as erased.
        """
        key = self._key(subject_id, create=True)
        if key is None:
            raise ErasedSubject(f"subject {subject_id} was erased")
        nonce = os.urandom(NONCE)
        return nonce + key.encrypt(nonce, plaintext, subject_id.bytes)

    def open(self, subject_id: UUID, sealed: bytes) -> bytes | None:
        """Decrypt; None when the subject's key was destroyed."""
        key = self._key(subject_id, create=False)
        if key is None:
            return None
        try:
            return key.decrypt(sealed[:NONCE], sealed[NONCE:], subject_id.bytes)
        except InvalidTag as exc:
            raise TamperedRecord(
                f"sealed data of subject {subject_id} failed authentication"
            ) from exc

    def prepare(self, subject_ids: Iterable[UUID]) -> None:
        """Load or create keys for many subjects in two statements."""
        now = time.monotonic()
        with self._lock:
            missing = [s for s in set(subject_ids) if not self._fresh(s, now)]
        if not missing:
            return
        wrapped_new = [self._wrap(s, AESGCM.generate_key(256)) for s in missing]
        with store_call("loading data keys"), self._pool.connection() as conn:
            # No fsync of its own: the events that use these keys commit right after,
            # and their synchronous commit flushes the WAL up to and including these
            # rows, so a key is durable whenever data sealed with it is.
            conn.execute("SET LOCAL synchronous_commit = off")
            conn.execute(
                f"INSERT INTO {self._table} (subject_id, wrapped) "  # noqa: S608
                "SELECT * FROM unnest(%s::uuid[], %s::bytea[]) ON CONFLICT DO NOTHING",
                (missing, wrapped_new),
            )
            rows = conn.execute(
                f"SELECT subject_id, wrapped FROM {self._table} "  # noqa: S608
                "WHERE subject_id = ANY(%s)",
                (missing,),
            ).fetchall()
        with self._lock:
            for subject, wrapped in rows:
                key = None if wrapped is None else self._unwrap(subject, bytes(wrapped))
                self._remember(subject, key, now)

    def holds(self, subject_ids: Iterable[UUID]) -> bool:
        """Whether every one of these subjects' keys is in memory: opening their data
        then needs no database round trip (the API opens a page inline when it does)."""
        now = time.monotonic()
        with self._lock:
            return all(self._fresh(s, now) for s in set(subject_ids))

    def shred(self, subject_id: UUID) -> bool:
        """Destroy the subject's key; True when there was one.

        The row stays, without its key, as the mark that the subject was erased.
        """
        with store_call("destroying a data key"), self._pool.connection() as conn:
            destroyed = conn.execute(
                f"UPDATE {self._table} SET wrapped = NULL, erased_at = now() "  # noqa: S608
                "WHERE subject_id = %s AND wrapped IS NOT NULL",
                (subject_id,),
            ).rowcount
            conn.execute(
                f"INSERT INTO {self._table} (subject_id, wrapped, erased_at) "  # noqa: S608
                "VALUES (%s, NULL, now()) ON CONFLICT DO NOTHING",
                (subject_id,),
            )
        self.forget([subject_id])
        return destroyed > 0

    def forget(self, subject_ids: Iterable[UUID]) -> None:
        """Drop cached unwrapped keys (their rows were deleted, here or elsewhere)."""
        with self._lock:
            for subject_id in subject_ids:
                self._cache.pop(subject_id, None)

    def digest(self, context: str, value: str) -> str:
        """HMAC-SHA256 of `value` in `context` under the installation's digest key."""
        mac = hmac.new(self._digest_key, f"{context}\0{value}".encode(), hashlib.sha256)
        return mac.hexdigest()[:DIGEST_CHARS]

    # -- internals -----------------------------------------------------------

    def _fresh(self, subject_id: UUID, now: float) -> bool:
        entry = self._cache.get(subject_id)
        return entry is not None and now - entry[1] < self._cache_ttl

    def _remember(self, subject_id: UUID, key: AESGCM | None, now: float) -> None:
        self._cache[subject_id] = (key, now)
        self._cache.move_to_end(subject_id)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)

    def _key(self, subject_id: UUID, *, create: bool) -> AESGCM | None:
        now = time.monotonic()
        with self._lock:
            entry = self._cache.get(subject_id)
            if entry is not None and now - entry[1] < self._cache_ttl:
                return entry[0]
        if create:
            self.prepare([subject_id])
        else:
            with store_call("loading a data key"), self._pool.connection() as conn:
                row = conn.execute(
                    f"SELECT wrapped FROM {self._table} WHERE subject_id = %s",  # noqa: S608
                    (subject_id,),
                ).fetchone()
            if row is None or row[0] is None:
                with self._lock:
                    self._cache.pop(subject_id, None)
                return None
            with self._lock:
                self._remember(subject_id, self._unwrap(subject_id, bytes(row[0])), now)
        with self._lock:
            entry = self._cache.get(subject_id)
        return entry[0] if entry else None

    def _wrap(self, subject_id: UUID, data_key: bytes) -> bytes:
        nonce = os.urandom(NONCE)
        return nonce + self._master.encrypt(nonce, data_key, subject_id.bytes)

    def _unwrap(self, subject_id: UUID, wrapped: bytes) -> AESGCM:
        try:
            return AESGCM(self._master.decrypt(wrapped[:NONCE], wrapped[NONCE:], subject_id.bytes))
        except InvalidTag as exc:
            raise ConfigurationError("data key does not unwrap: wrong master key?") from exc
