"""Templates and the 24-hour window in the domain: what may go out, and when."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import uuid4

import pytest

from urbana.domain.conversation import Conversation
from urbana.domain.errors import InvalidInput, InvalidTransition, TemplateRequired
from urbana.domain.templates import Template, window_applies
from urbana.domain.tenant import TenantSettings

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
VISIT = Template.of("confirmacao_visita", "pt_BR", ["nome", "horario"], "Olá {{1}}! Visita {{2}}.")


def held_conversation(last_wrote: datetime) -> Conversation:
    conv = Conversation.start(uuid4(), "cloud", "5511999990000", uuid4())
    conv.receive(provider_message_id="w1", kind="text", sent_at=last_wrote, text="oi")
    conv.accept_handoff(attendant="ana")
    return conv


def test_a_template_fills_its_parameters_in_order() -> None:
    values, text = VISIT.fill({"horario": "amanhã às 10h", "nome": "Ana"})
    assert values == ["Ana", "amanhã às 10h"]
    assert text == "Olá Ana! Visita amanhã às 10h."


@pytest.mark.parametrize(
    "values", [{"nome": "Ana"}, {"nome": "Ana", "horario": "10h", "extra": "x"}, {}]
)
def test_values_must_match_the_parameters(values: dict[str, str]) -> None:
    with pytest.raises(InvalidInput):
        VISIT.fill(values)


@pytest.mark.parametrize(
    ("name", "language", "parameters", "text"),
    [
        ("Com Maiuscula", "pt_BR", [], "Oi"),
        ("ok", "portuguese", [], "Oi"),
        ("ok", "pt_BR", ["a"], "Oi sem marcador"),
        ("ok", "pt_BR", [], "Oi {{1}}"),
        ("ok", "pt_BR", ["a", "a"], "{{1}} {{2}}"),
        ("ok", "pt_BR", [], "  "),
    ],
)
def test_a_malformed_template_is_refused(
    name: str, language: str, parameters: list[str], text: str
) -> None:
    with pytest.raises(InvalidInput):
        Template.of(name, language, parameters, text)


def test_outside_the_window_a_reply_needs_a_template_and_a_template_goes() -> None:
    conv = held_conversation(NOW - timedelta(hours=25))
    with pytest.raises(TemplateRequired):
        conv.attendant_reply(outbound_id="o1", attendant="ana", text="Oi?", now=NOW)
    conv.send_template(
        outbound_id="t1", attendant="ana", template=VISIT, values={"nome": "Ana", "horario": "10h"}
    )
    message = conv.message("t1")
    assert message.template is not None
    assert (message.template.name, message.template.values) == (
        "confirmacao_visita",
        ("Ana", "10h"),
    )
    assert message.text == "Olá Ana! Visita 10h."
    assert conv.window_allows("t1", NOW, window_applies=True)


def test_a_template_is_sent_only_by_the_holder() -> None:
    conv = held_conversation(NOW)
    with pytest.raises(InvalidInput):
        conv.send_template(outbound_id="t1", attendant="ana", template=VISIT, values={})
    with pytest.raises(Exception, match="held by"):
        conv.send_template(
            outbound_id="t2", attendant="bia", template=VISIT, values={"nome": "A", "horario": "B"}
        )


def test_the_window_is_meta_s_rule_on_cloud_and_a_choice_elsewhere() -> None:
    assert window_applies("cloud", ["evolution", "zapi"])
    assert window_applies("evolution", [])
    assert not window_applies("evolution", ["evolution"])
    settings = TenantSettings().changed({"window_exempt_channels": ["zapi", "evolution"]})
    assert settings.window_exempt_channels == ("evolution", "zapi")
    with pytest.raises(InvalidInput):
        TenantSettings().changed({"window_exempt_channels": ["cloud"]})


def test_an_exempt_channel_takes_a_free_reply_after_the_window() -> None:
    conv = held_conversation(NOW - timedelta(hours=30))
    conv.attendant_reply(
        outbound_id="o1", attendant="ana", text="Oi!", now=NOW, window_applies=False
    )
    assert not conv.window_allows("o1", NOW, window_applies=True)
    assert conv.window_allows("o1", NOW, window_applies=False)


def test_the_engine_may_send_an_approved_template_while_the_ai_holds_it() -> None:
    conv = Conversation.start(uuid4(), "cloud", "5511999990000", uuid4())
    conv.receive(provider_message_id="w1", kind="text", sent_at=NOW - timedelta(days=2), text="oi")
    later = Template.of("retomar", "pt_BR", [], "Podemos continuar?")
    conv.queue_system_template(outbound_id="f1", template=later, values={})
    message = conv.message("f1")
    assert (message.author, message.text) == ("system", "Podemos continuar?")
    assert conv.window_allows("f1", NOW, window_applies=True)
    conv.accept_handoff(attendant="ana")
    with pytest.raises(InvalidTransition):
        conv.queue_system_template(outbound_id="f2", template=later, values={})
