"""The AI reply contract, the handoff policy and the bot's default messages."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest

from urbana.domain.errors import DomainError, InvalidInput
from urbana.domain.reply import (
    AI_DECISION_SCHEMA,
    DEFAULT_MESSAGES,
    EXPLICIT_REQUEST,
    HANDOFF_INTENT,
    HOT_LEAD,
    LLM_REQUESTED,
    LOW_CONFIDENCE,
    AIDecision,
    bot_message,
    handoff_reason,
    is_explicit_request,
)

SETTINGS: dict[str, Any] = {
    "confidence_threshold": 0.55,
    "handoff_intents": ["complaint", "cancel", "human"],
    "hot_score": 70,
}


def decision(**changes: Any) -> AIDecision:
    fields: dict[str, Any] = {
        "reply": "Atendemos de segunda a sexta, das 8h às 18h.",
        "intent": "faq",
        "confidence": 0.9,
        "should_handoff": False,
        "handoff_reason": None,
        "score_delta": 5,
    }
    fields.update(changes)
    return AIDecision(**fields)


def reason(d: AIDecision, burst: str = "Qual o horário?", score: int = 10) -> str | None:
    return handoff_reason(d, burst_text=burst, lead_score=score, **SETTINGS)


# ------------------------------------------------------------------- contract


def test_valid_decision_round_trips_through_dict() -> None:
    d = decision()
    assert AIDecision.from_dict(d.to_dict()) == d


def test_from_dict_accepts_what_the_json_schema_accepts() -> None:
    handing_off = decision(should_handoff=True, handoff_reason="no_answer")
    data = json.loads(json.dumps(handing_off.to_dict()))
    jsonschema.validate(data, AI_DECISION_SCHEMA)
    assert AIDecision.from_dict(data).handoff_reason == "no_answer"


@pytest.mark.parametrize(
    "changes",
    [
        {"confidence": 1.5},
        {"confidence": -0.1},
        {"confidence": float("nan")},
        {"confidence": "0.9"},
        {"confidence": True},
        {"score_delta": 101},
        {"score_delta": 2.5},
        {"score_delta": True},
        {"should_handoff": "yes"},
        {"intent": ""},
        {"intent": "Preço!"},
        {"reply": "   "},
        {"reply": "x" * 5000},
        {"reply": None},
        {"handoff_reason": "no_answer"},  # a reason without a handoff
        {"should_handoff": True, "handoff_reason": "Cliente pediu"},
    ],
)
def test_bad_values_are_refused_with_a_domain_error(changes: dict[str, Any]) -> None:
    with pytest.raises(InvalidInput) as info:
        decision(**changes)
    assert isinstance(info.value, DomainError)


def test_empty_reply_is_allowed_when_handing_off() -> None:
    d = decision(reply="", should_handoff=True, handoff_reason="no_answer")
    assert d.reply == ""


def test_from_dict_refuses_missing_and_unknown_fields() -> None:
    data = decision().to_dict()
    with pytest.raises(InvalidInput, match="missing"):
        AIDecision.from_dict({k: v for k, v in data.items() if k != "intent"})
    with pytest.raises(InvalidInput, match="unknown"):
        AIDecision.from_dict({**data, "extra": 1})
    with pytest.raises(InvalidInput):
        AIDecision.from_dict(["not", "an", "object"])  # type: ignore[arg-type]  # the point of the test


def test_from_dict_normalises_intent_and_drops_reason_without_handoff() -> None:
    data = {**decision().to_dict(), "intent": " Pricing ", "handoff_reason": "other"}
    d = AIDecision.from_dict(data)
    assert d.intent == "pricing"
    assert d.handoff_reason is None


def test_integer_confidence_becomes_float() -> None:
    assert decision(confidence=1).confidence == 1.0


# --------------------------------------------------------------------- policy


def test_no_handoff_for_a_confident_answer_to_a_cool_lead() -> None:
    assert reason(decision()) is None


def test_llm_asking_for_handoff_gives_its_reason() -> None:
    assert reason(decision(should_handoff=True, handoff_reason="no_answer")) == "no_answer"
    assert reason(decision(should_handoff=True)) == LLM_REQUESTED


def test_intent_in_the_tenant_handoff_list_hands_off() -> None:
    assert reason(decision(intent="complaint")) == HANDOFF_INTENT


def test_confidence_under_the_tenant_threshold_hands_off() -> None:
    assert reason(decision(confidence=0.54)) == LOW_CONFIDENCE
    assert reason(decision(confidence=0.55)) is None


def test_lead_reaching_the_hot_score_hands_off() -> None:
    assert reason(decision(), score=70) == HOT_LEAD
    assert reason(decision(), score=69) is None


def test_explicit_request_wins_over_everything() -> None:
    d = decision(should_handoff=True, handoff_reason="no_answer")
    assert reason(d, burst="Quero falar com um atendente") == EXPLICIT_REQUEST


@pytest.mark.parametrize(
    "text",
    [
        "Quero falar com um atendente",
        "ATENDENTE",
        "me passa pra um humano por favor",
        "Quero falar com alguém",
        "quero falar com alguem",
        "posso conversar com uma pessoa?",
        "Chama o gerente",
        "tem alguém aí?",
        "preciso de atendimento humano",
        "é uma pessoa de verdade?",
        "Não quero falar com robô",
        "transfere pra um vendedor",
        "I want to talk to a human",
        "Quero falar com o responsável",
        "atendente!!!",
    ],
)
def test_explicit_requests_for_a_person_are_detected(text: str) -> None:
    assert is_explicit_request(text)


@pytest.mark.parametrize(
    "text",
    [
        "Quanto custa por pessoa?",
        "O pacote é para 2 pessoas",
        "Vocês contratam para recursos humanos?",
        "Quero saber se alguém já comprou esse colchão",
        "Qual o horário de atendimento?",
        "a gente quer comprar dois",
        "Bom dia",
    ],
)
def test_ordinary_messages_are_not_explicit_requests(text: str) -> None:
    assert not is_explicit_request(text)


# ------------------------------------------------------------------- messages


def test_default_messages_are_portuguese_and_overridable() -> None:
    assert bot_message("handoff") == DEFAULT_MESSAGES["handoff"]
    assert "atendentes" in bot_message("handoff")
    assert bot_message("fallback", {"fallback": "Ops! Já volto."}) == "Ops! Já volto."
    assert bot_message("fallback", {"fallback": "  "}) == DEFAULT_MESSAGES["fallback"]
    assert "24 horas" in bot_message("outside_window")


def test_unknown_message_key_is_refused() -> None:
    with pytest.raises(InvalidInput):
        bot_message("nope")
