"""Which event fields hold personal data, and whose.

The persistence boundary (the mapper) encrypts these fields with the data subject's
key, so the event store, Kafka and backups only ever hold ciphertext. The domain
declares *what* is personal; it never does the cryptography itself.
"""

from __future__ import annotations

from dataclasses import dataclass

ERASED = "[erased]"
"""What a personal field reads as once its subject's key has been destroyed."""


@dataclass(frozen=True, slots=True)
class PIISpec:
    fields: tuple[str, ...]
    subject_field: str  # event attribute holding the subject id; "originator_id" for self


_SPECS: dict[str, PIISpec] = {}


def personal(qualname: str, *fields: str, subject: str) -> None:
    """Declare that events named `qualname` carry personal `fields` of `subject`."""
    _SPECS[qualname] = PIISpec(fields=fields, subject_field=subject)


def pii_spec(event_type: type) -> PIISpec | None:
    """The personal-data declaration for an event class, if it has one."""
    return _SPECS.get(event_type.__qualname__)
