"""Contacts and natural keys: one person, one key, one stream id."""

from __future__ import annotations

from uuid import uuid4

import pytest

from urbana.domain.contacts import (
    channel_route_id_for,
    contact_key,
    conversation_id_for,
    lead_id_for,
    lead_key,
    message_ref_id_for,
    normalise_phone,
    phone_lookup_forms,
    tenant_id_for,
)
from urbana.domain.errors import InvalidInput

MOBILE_SPELLINGS = ("+55 (11) 8888-7777", "551188887777", "5511988887777")
MOBILE = "5511988887777"


@pytest.mark.parametrize("raw", MOBILE_SPELLINGS)
def test_brazilian_mobile_normalises_with_the_ninth_digit(raw: str) -> None:
    assert normalise_phone(raw) == MOBILE


@pytest.mark.parametrize("raw", MOBILE_SPELLINGS)
def test_brazilian_mobile_spellings_share_one_contact_key(raw: str) -> None:
    assert contact_key(raw) == "phone:" + MOBILE


def test_brazilian_mobile_spellings_share_one_lead_id() -> None:
    tenant = uuid4()
    ids = {lead_id_for(tenant, lead_key(raw, None)) for raw in MOBILE_SPELLINGS}
    assert len(ids) == 1


def test_brazilian_mobile_spellings_share_one_conversation_id() -> None:
    tenant = uuid4()
    ids = {conversation_id_for(tenant, "cloud", raw) for raw in MOBILE_SPELLINGS}
    assert len(ids) == 1


@pytest.mark.parametrize(
    "raw", ["551123334444", "+55 (11) 3333-4444", "551145556666", "552155556666"]
)
def test_brazilian_landline_keeps_eight_digits(raw: str) -> None:
    digits = "".join(c for c in raw if c.isdigit())
    assert normalise_phone(raw) == digits


def test_non_brazilian_twelve_digit_number_is_not_changed() -> None:
    assert normalise_phone("+44 7911 123456") == "447911123456"


@pytest.mark.parametrize(("raw", "digits"), [("1234-5678", "12345678"), ("1" * 15, "1" * 15)])
def test_phone_length_bounds_are_inclusive(raw: str, digits: str) -> None:
    assert normalise_phone(raw) == digits


@pytest.mark.parametrize("raw", ["123-4567", "1" * 16])
def test_phone_outside_length_bounds_is_invalid_input(raw: str) -> None:
    with pytest.raises(InvalidInput):
        normalise_phone(raw)


def test_whatsapp_jid_suffix_is_stripped() -> None:
    assert contact_key("551188887777@s.whatsapp.net") == "phone:" + MOBILE


def test_legacy_c_us_suffix_is_stripped() -> None:
    assert contact_key("5511988887777@c.us") == "phone:" + MOBILE


def test_lid_contact_is_its_own_key() -> None:
    assert contact_key("123456789012345@lid") == "lid:123456789012345"


def test_lid_contact_is_distinct_from_phone_with_same_digits() -> None:
    tenant = uuid4()
    assert contact_key("123456789012345@lid") != contact_key("123456789012345")
    assert conversation_id_for(tenant, "cloud", "123456789012345@lid") != conversation_id_for(
        tenant, "cloud", "123456789012345"
    )


def test_bsuid_contact_is_its_own_key() -> None:
    assert contact_key(" bsuid:BR.1a2b3c ") == "bsuid:BR.1a2b3c"


def test_bsuid_contact_is_distinct_from_phone_and_lid() -> None:
    tenant = uuid4()
    ids = {
        conversation_id_for(tenant, "cloud", "bsuid:12345678"),
        conversation_id_for(tenant, "cloud", "12345678@lid"),
        conversation_id_for(tenant, "cloud", "12345678"),
    }
    assert len(ids) == 3


@pytest.mark.parametrize("key", ["lid:123456789012345", "bsuid:BR.1a2b3c", "phone:" + MOBILE])
def test_canonical_key_maps_to_itself(key: str) -> None:
    assert contact_key(key) == key


@pytest.mark.parametrize(
    "contact", [*MOBILE_SPELLINGS, "123456789012345@lid", "bsuid:BR.1a2b3c", "551133334444"]
)
def test_contact_key_is_idempotent(contact: str) -> None:
    assert contact_key(contact_key(contact)) == contact_key(contact)


@pytest.mark.parametrize("garbage", ["", "   ", "hello", "123", "1" * 16, "bsuid:", "bsuid:   "])
def test_garbage_contact_is_invalid_input(garbage: str) -> None:
    with pytest.raises(InvalidInput):
        contact_key(garbage)


@pytest.mark.parametrize("garbage", ["@lid", "lid:"])
def test_empty_lid_is_invalid_input(garbage: str) -> None:
    with pytest.raises(InvalidInput):
        contact_key(garbage)


@pytest.mark.parametrize("garbage", ["phone:", "phone:hello"])
def test_prefixed_phone_key_with_no_number_is_invalid_input(garbage: str) -> None:
    with pytest.raises(InvalidInput):
        contact_key(garbage)


def test_prefixed_phone_key_is_normalised() -> None:
    assert contact_key("phone:551188887777") == "phone:" + MOBILE


@pytest.mark.parametrize("garbage", ["order 12345678", "abc5511988887777xyz"])
def test_text_with_letters_is_not_a_phone(garbage: str) -> None:
    with pytest.raises(InvalidInput):
        contact_key(garbage)


def test_lead_key_prefers_the_phone_over_the_contact() -> None:
    assert lead_key("123456789012345@lid", "551188887777") == lead_key(MOBILE, None)


def test_lead_key_without_phone_is_the_contact_key() -> None:
    assert lead_key("123456789012345@lid", None) == "lid:123456789012345"


def test_lead_key_with_garbage_phone_is_invalid_input() -> None:
    with pytest.raises(InvalidInput):
        lead_key("123456789012345@lid", "n/a")


def test_conversation_id_is_deterministic_uuid5() -> None:
    tenant = uuid4()
    first = conversation_id_for(tenant, "cloud", MOBILE)
    assert first == conversation_id_for(tenant, "cloud", MOBILE)
    assert first.version == 5


def test_conversation_id_differs_per_tenant() -> None:
    assert conversation_id_for(uuid4(), "cloud", MOBILE) != conversation_id_for(
        uuid4(), "cloud", MOBILE
    )


def test_conversation_id_differs_per_channel() -> None:
    tenant = uuid4()
    assert conversation_id_for(tenant, "cloud", MOBILE) != conversation_id_for(
        tenant, "evolution", MOBILE
    )


def test_lead_id_is_deterministic_uuid5() -> None:
    tenant = uuid4()
    first = lead_id_for(tenant, "phone:" + MOBILE)
    assert first == lead_id_for(tenant, "phone:" + MOBILE)
    assert first.version == 5


def test_lead_id_differs_per_tenant() -> None:
    assert lead_id_for(uuid4(), "phone:" + MOBILE) != lead_id_for(uuid4(), "phone:" + MOBILE)


def test_lead_and_conversation_ids_never_collide() -> None:
    tenant = uuid4()
    assert lead_id_for(tenant, contact_key(MOBILE)) != conversation_id_for(tenant, "cloud", MOBILE)


def test_tenant_id_ignores_case_and_surrounding_space() -> None:
    assert tenant_id_for(" Imobiliária Sol ") == tenant_id_for("imobiliária sol")


def test_tenant_id_differs_per_name() -> None:
    assert tenant_id_for("sol") != tenant_id_for("lua")


def test_message_ref_id_is_deterministic_and_per_tenant() -> None:
    tenant = uuid4()
    first = message_ref_id_for(tenant, "cloud", "wamid.ABC")
    assert first == message_ref_id_for(tenant, "cloud", "wamid.ABC")
    assert first != message_ref_id_for(uuid4(), "cloud", "wamid.ABC")


def test_channel_route_id_is_deterministic_and_per_channel() -> None:
    assert channel_route_id_for("cloud", "123") == channel_route_id_for("cloud", "123")
    assert channel_route_id_for("cloud", "123") != channel_route_id_for("zapi", "123")


@pytest.mark.parametrize(
    "typed",
    ["(11) 98888-7777", "11988887777", "11 8888-7777", "1188887777", "011 98888-7777"],
)
def test_a_national_phone_is_also_read_as_brazilian_without_the_55(typed: str) -> None:
    assert MOBILE in phone_lookup_forms(typed)


@pytest.mark.parametrize("typed", [*MOBILE_SPELLINGS, "+1 212 555 1234", "12125551234"])
def test_a_phone_with_its_country_code_is_read_as_typed_only(typed: str) -> None:
    assert phone_lookup_forms(typed) == [normalise_phone(typed)]


def test_the_number_as_typed_comes_before_its_national_reading() -> None:
    # 11 digits with the mobile 9: a foreign number as typed, or DDD 21 + mobile.
    assert phone_lookup_forms("21987654321") == ["21987654321", "5521987654321"]
