"""Failed sign-ins counted per email and per client address, on a real Redis."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from uuid import uuid4

import pytest
from redis.asyncio import Redis

from urbana.adapters.embedded import ServiceUrls
from urbana.adapters.rate_limit import RedisAttemptLimiter
from urbana.adapters.redis_coord import redis_client
from urbana.application.login_throttle import LoginLimits, LoginThrottle, TooManyAttempts
from urbana.domain.errors import NotAuthenticated

pytestmark = pytest.mark.integration

LIMITS = LoginLimits(per_email=3, per_address=5, window_s=600)


@pytest.fixture
async def client(services: ServiceUrls) -> AsyncIterator[Redis]:
    made = redis_client(services.redis)
    try:
        yield made
    finally:
        await made.aclose()


@pytest.fixture
def throttle(client: Redis) -> LoginThrottle:
    return LoginThrottle(RedisAttemptLimiter(client, prefix=f"t{uuid4().hex}"), LIMITS)


class Guess:
    """A sign-in that fails (or succeeds), counting how often it was really tried."""

    def __init__(self) -> None:
        self.tried = 0

    async def wrong(self) -> str:
        self.tried += 1
        raise NotAuthenticated("wrong email or password")

    async def right(self) -> str:
        self.tried += 1
        return "signed in"


async def fail(throttle: LoginThrottle, email: str, address: str, guess: Guess) -> None:
    with pytest.raises(NotAuthenticated):
        await throttle.attempt(email, address, guess.wrong)


async def test_past_the_email_limit_even_the_right_password_is_refused_untried(
    throttle: LoginThrottle,
) -> None:
    guess = Guess()
    for _ in range(LIMITS.per_email):
        await fail(throttle, "Ana@Example.com", "10.0.0.1", guess)
    with pytest.raises(TooManyAttempts) as refused:
        await throttle.attempt("ana@example.com ", "10.0.0.2", guess.right)
    assert refused.value.status == 429
    assert refused.value.retry_after is not None
    assert 0 < refused.value.retry_after <= LIMITS.window_s
    assert guess.tried == LIMITS.per_email  # the refused one never reached the password
    # Another email from the same address is still let through.
    assert await throttle.attempt("bia@example.com", "10.0.0.1", guess.right) == "signed in"


async def test_past_the_address_limit_every_email_from_it_is_refused(
    throttle: LoginThrottle,
) -> None:
    guess = Guess()
    for n in range(LIMITS.per_address):
        await fail(throttle, f"u{n}@example.com", "10.0.0.9", guess)
    with pytest.raises(TooManyAttempts):
        await throttle.attempt("fresh@example.com", "10.0.0.9", guess.right)
    assert await throttle.attempt("fresh@example.com", "10.0.0.10", guess.right) == "signed in"


async def test_sign_ins_that_succeed_are_not_counted(throttle: LoginThrottle) -> None:
    guess = Guess()
    for _ in range(3 * LIMITS.per_email):
        assert await throttle.attempt("ana@example.com", "10.0.0.1", guess.right) == "signed in"
    for _ in range(LIMITS.per_email - 1):
        await fail(throttle, "ana@example.com", "10.0.0.1", guess)
    assert await throttle.attempt("ana@example.com", "10.0.0.1", guess.right) == "signed in"


async def test_a_refusal_on_the_address_does_not_count_on_the_email(
    throttle: LoginThrottle,
) -> None:
    guess = Guess()
    for n in range(LIMITS.per_address):
        await fail(throttle, f"u{n}@example.com", "10.0.0.7", guess)
    for _ in range(LIMITS.per_email + 2):  # refused by the address, before the password
        with pytest.raises(TooManyAttempts):
            await throttle.attempt("ana@example.com", "10.0.0.7", guess.wrong)
    assert await throttle.attempt("ana@example.com", "10.0.0.8", guess.right) == "signed in"


async def test_the_counter_forgets_attempts_older_than_the_window(client: Redis) -> None:
    limiter = RedisAttemptLimiter(client, prefix=f"t{uuid4().hex}")
    assert await limiter.take("k", 1, 0.2, "a") == 0
    assert 0 < await limiter.take("k", 1, 0.2, "b") <= 0.2
    # Waiting for a condition, not a fixed sleep: the window slides past "a".
    for _ in range(200):
        if await limiter.take("k", 1, 0.2, "c") == 0:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the attempt never left the window")
