"""The `Summarizer` port on OpenAI chat completions: the handoff summary attendants read.

One call, no retries: the handoff must not wait on it, and when it fails (or there is
no key, see the composition root) the responder writes the template summary instead.
The transcript holds personal data, as the reply prompt does, and goes to the same
provider.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import httpx
import openai

from urbana.adapters.llm.openai_llm import openai_client

log = logging.getLogger(__name__)

MAX_SUMMARY = 600

INSTRUCTIONS = """\
Você resume conversas de atendimento para o atendente humano que vai assumir agora.
Escreva em português do Brasil, em até três frases curtas: o que o cliente quer, o que \
já foi respondido e o que falta resolver. Use só o que está na conversa; não invente \
preços, prazos nem promessas. Sem saudações e sem listas."""


class OpenAISummarizer:
    """Summaries by a chat model; None on any failure (the caller has a template)."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        api_key: str,
        base_url: str | None = None,
        model: str = "gpt-4o-mini",
        timeout: float = 10.0,
        max_tokens: int = 200,
    ) -> None:
        self._client = openai_client(http, api_key, base_url, timeout)
        self._model = model
        self._timeout = timeout
        self._max_tokens = max_tokens

    async def summarize(self, transcript: Sequence[tuple[str, str]], reason: str) -> str | None:
        """A few sentences on the transcript, or None when the model could not."""
        conversation = "\n".join(f"{author}: {text}" for author, text in transcript)
        try:
            response = await self._client.chat.completions.create(
                model=self._model,
                messages=[
                    {"role": "system", "content": INSTRUCTIONS},
                    {
                        "role": "user",
                        "content": f"Motivo da transferência: {reason}\n\n{conversation}",
                    },
                ],
                temperature=0.2,
                max_tokens=self._max_tokens,
                timeout=self._timeout,
            )
        except (openai.OpenAIError, httpx.HTTPError) as exc:
            log.warning(
                "handoff summary: the model failed (%s); using the template", type(exc).__name__
            )
            return None
        choices = getattr(response, "choices", None) or []
        content = choices[0].message.content if choices else None
        text = " ".join(str(content or "").split())
        if not text:
            return None
        return text if len(text) <= MAX_SUMMARY else text[: MAX_SUMMARY - 3] + "..."
