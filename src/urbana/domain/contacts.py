"""Contacts, phone numbers and the natural keys that give streams their ids.

A WhatsApp contact is not always a phone number: Meta's business-scoped user ids
and WhatsApp `@lid` ids carry none. Brazilian mobile numbers arrive with and
without the ninth digit; both spellings must map to one lead.
"""

from __future__ import annotations

import re
from uuid import UUID, uuid5

from urbana.domain.errors import InvalidInput

NAMESPACE = UUID("5f0c6f1e-3a57-4b5e-9d0e-0b7a1c9f2e41")

_DIGITS = re.compile(r"\D+")
_PHONE_CHARS = re.compile(r"[\d\s+().-]+")


def normalise_phone(raw: str) -> str:
    """E.164 digits (no '+'); Brazilian mobiles always with the ninth digit.

    A Brazilian number is 55 + DDD (2 digits) + subscriber. Mobile subscribers have
    9 digits starting with 9; before 2016 they had 8 digits starting with 6-9, and
    WhatsApp still reports many accounts that way. Landlines (8 digits starting
    2-5) keep 8 digits.
    """
    if not _PHONE_CHARS.fullmatch(raw.strip()):
        raise InvalidInput("a phone number has only digits, spaces and + ( ) - .")
    digits = _DIGITS.sub("", raw)
    if not 8 <= len(digits) <= 15:
        raise InvalidInput(f"not a phone number: {len(digits)} digits")
    if digits.startswith("55") and len(digits) == 12 and digits[4] in "6789":
        digits = digits[:4] + "9" + digits[4:]
    return digits


def phone_lookup_forms(raw: str) -> list[str]:
    """The numbers a phone typed by a person may be, most likely first.

    Stored phones carry the country code (WhatsApp reports them so), but a person often
    types the national form: DDD + subscriber, perhaps after a trunk 0, as in
    "(11) 98765-4321" or "011 8765-4321". Such a number (10 or 11 digits, a DDD of
    11-99, and 11 digits only for a mobile's 9) may also be Brazilian without +55, so
    that reading comes too, after the number as typed.
    """
    as_typed = normalise_phone(raw)
    national = _DIGITS.sub("", raw).removeprefix("0")
    forms = [as_typed]
    if "+" not in raw and _looks_national(national):
        brazilian = normalise_phone("55" + national)
        if brazilian != as_typed:
            forms.append(brazilian)
    return forms


def _looks_national(digits: str) -> bool:
    if len(digits) not in (10, 11) or digits[0] == "0" or digits[1] == "0":
        return False
    return digits[2] == "9" if len(digits) == 11 else digits[2] in "23456789"


def contact_key(contact: str) -> str:
    """The canonical key of a contact: `phone:<digits>`, `lid:<id>`, `bsuid:<id>`, or
    `console:<session>` (an admin testing the bot through the console channel)."""
    value = contact.strip()
    if not value:
        raise InvalidInput("empty contact")
    if value.endswith("@lid") or value.startswith("lid:"):
        rest = value.removesuffix("@lid").removeprefix("lid:").strip()
        if not rest:
            raise InvalidInput("empty @lid id")
        return "lid:" + rest
    if value.startswith("console:"):
        rest = value.removeprefix("console:").strip()
        if not rest:
            raise InvalidInput("empty console session")
        return "console:" + rest
    if value.startswith("bsuid:"):
        rest = value.removeprefix("bsuid:").strip()
        if not rest:
            raise InvalidInput("empty business-scoped user id")
        return "bsuid:" + rest
    value = value.removeprefix("phone:")
    if value.endswith("@s.whatsapp.net") or value.endswith("@c.us"):
        value = value.split("@", 1)[0]
    return "phone:" + normalise_phone(value)


def lead_key(contact: str, phone: str | None) -> str:
    """The key that identifies one person: the phone when known, else the contact."""
    if phone:
        return "phone:" + normalise_phone(phone)
    return contact_key(contact)


def tenant_id_for(name: str) -> UUID:
    return uuid5(NAMESPACE, f"tenant:{name.strip().lower()}")


def _generation(generation: int) -> str:
    # Generation 0 is the id every stream had before erasure existed: no suffix.
    return f"#gen{generation}" if generation else ""


def conversation_id_for(tenant_id: UUID, channel: str, contact: str, generation: int = 0) -> UUID:
    """The conversation of a contact on a channel, in the contact's `generation`.

    A person whose data was erased and who writes again is a new data subject: the new
    generation gives them new streams (see docs/architecture.md, Privacy).
    """
    key = contact_key(contact)
    return uuid5(NAMESPACE, f"conversation:{tenant_id}:{channel}:{key}{_generation(generation)}")


def lead_id_for(tenant_id: UUID, key: str, generation: int = 0) -> UUID:
    return uuid5(NAMESPACE, f"lead:{tenant_id}:{key}{_generation(generation)}")


def message_ref_id_for(tenant_id: UUID, channel: str, provider_message_id: str) -> UUID:
    return uuid5(NAMESPACE, f"message:{tenant_id}:{channel}:{provider_message_id}")


def channel_route_id_for(channel: str, route_key: str) -> UUID:
    return uuid5(NAMESPACE, f"route:{channel}:{route_key}")
