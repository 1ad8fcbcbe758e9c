"""The AI reply contract and the handoff policy.

See docs/architecture.md, The flow of one message, and The conversation state machine.

Whatever produced it (an LLM, the offline retrieval responder, the last-resort
fallback), an answer to a burst is one `AIDecision`. The policy then decides, from
the decision and the tenant's settings, whether the conversation goes to a human.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from urbana.domain.errors import InvalidInput
from urbana.domain.guard import fold
from urbana.domain.lead import MAX_DELTA

MAX_REPLY = 4096  # WhatsApp's limit for one text message
MAX_CODE = 64

# Handoff reasons the policy returns (they land on HandoffRequested and in the KPIs).
EXPLICIT_REQUEST = "explicit_request"
LLM_REQUESTED = "llm_requested"
HANDOFF_INTENT = "handoff_intent"
LOW_CONFIDENCE = "low_confidence"
HOT_LEAD = "hot_lead"
LLM_FAILURE = "llm_failure"
NO_ANSWER = "no_answer"

# What the model may give as its own reason (the JSON schema enumerates them).
LLM_HANDOFF_REASONS = (
    "lead_request",
    "complaint",
    "no_answer",
    "out_of_scope",
    "sensitive",
    "purchase_ready",
    "other",
)

_CODE = re.compile(r"[a-z][a-z0-9_]*")


@dataclass(frozen=True, slots=True)
class AIDecision:
    """One answer to one burst, as the LLM contract defines it."""

    reply: str
    intent: str
    confidence: float
    should_handoff: bool
    handoff_reason: str | None = None
    score_delta: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.reply, str):
            raise InvalidInput("reply must be a string")
        if len(self.reply) > MAX_REPLY:
            raise InvalidInput(f"reply longer than {MAX_REPLY} characters")
        if not isinstance(self.should_handoff, bool):
            raise InvalidInput("should_handoff must be a boolean")
        if not self.should_handoff and not self.reply.strip():
            # Without a handoff the lead must get an answer.
            raise InvalidInput("reply is empty and no handoff was asked for")
        if not isinstance(self.intent, str) or not _CODE.fullmatch(self.intent):
            raise InvalidInput(f"intent must be a lowercase code, not {self.intent!r}")
        if len(self.intent) > MAX_CODE:
            raise InvalidInput(f"intent longer than {MAX_CODE} characters")
        confidence = self.confidence
        if isinstance(confidence, bool) or not isinstance(confidence, int | float):
            raise InvalidInput("confidence must be a number")
        if math.isnan(confidence) or not 0.0 <= confidence <= 1.0:
            raise InvalidInput("confidence must be within [0, 1]")
        object.__setattr__(self, "confidence", float(confidence))
        reason = self.handoff_reason
        if reason is not None and (
            not isinstance(reason, str) or not _CODE.fullmatch(reason) or len(reason) > MAX_CODE
        ):
            raise InvalidInput(f"handoff_reason must be a lowercase code, not {reason!r}")
        if reason is not None and not self.should_handoff:
            raise InvalidInput("handoff_reason given without should_handoff")
        delta = self.score_delta
        if isinstance(delta, bool) or not isinstance(delta, int):
            raise InvalidInput("score_delta must be an integer")
        if not -MAX_DELTA <= delta <= MAX_DELTA:
            raise InvalidInput(f"score_delta {delta} out of range")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AIDecision:
        """Validate a decoded JSON object against the contract; InvalidInput if it fails."""
        if not isinstance(data, Mapping):
            raise InvalidInput("the decision must be a JSON object")
        missing = set(AI_DECISION_FIELDS) - set(data)
        if missing:
            raise InvalidInput(f"missing fields: {sorted(missing)}")
        extra = set(data) - set(AI_DECISION_FIELDS)
        if extra:
            raise InvalidInput(f"unknown fields: {sorted(extra)}")
        reason = data["handoff_reason"]
        if isinstance(reason, str) and not reason.strip():
            reason = None
        should_handoff = data["should_handoff"]
        if should_handoff is False and reason is not None:
            reason = None  # a reason without a handoff carries no information
        return cls(
            reply=data["reply"].strip() if isinstance(data["reply"], str) else data["reply"],
            intent=data["intent"].strip().lower()
            if isinstance(data["intent"], str)
            else data["intent"],
            confidence=data["confidence"],
            should_handoff=should_handoff,
            handoff_reason=reason,
            score_delta=data["score_delta"],
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


AI_DECISION_FIELDS = tuple(f.name for f in fields(AIDecision))

# The contract as a strict JSON schema (OpenAI structured outputs accept this subset).
AI_DECISION_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": list(AI_DECISION_FIELDS),
    "properties": {
        "reply": {
            "type": "string",
            "description": "A resposta ao cliente, em português; vazia só se for transferir.",
        },
        "intent": {
            "type": "string",
            "description": "A intenção do cliente em snake_case (faq, pricing, purchase, "
            "scheduling, complaint, cancel, human, greeting, other).",
        },
        "confidence": {
            "type": "number",
            "description": "0 a 1: quanto a resposta está apoiada nos trechos de conhecimento.",
        },
        "should_handoff": {"type": "boolean"},
        "handoff_reason": {
            "anyOf": [{"type": "string", "enum": list(LLM_HANDOFF_REASONS)}, {"type": "null"}]
        },
        "score_delta": {
            "type": "integer",
            "description": "Variação da pontuação do lead (-20 a 20): interesse de compra sobe.",
        },
    },
}


def handoff_reason(
    decision: AIDecision,
    *,
    burst_text: str,
    confidence_threshold: float,
    handoff_intents: Collection[str],
    hot_score: int,
    lead_score: int,
) -> str | None:
    """Why this burst goes to a human, or None to let the AI's answer stand.

    `lead_score` is the lead's score after `decision.score_delta` was applied. The
    reply guard's verdict is the caller's to add: it runs on the reply, not here.
    """
    if is_explicit_request(burst_text):
        return EXPLICIT_REQUEST
    if decision.should_handoff:
        return decision.handoff_reason or LLM_REQUESTED
    if decision.intent in {i.strip().lower() for i in handoff_intents}:
        return HANDOFF_INTENT
    if decision.confidence < confidence_threshold:
        return LOW_CONFIDENCE
    if lead_score >= hot_score:
        return HOT_LEAD
    return None


# Matched on folded text (lowercase, no accents). "pessoa" alone is too common
# ("quanto custa por pessoa?"), so it counts only with a verb of asking or "real".
_EXPLICIT = re.compile(
    r"\batendentes?\b"
    r"|\batendimento (humano|pessoal)\b"
    r"|\bhumano\b"
    r"|\bpessoa (real|de verdade)\b"
    r"|\b(falar|conversar|falo)\b[^.?!\n]{0,15}?\bcom\b[^.?!\n]{0,12}?"
    r"\b(alguem|pessoa|funcionari[oa]|vendedor[a]?|consultor[a]?|responsavel|dono|operador[a]?)\b"
    r"|\b(chamar|chame|chama|passa|passe|transfere|transfira|transferir)\b[^.?!\n]{0,15}?"
    r"\b(alguem|pessoa|funcionari[oa]|vendedor[a]?|consultor[a]?|responsavel)\b"
    r"|\balguem (de verdade|real|para|pra) (me )?(atender|ajudar|responder)\b"
    r"|\b(tem|ha) alguem (ai|por ai)\b"
    r"|\bgerente\b|\bsupervisor[a]?\b"
    r"|\bnao (quero|aguento|gosto de) (falar com )?(um |uma |esse |este |essa )?"
    r"(robo|bot|maquina)\b"
    r"|\b(talk|speak) (to|with) (a |an |the )?(human|person|agent|manager|real person)\b"
    r"|\b(real person|live agent|human agent)\b"
)


def is_explicit_request(text: str) -> bool:
    """The lead asks for a person ("atendente", "falar com alguém", "gerente", ...)."""
    return bool(_EXPLICIT.search(fold(text)))


DEFAULT_MESSAGES: dict[str, str] = {
    # Sent after the AI's answer (when valid) when the conversation goes to a human.
    "handoff": (
        "Vou transferir você para um dos nossos atendentes. "
        "Em instantes alguém continua o atendimento por aqui."
    ),
    # The answer when the AI could not (LLM down, reply rejected, input refused);
    # the handoff message follows it.
    "fallback": "Desculpe, não consegui responder à sua mensagem agora.",
    # For the attendant: free-form messages are not allowed outside the 24-hour window.
    "outside_window": (
        "A janela de 24 horas do WhatsApp está fechada: o cliente não escreve há mais de "
        "24 horas, então só é possível enviar um modelo de mensagem aprovado."
    ),
    # Waiting in the queue for a person during business hours, nobody free yet.
    "expect_queue": (
        "Nossos atendentes estão ocupados no momento. Você está na fila e será "
        "atendido assim que alguém estiver livre."
    ),
    # Waiting outside business hours; {abertura} says when the attendance opens.
    "expect_closed": (
        "Nosso atendimento está fechado agora. Um atendente vai falar com você {abertura}."
    ),
    # The offline responder's answer to a bare greeting.
    "greeting": "Olá! Como posso ajudar você?",
    # The follow-up job's message to a lead who went quiet (inside the 24-hour window).
    "follow_up": "Oi! Ficou alguma dúvida? Estou por aqui se quiser continuar.",
}


def bot_message(key: str, overrides: Mapping[str, str] | None = None) -> str:
    """A default Portuguese bot message, or the tenant's override of it."""
    if key not in DEFAULT_MESSAGES:
        raise InvalidInput(f"unknown bot message {key!r}")
    if overrides:
        custom = overrides.get(key)
        if isinstance(custom, str) and custom.strip():
            return custom.strip()
    return DEFAULT_MESSAGES[key]
