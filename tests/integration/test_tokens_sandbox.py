"""Access tokens against the sandbox: caching, refresh, rejection and endpoint faults.

Connections go through ``securemysql.ConnectionFactory`` with the real azure-identity
``DefaultAzureCredential``, which the sandbox's environment points at its loopback
managed identity endpoint. ``sandbox.identity`` counts the token requests and
``sandbox.verifier`` counts the logins that reached the server.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Optional

import pytest
from azure.core.credentials import AccessToken as CoreAccessToken

import securemysql
from securemysql.errors import (
    AuthenticationError,
    MalformedTokenError,
    TokenAcquisitionError,
    TokenAudienceError,
    TokenExpiredError,
)
from securemysql.sandbox import Fault, Sandbox
from securemysql.tokens import SCOPE_CHINA, TokenProvider, decode_claims

pytestmark = pytest.mark.integration

WAIT = 120.0  # upper bound for waiting on threads; never reached when the code works
TOKEN_TIMEOUT = 2.0


# --- Helpers --------------------------------------------------------------------------


def make_factory(sandbox: Sandbox, **overrides: Any) -> securemysql.ConnectionFactory:
    """Return a factory for the sandbox's token user, without retries unless overridden."""
    info = sandbox.info
    arguments: dict[str, Any] = {
        "user": info.user,
        "port": info.port,
        "database": info.database,
        "ssl_ca": info.ssl_ca,
        "retry": securemysql.RetryPolicy.disabled(),
    }
    arguments.update(overrides)
    return securemysql.ConnectionFactory(info.host, **arguments)


def current_user(connection: Any) -> str:
    cursor = connection.cursor()
    cursor.execute("SELECT CURRENT_USER()")
    user = str(cursor.fetchone()[0])
    cursor.close()
    return user


def wait_until_time(epoch_seconds: float) -> None:
    """Sleep until the wall clock has passed ``epoch_seconds``."""
    while time.time() <= epoch_seconds:
        time.sleep(min(0.2, max(0.01, epoch_seconds - time.time())))


class LoginCounts:
    """The verifier's accepted and rejected logins since this object was made."""

    def __init__(self, sandbox: Sandbox) -> None:
        self._sandbox = sandbox
        self._accepted = sandbox.verifier.accepted
        self._rejected = len(sandbox.verifier.rejections)

    @property
    def accepted(self) -> int:
        return self._sandbox.verifier.accepted - self._accepted

    @property
    def rejections(self) -> list[tuple[str, str]]:
        return self._sandbox.verifier.rejections[self._rejected :]


class FixedTokenCredential:
    """A credential that returns a token from ``make_token`` on every call, and counts calls."""

    def __init__(self, make_token: Any) -> None:
        self._make_token = make_token
        self.calls: list[Optional[str]] = []

    def get_token(self, *scopes: str, claims: Optional[str] = None, **kwargs: Any) -> Any:
        self.calls.append(claims)
        token = self._make_token()
        expires_on = int(decode_claims("".join(token.split()))["exp"])
        return CoreAccessToken(token, expires_on)


@pytest.fixture(scope="module")
def isolated_sandbox() -> Iterator[Sandbox]:
    """A sandbox of this module's own for endpoint faults.

    A token fetch that a test abandons after its time-out keeps running in a daemon
    thread, and azure-core keeps retrying it for seconds. Those requests reach only
    this sandbox, so they cannot change the request counts of other tests.
    """
    with Sandbox() as sandbox:
        yield sandbox


@pytest.fixture
def faulty_sandbox(isolated_sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> Iterator[Sandbox]:
    """The isolated sandbox with azure-identity pointed at it; faults are cleared afterwards."""
    for name, value in isolated_sandbox.identity.environment().items():
        monkeypatch.setenv(name, value)
    lifetime = isolated_sandbox.identity.token_lifetime

    yield isolated_sandbox

    isolated_sandbox.identity.clear_fault()
    isolated_sandbox.identity.token_lifetime = lifetime


# --- Caching and refresh --------------------------------------------------------------


def test_cold_cache_64_threads_one_request(sandbox: Sandbox) -> None:
    factory = make_factory(sandbox)
    barrier = threading.Barrier(64)

    def open_connection() -> Any:
        barrier.wait(WAIT)
        return factory()

    with ThreadPoolExecutor(max_workers=64) as pool:
        futures = [pool.submit(open_connection) for _ in range(64)]
        connections = [future.result(WAIT) for future in futures]

    try:
        assert sandbox.identity.request_count == 1
        assert factory.tokens.fetch_count == 1
        assert {current_user(connection) for connection in connections} == {"sandbox-app@%"}
    finally:
        for connection in connections:
            connection.close()


@pytest.mark.slow
def test_refresh_rate_follows_token_lifetime(sandbox: Sandbox) -> None:
    lifetime = 8.0
    run_seconds = 30.0
    sandbox.identity.token_lifetime = lifetime
    factory = make_factory(sandbox)

    connections = 0
    start = time.monotonic()
    while time.monotonic() - start < run_seconds:
        factory().close()
        connections += 1
        time.sleep(0.1)
    elapsed = time.monotonic() - start

    # The documented margin is min(300, lifetime / 4); the cache refreshes at the
    # first connection after expires_on - margin. The endpoint rounds expiry to whole
    # seconds (up to 1 s either way), and a refresh comes up to one connection's time
    # (at most 2 s here) after it is due.
    margin = min(300.0, lifetime / 4)
    fewest = 1 + int(elapsed // (lifetime + 1 - margin + 2))
    most = 1 + int(elapsed // (lifetime - 1 - margin)) + 1
    requests = sandbox.identity.request_count
    assert connections > most  # else one request per connection would pass too
    assert fewest <= requests <= most
    assert factory.tokens.fetch_count == requests


def test_expired_token_connections_keep_working(sandbox: Sandbox) -> None:
    sandbox.identity.token_lifetime = 6.0
    factory = make_factory(sandbox)
    logins = LoginCounts(sandbox)

    old_connections = [factory() for _ in range(3)]
    old_token = factory.tokens.get_token()
    assert sandbox.identity.request_count == 1

    wait_until_time(old_token.expires_on)
    new_connections = [factory() for _ in range(3)]
    new_token = factory.tokens.get_token()

    try:
        assert new_token.token != old_token.token
        assert new_token.fetched_at > old_token.expires_on
        assert sandbox.identity.request_count == 2
        assert logins.accepted == 6
        assert logins.rejections == []
        # MySQL checks the token only at login: sessions outlive it.
        for connection in old_connections + new_connections:
            assert current_user(connection) == "sandbox-app@%"
    finally:
        for connection in old_connections + new_connections:
            connection.close()


# --- Tokens the server rejects --------------------------------------------------------


def test_rejected_token_refreshed_once(sandbox: Sandbox) -> None:
    factory = make_factory(sandbox)
    factory().close()
    assert sandbox.identity.request_count == 1

    sandbox.rotate_signing_key()
    logins = LoginCounts(sandbox)
    connection = factory()

    try:
        assert current_user(connection) == "sandbox-app@%"
        assert sandbox.identity.request_count == 2
        assert len(logins.rejections) == 1
        assert "InvalidSignatureError" in logins.rejections[0][1]
        assert logins.accepted == 1
    finally:
        connection.close()


def test_second_rejection_raises_authentication_error(sandbox: Sandbox) -> None:
    credential = FixedTokenCredential(lambda: sandbox.mint_token(wrong_key=True))
    factory = make_factory(sandbox, credential=credential)
    logins = LoginCounts(sandbox)

    with pytest.raises(AuthenticationError) as info:
        factory()

    assert info.value.user == "sandbox-app"
    assert info.value.errno == 1045
    assert "'sandbox-app'" in str(info.value)
    assert len(credential.calls) == 2
    assert credential.calls[1] is not None  # the refresh sent a claims challenge
    assert len(logins.rejections) == 2
    assert logins.accepted == 0
    assert sandbox.identity.request_count == 0


# --- Tokens caught before connecting --------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "error_class", "message_part"),
    [
        (Fault.WRONG_AUDIENCE, TokenAudienceError, "audience 'https://management.azure.com'"),
        (Fault.EXPIRED_TOKEN, TokenExpiredError, "access token expired at"),
    ],
)
def test_bad_endpoint_token_not_sent(
    sandbox: Sandbox, fault: Fault, error_class: type[Exception], message_part: str
) -> None:
    factory = make_factory(sandbox)
    sandbox.identity.inject_fault(fault)
    logins = LoginCounts(sandbox)

    with pytest.raises(error_class) as info:
        factory()

    assert message_part in str(info.value)
    assert "eyJ" not in str(info.value)
    assert logins.accepted == 0
    assert logins.rejections == []


def test_token_with_whitespace_not_sent(sandbox: Sandbox) -> None:
    def broken_token() -> str:
        token = sandbox.mint_token()
        return f"{token[:40]}\n{token[40:]}"

    factory = make_factory(sandbox, credential=FixedTokenCredential(broken_token))
    logins = LoginCounts(sandbox)

    with pytest.raises(MalformedTokenError) as info:
        factory()

    assert "whitespace at offset 40" in str(info.value)
    assert logins.accepted == 0
    assert logins.rejections == []


# --- Identities and clouds ------------------------------------------------------------


def test_user_assigned_identity_by_client_id(sandbox: Sandbox) -> None:
    info = sandbox.info
    environment = dict(os.environ)

    factory = make_factory(
        sandbox,
        user=info.user_assigned_user,
        managed_identity_client_id=info.user_assigned_client_id,
    )
    connection = factory()

    try:
        assert current_user(connection) == "sandbox-uami@%"
        assert factory.tokens.get_token().claims["appid"] == info.user_assigned_client_id
        assert dict(os.environ) == environment
    finally:
        connection.close()


def test_china_scope_rejected_by_public_server(sandbox: Sandbox) -> None:
    # The sandbox's endpoint issues tokens for whatever resource is requested, so
    # the client-side audience check passes, and the server, which expects the
    # public-cloud audience, rejects the token.
    factory = make_factory(sandbox, cloud="china")
    logins = LoginCounts(sandbox)

    with pytest.raises(AuthenticationError) as info:
        factory()

    assert factory.tokens.scope == SCOPE_CHINA
    assert "'sandbox-app'" in str(info.value)
    assert SCOPE_CHINA in str(info.value)
    assert [reason for _user, reason in logins.rejections] == [
        "InvalidAudienceError: Audience doesn't match"
    ] * 2
    assert sandbox.identity.request_count == 2


# --- Endpoint faults ------------------------------------------------------------------

ENDPOINT_FAULTS = [Fault.HTTP_500, Fault.HTTP_429, Fault.DELAY, Fault.MALFORMED_JSON]


@pytest.mark.parametrize("fault", ENDPOINT_FAULTS)
def test_endpoint_fault_serves_cached_token(
    faulty_sandbox: Sandbox, fault: Fault, caplog: pytest.LogCaptureFixture
) -> None:
    # A 120 s token with a 117 s refresh margin is due for refresh about 3 s after
    # the fetch, and usable for 108 s (gap min(30, 120 / 10, 117) = 12 s).
    faulty_sandbox.identity.token_lifetime = 120.0
    provider = TokenProvider(refresh_margin=117.0, timeout=TOKEN_TIMEOUT)
    factory = make_factory(faulty_sandbox, token_provider=provider)
    factory().close()
    cached = provider.get_token()

    faulty_sandbox.identity.inject_fault(fault, delay=30.0)
    wait_until_time(cached.expires_on - 117.0)
    with caplog.at_level(logging.WARNING, logger="securemysql.tokens"):
        connections = [factory() for _ in range(3)]

    try:
        for connection in connections:
            assert current_user(connection) == "sandbox-app@%"
        assert provider.get_token().token == cached.token
        assert provider.fetch_count == 2  # one failed refresh, then a pause before the next
        assert any("serving the cached token" in r.getMessage() for r in caplog.records)
    finally:
        for connection in connections:
            connection.close()
        provider.close()


@pytest.mark.parametrize(
    ("fault", "message_part"),
    [
        (Fault.HTTP_500, "returned HTTP 500"),
        (Fault.HTTP_429, "returned HTTP 429"),
        (Fault.DELAY, f"within {TOKEN_TIMEOUT:g} s"),
        (Fault.MALFORMED_JSON, "not valid JSON"),
    ],
)
def test_endpoint_fault_without_cached_token(
    faulty_sandbox: Sandbox, fault: Fault, message_part: str
) -> None:
    factory = make_factory(faulty_sandbox, token_timeout=TOKEN_TIMEOUT)
    faulty_sandbox.identity.inject_fault(fault, delay=30.0)
    logins = LoginCounts(faulty_sandbox)

    start = time.monotonic()
    with pytest.raises(TokenAcquisitionError) as info:
        factory()
    elapsed = time.monotonic() - start

    # With retries disabled, the retry layer raises the token error itself.
    error = info.value
    assert error.transient is True
    assert error.credential == "DefaultAzureCredential"
    assert message_part in str(error)
    assert "Likely fix:" in str(error)
    assert elapsed < 3 * TOKEN_TIMEOUT  # the delayed endpoint responds only after 30 s
    assert logins.accepted == 0
    assert logins.rejections == []


def test_repeated_endpoint_failure_stays_transient(faulty_sandbox: Sandbox) -> None:
    factory = make_factory(faulty_sandbox, token_timeout=30.0)
    faulty_sandbox.identity.inject_fault(Fault.HTTP_500)
    with pytest.raises(TokenAcquisitionError) as first:
        factory()

    # MSAL repeats the endpoint's 500 for 5 s without sending a request.
    with pytest.raises(TokenAcquisitionError) as second:
        factory()

    assert "returned HTTP 500" in str(first.value)
    error = second.value
    assert error.transient is True
    assert "repeated an earlier failure without sending a request" in str(error)
    assert "server error" in str(error)
