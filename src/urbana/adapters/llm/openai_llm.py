"""The `LLM` port on OpenAI chat completions (or any OpenAI-compatible server).

One call asks for a JSON-schema structured output (the reply contract). Failures
are handled here and never escape (see docs/architecture.md, Failure handling):

* 429 / 5xx / timeouts / connection errors are retried by tenacity with jittered
  exponential backoff (honouring `Retry-After`); the openai client's own retries are
  off so there is one retry policy;
* a circuit breaker per model stops calling a model after N consecutive transient
  failures, for T seconds, then lets one probe through (half-open);
* an answer that is not valid JSON for the contract, a refusal, a truncated answer
  or an exhausted model moves on to the fallback model;
* when every model failed, the result is the generic Portuguese answer with a
  handoff, reason "llm_failure".
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import httpx
import openai
from openai import AsyncOpenAI
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt
from tenacity.wait import wait_random_exponential

from urbana.adapters.metrics import observe_llm
from urbana.application.ai import LLMResult, Prompt, Usage
from urbana.domain.errors import InvalidInput
from urbana.domain.reply import AI_DECISION_SCHEMA, LLM_FAILURE, AIDecision, bot_message

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.openai.com/v1"

# USD per million tokens (input, output); unknown models (local servers) cost 0.
PRICES: dict[str, tuple[float, float]] = {
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4o": (2.50, 10.00),
    "gpt-4.1-nano": (0.10, 0.40),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1": (2.00, 8.00),
    "gpt-5-nano": (0.05, 0.40),
    "gpt-5-mini": (0.25, 2.00),
    "gpt-5": (1.25, 10.00),
}

RESPONSE_FORMAT: dict[str, Any] = {
    "type": "json_schema",
    "json_schema": {"name": "ai_decision", "strict": True, "schema": AI_DECISION_SCHEMA},
}


def estimate_cost(
    model: str, tokens_in: int, tokens_out: int, prices: Mapping[str, tuple[float, float]]
) -> float:
    """USD for this usage; a dated model name ("gpt-4o-mini-2024-07-18") uses its family."""
    family = max((name for name in prices if model.startswith(name)), key=len, default=None)
    if family is None:
        return 0.0
    per_in, per_out = prices[family]
    return round((tokens_in * per_in + tokens_out * per_out) / 1_000_000, 8)


# ---------------------------------------------------------------- circuit breaker


class CircuitOpen(Exception):
    """The model's circuit is open: the call was not made."""


class CircuitBreaker:
    """closed -> (N consecutive failures) -> open -> (T seconds) -> half-open -> one probe.

    A successful probe closes the circuit; a failed one opens it for another T.
    """

    def __init__(
        self,
        *,
        failures: int = 5,
        reset_after: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if failures < 1 or reset_after <= 0:
            raise ValueError("failures >= 1 and reset_after > 0 are required")
        self._threshold = failures
        self._reset_after = reset_after
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None
        self._probing = False

    @property
    def state(self) -> str:
        if self._opened_at is None:
            return "closed"
        if self._probing or self._clock() - self._opened_at >= self._reset_after:
            return "half_open"
        return "open"

    def allow(self) -> bool:
        """May a call go out now? In half-open, only one probe at a time."""
        if self._opened_at is None:
            return True
        if self._probing or self._clock() - self._opened_at < self._reset_after:
            return False
        self._probing = True
        return True

    def record_success(self) -> None:
        self._failures = 0
        self._opened_at = None
        self._probing = False

    def record_failure(self) -> None:
        self._failures += 1
        if self._probing or self._failures >= self._threshold:
            self._opened_at = self._clock()
            self._probing = False

    def release(self) -> None:
        """The call ended without telling anything about the server (cancelled)."""
        self._probing = False


# ----------------------------------------------------------------------- adapter


class InvalidOutput(Exception):
    """The model answered, but not with a valid decision."""


@dataclass
class _Spent:
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0


def _transient(exc: BaseException) -> bool:
    if isinstance(exc, openai.APIConnectionError):  # includes APITimeoutError
        return True
    if isinstance(exc, openai.APIStatusError):
        return exc.status_code in (408, 409, 429) or exc.status_code >= 500
    return False


def _retry_after(exc: BaseException | None) -> float | None:
    if not isinstance(exc, openai.APIStatusError):
        return None
    value = exc.response.headers.get("retry-after")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def _failure_code(exc: BaseException) -> str:
    if isinstance(exc, CircuitOpen):
        return "circuit_open"
    if isinstance(exc, openai.APITimeoutError):
        return "timeout"
    if isinstance(exc, openai.APIConnectionError):
        return "connection_error"
    if isinstance(exc, openai.APIStatusError):
        return f"http_{exc.status_code}"
    if isinstance(exc, InvalidOutput):
        return "invalid_output"
    return "error"


def openai_client(
    http: httpx.AsyncClient, api_key: str, base_url: str | None, timeout: float
) -> AsyncOpenAI:
    """The OpenAI client on the caller's `http`, without the library's own retries."""
    return AsyncOpenAI(
        api_key=api_key,
        base_url=base_url or DEFAULT_BASE_URL,
        # openai accepts an httpx.AsyncClient at runtime; its stubs only name httpx2's.
        http_client=cast(Any, http),
        max_retries=0,
        timeout=timeout,
    )


class OpenAILLM:
    """`LLM` over chat completions with retries, a breaker per model and a fallback model.

    `http` is owned by the caller (made and closed in the composition root); the
    adapter never closes it.
    """

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        api_key: str,
        base_url: str | None = None,
        model: str = "gpt-4o-mini",
        fallback_model: str | None = "gpt-4.1-nano",
        timeout: float = 20.0,
        attempts: int = 3,
        backoff: float = 0.5,
        backoff_max: float = 8.0,
        breaker_failures: int = 5,
        breaker_reset: float = 30.0,
        temperature: float = 0.2,
        max_tokens: int = 600,
        prices: Mapping[str, tuple[float, float]] | None = None,
        messages: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if attempts < 1:
            raise ValueError("attempts must be at least 1")
        self._client = openai_client(http, api_key, base_url, timeout)  # tenacity owns retries
        self.model = model
        self.fallback_model = fallback_model if fallback_model != model else None
        self._timeout = timeout
        self._attempts = attempts
        self._jitter = wait_random_exponential(multiplier=backoff, max=backoff_max)
        self._backoff_max = backoff_max
        self._breaker_failures = breaker_failures
        self._breaker_reset = breaker_reset
        self._clock = clock
        self._breakers: dict[str, CircuitBreaker] = {}
        self._temperature = temperature
        self._max_tokens = max_tokens
        self._prices = dict(PRICES if prices is None else prices)
        self._messages = dict(messages or {})

    def breaker(self, model: str) -> CircuitBreaker:
        """The circuit breaker guarding `model` (one per model)."""
        if model not in self._breakers:
            self._breakers[model] = CircuitBreaker(
                failures=self._breaker_failures, reset_after=self._breaker_reset, clock=self._clock
            )
        return self._breakers[model]

    async def complete(self, prompt: Prompt) -> LLMResult:
        """The decision from the model, else the fallback model, else the last resort."""
        started = time.perf_counter()
        spent = _Spent()
        attempts: list[str] = []
        models = [self.model] + ([self.fallback_model] if self.fallback_model else [])
        failure = LLM_FAILURE
        messages = [{"role": m.role, "content": m.content} for m in prompt.messages]
        for model in models:
            try:
                decision, answered_by = await self._ask(model, messages, spent, attempts)
            except (openai.OpenAIError, CircuitOpen, InvalidOutput) as exc:
                failure = _failure_code(exc)
                if not _transient(exc):  # transient ones were logged attempt by attempt
                    attempts.append(f"{model}:{failure}")
                log.warning("LLM %s failed: %s", model, failure)
                continue
            attempts.append(f"{model}:ok")
            return LLMResult(
                decision=decision,
                usage=self._usage(answered_by, spent, started, "ok"),
                attempts=attempts,
            )
        decision = AIDecision(
            reply=bot_message("fallback", self._messages),
            intent="other",
            confidence=0.0,
            should_handoff=True,
            handoff_reason=LLM_FAILURE,
        )
        return LLMResult(
            decision=decision,
            usage=self._usage(models[-1], spent, started, failure),
            failure=failure,
            attempts=attempts,
        )

    async def _ask(
        self, model: str, messages: Sequence[Mapping[str, str]], spent: _Spent, log_: list[str]
    ) -> tuple[AIDecision, str]:
        breaker = self.breaker(model)
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self._attempts),
            wait=self._wait,
            retry=retry_if_exception(_transient),
            reraise=True,
        )
        response: Any = None
        async for attempt in retrying:
            with attempt:
                if not breaker.allow():
                    raise CircuitOpen(model)
                try:
                    response = await self._client.chat.completions.create(
                        model=model,
                        messages=cast(Any, messages),
                        response_format=cast(Any, RESPONSE_FORMAT),
                        temperature=self._temperature,
                        max_tokens=self._max_tokens,
                        timeout=self._timeout,
                    )
                except BaseException as exc:
                    if _transient(exc):
                        breaker.record_failure()
                        log_.append(f"{model}:{_failure_code(exc)}")
                    elif isinstance(exc, openai.APIStatusError):
                        breaker.record_success()  # the server is up; the request was wrong
                    else:
                        breaker.release()
                    raise
                breaker.record_success()
        usage = getattr(response, "usage", None)
        if usage is not None:
            spent.tokens_in += int(usage.prompt_tokens or 0)
            spent.tokens_out += int(usage.completion_tokens or 0)
            spent.cost_usd += estimate_cost(
                str(response.model or model),
                int(usage.prompt_tokens or 0),
                int(usage.completion_tokens or 0),
                self._prices,
            )
        return _decision(response), str(response.model or model)

    def _wait(self, state: RetryCallState) -> float:
        jittered = self._jitter(state)
        exc = state.outcome.exception() if state.outcome is not None else None
        hinted = _retry_after(exc)
        return min(max(jittered, hinted or 0.0), self._backoff_max)

    def _usage(self, model: str, spent: _Spent, started: float, outcome: str) -> Usage:
        seconds = time.perf_counter() - started
        observe_llm(model, outcome, seconds, spent.tokens_in, spent.tokens_out, spent.cost_usd)
        return Usage(
            model=model,
            tokens_in=spent.tokens_in,
            tokens_out=spent.tokens_out,
            latency_ms=int(seconds * 1000),
            cost_usd=round(spent.cost_usd, 8),
        )

    def breaker_states(self) -> dict[str, int]:
        """How many models' breakers are in each state (closed, half_open, open)."""
        counts: dict[str, int] = {}
        for breaker in self._breakers.values():
            counts[breaker.state] = counts.get(breaker.state, 0) + 1
        return counts


def _decision(response: Any) -> AIDecision:
    """The contract out of a chat completion; InvalidOutput when it is not one."""
    try:
        choice = response.choices[0]
    except (AttributeError, IndexError, TypeError) as exc:
        raise InvalidOutput("no choices") from exc
    if choice.finish_reason == "length":
        raise InvalidOutput("answer truncated")
    message = choice.message
    if getattr(message, "refusal", None):
        raise InvalidOutput("model refused")
    content = message.content
    if not isinstance(content, str):
        raise InvalidOutput("no content")
    try:
        return AIDecision.from_dict(json.loads(content))
    except (ValueError, InvalidInput) as exc:
        raise InvalidOutput(str(exc)[:200]) from exc
