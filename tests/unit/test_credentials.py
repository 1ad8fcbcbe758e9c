"""Access tokens (JWT HS256), the argon2 hasher and the API key format."""

from __future__ import annotations

import time
from uuid import uuid4

import jwt
import pytest
from argon2 import PasswordHasher

from urbana.adapters.passwords import Argon2Hasher
from urbana.adapters.tokens import JwtTokens
from urbana.application.access import (
    Principal,
    api_key_token,
    check_password_policy,
    parse_api_key,
    secret_hash,
)
from urbana.domain.errors import InvalidInput, NotAuthenticated
from urbana.domain.user import Role

SECRET = b"s" * 32
# The library's parameters cost ~0.1 s a hash; the tests check behaviour, not cost.
FAST = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)


def principal() -> Principal:
    return Principal(tenant_id=uuid4(), subject_id=uuid4(), role=Role.SUPERVISOR, kind="user")


def test_a_token_names_the_tenant_and_the_user() -> None:
    tokens = JwtTokens(SECRET, ttl_s=900)
    who = principal()
    claims = tokens.read(tokens.issue(who))
    assert (claims.tenant_id, claims.user_id) == (who.tenant_id, who.subject_id)


def test_a_token_carries_the_session_generation_it_was_issued_in() -> None:
    tokens = JwtTokens(SECRET, ttl_s=900)
    who = Principal(uuid4(), uuid4(), Role.ATTENDANT, "user", sessions=4)
    assert tokens.read(tokens.issue(who)).sessions == 4


@pytest.mark.parametrize("sessions", [None, "4", True, 4.0])
def test_a_token_without_an_integer_session_generation_is_refused(sessions: object) -> None:
    claims: dict[str, object] = {"iss": "urbana", "sub": str(uuid4()), "tid": str(uuid4())}
    now = int(time.time())
    claims |= {"iat": now, "exp": now + 60}
    if sessions is not None:
        claims["ses"] = sessions
    with pytest.raises(NotAuthenticated):
        JwtTokens(SECRET, ttl_s=900).read(jwt.encode(claims, SECRET, algorithm="HS256"))


def test_a_token_is_hs256_with_the_role_and_the_expiry() -> None:
    tokens = JwtTokens(SECRET, ttl_s=900)
    token = tokens.issue(principal(), now=1_000_000)
    assert jwt.get_unverified_header(token)["alg"] == "HS256"
    claims = jwt.decode(token, options={"verify_signature": False})
    assert (claims["role"], claims["iat"], claims["exp"]) == ("supervisor", 1_000_000, 1_000_900)


def test_an_expired_token_is_refused() -> None:
    tokens = JwtTokens(SECRET, ttl_s=900)
    token = tokens.issue(principal(), now=time.time() - 901)
    with pytest.raises(NotAuthenticated):
        tokens.read(token)


def test_a_token_read_before_is_refused_once_it_expires() -> None:
    # A process keeps the tokens it has checked, with their expiry: not past it.
    tokens = JwtTokens(SECRET, ttl_s=2)
    who = principal()
    token = tokens.issue(who)
    expires = jwt.decode(token, options={"verify_signature": False})["exp"]
    assert tokens.read(token).user_id == who.subject_id
    assert tokens.read(token).user_id == who.subject_id  # the kept answer
    time.sleep(max(0.0, expires - time.time()) + 0.01)
    with pytest.raises(NotAuthenticated):
        tokens.read(token)


def test_a_token_signed_with_another_secret_is_refused() -> None:
    forged = JwtTokens(b"x" * 32, ttl_s=900).issue(principal())
    with pytest.raises(NotAuthenticated):
        JwtTokens(SECRET, ttl_s=900).read(forged)


def test_a_token_with_alg_none_is_refused() -> None:
    who = principal()
    unsigned = jwt.encode(
        {
            "iss": "urbana",
            "sub": str(who.subject_id),
            "tid": str(who.tenant_id),
            "iat": 1,
            "exp": int(time.time()) + 60,
        },
        key="",
        algorithm="none",
    )
    with pytest.raises(NotAuthenticated):
        JwtTokens(SECRET, ttl_s=900).read(unsigned)


@pytest.mark.parametrize("token", ["", "garbage", "a.b.c"])
def test_a_malformed_token_is_refused(token: str) -> None:
    with pytest.raises(NotAuthenticated):
        JwtTokens(SECRET, ttl_s=900).read(token)


def test_a_token_without_a_tenant_is_refused() -> None:
    token = jwt.encode(
        {"iss": "urbana", "sub": str(uuid4()), "iat": 1, "exp": int(time.time()) + 60},
        SECRET,
        algorithm="HS256",
    )
    with pytest.raises(NotAuthenticated):
        JwtTokens(SECRET, ttl_s=900).read(token)


def test_a_short_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        JwtTokens(b"short", ttl_s=900)


def test_argon2_hashes_verify_only_their_password() -> None:
    hasher = Argon2Hasher(FAST)
    hashed = hasher.hash("correct horse")
    assert hashed.startswith("$argon2id$")
    assert hasher.verify(hashed, "correct horse")
    assert not hasher.verify(hashed, "wrong horse")
    assert hasher.hash("correct horse") != hashed  # salted


def test_argon2_verify_is_false_for_an_erased_or_malformed_hash() -> None:
    hasher = Argon2Hasher(FAST)
    assert not hasher.verify("[erased]", "anything")
    assert not hasher.verify("$argon2id$v=19$broken", "anything")


def test_the_default_hasher_uses_argon2id_with_the_library_parameters() -> None:
    hashed = Argon2Hasher().hash("correct horse")
    assert hashed.startswith("$argon2id$v=19$m=65536,t=3,p=4$")


def test_an_api_key_carries_its_id_and_secret() -> None:
    key_id = uuid4()
    token = api_key_token(key_id, "sekret_with_underscore")
    assert token.startswith("urb_")
    assert parse_api_key(token) == (key_id, "sekret_with_underscore")


@pytest.mark.parametrize("token", ["urb_", "urb_nothex_secret", "urb_" + "0" * 32, "eyJ.x.y"])
def test_what_is_not_an_api_key_is_not_authenticated(token: str) -> None:
    with pytest.raises(NotAuthenticated):
        parse_api_key(token)


def test_the_secret_hash_is_sha256_hex() -> None:
    assert len(secret_hash("abc")) == 64
    assert secret_hash("abc") != secret_hash("abd")


@pytest.mark.parametrize("password", ["short", "x" * 257])
def test_a_password_outside_the_policy_is_refused(password: str) -> None:
    with pytest.raises(InvalidInput):
        check_password_policy(password)
