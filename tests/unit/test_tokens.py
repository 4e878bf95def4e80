"""Unit tests for securemysql.tokens: scopes, token checks and the caching TokenProvider.

Credentials are fakes driven by controllable clocks; fake JWTs are base64url-encoded
JSON without a real signature. The only network use is a loopback HTTP server
(127.0.0.1) that plays the App Service managed identity endpoint for the real
azure-identity credentials.
"""

from __future__ import annotations

import base64
import http.server
import itertools
import json
import logging
import os
import socketserver
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any, Callable, ClassVar, Optional, Union

import pytest
from azure.core.credentials import AccessToken as CoreAccessToken
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ServiceRequestError,
    ServiceResponseError,
)

from securemysql import redaction
from securemysql.errors import (
    ConfigurationError,
    InvalidTokenError,
    MalformedTokenError,
    TokenAcquisitionError,
    TokenAudienceError,
    TokenExpiredError,
)
from securemysql.tokens import (
    CLOUD_SCOPES,
    SCOPE_CHINA,
    SCOPE_PUBLIC,
    SCOPE_US_GOVERNMENT,
    AccessToken,
    TokenProvider,
    audience_for_scope,
    check_token,
    cloud_for_host,
    decode_claims,
    resolve_scope,
)

AUDIENCE = "https://ossrdbms-aad.database.windows.net"
START = 1_700_000_000.0
WAIT = 10.0  # upper bound for waiting on threads; never reached when the code works

_serial = itertools.count(1)


# --- Helpers --------------------------------------------------------------------------


def b64url(value: Any) -> str:
    raw = json.dumps(value).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def make_jwt(**claims: Any) -> str:
    """Return an unsigned JWT-shaped token; each call differs (claim "n")."""
    payload = {"aud": AUDIENCE, "oid": "oid-1", "tid": "tid-1", "n": next(_serial), **claims}
    return f"{b64url({'alg': 'RS256', 'typ': 'JWT'})}.{b64url(payload)}.c2lnbmF0dXJl"


class FakeClock:
    """Wall and monotonic clocks that move only when a test moves them; advance() moves both."""

    def __init__(self) -> None:
        self.wall = START
        self.mono = 1000.0

    def time(self) -> float:
        return self.wall

    def monotonic(self) -> float:
        return self.mono

    def advance(self, seconds: float) -> None:
        self.wall += seconds
        self.mono += seconds

    def token(
        self, lifetime: float = 3600.0, *, issued_ago: Optional[float] = 0.0, **claims: Any
    ) -> CoreAccessToken:
        """Return a credential result expiring ``lifetime`` s from now."""
        expires = int(self.wall + lifetime)
        if issued_ago is not None:
            claims.setdefault("iat", int(self.wall - issued_ago))
        return CoreAccessToken(make_jwt(exp=expires, **claims), expires)


Response = Union[CoreAccessToken, BaseException, Callable[[Optional[str]], CoreAccessToken]]


class FakeCredential:
    """A TokenCredential whose results the test sets; records every call's claims argument.

    ``respond`` is a token, an exception to raise, or a function of the claims
    argument. ``gate``, when set, blocks each call until the gate opens.
    """

    def __init__(self, respond: Response, *, gate: Optional[threading.Event] = None) -> None:
        self.respond = respond
        self.gate = gate
        self.entered = threading.Event()
        self.calls: list[Optional[str]] = []
        self.scopes: list[tuple[str, ...]] = []
        self._lock = threading.Lock()

    def get_token(
        self,
        *scopes: str,
        claims: Optional[str] = None,
        tenant_id: Optional[str] = None,
        enable_cae: bool = False,
        **kwargs: Any,
    ) -> CoreAccessToken:
        with self._lock:
            self.calls.append(claims)
            self.scopes.append(scopes)
        self.entered.set()
        if self.gate is not None:
            assert self.gate.wait(WAIT), "test never opened the gate"
        respond = self.respond
        if isinstance(respond, BaseException):
            raise respond
        if callable(respond):
            return respond(claims)
        return respond


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def providers() -> Iterator[list[TokenProvider]]:
    """Collect providers that a test creates and close them afterwards."""
    created: list[TokenProvider] = []
    yield created
    for provider in created:
        provider.close()


@pytest.fixture
def make_provider(clock: FakeClock, providers: list[TokenProvider]) -> Callable[..., TokenProvider]:
    def factory(credential: Any, **options: Any) -> TokenProvider:
        options.setdefault("clock", clock.time)
        options.setdefault("monotonic", clock.monotonic)
        provider = TokenProvider(credential, **options)
        providers.append(provider)
        return provider

    return factory


def run_threads(count: int, target: Callable[[], Any]) -> list[Any]:
    """Run ``target`` in ``count`` threads started together; return results or exceptions."""
    barrier = threading.Barrier(count)
    results: list[Any] = [None] * count

    def worker(index: int) -> None:
        barrier.wait()
        try:
            results[index] = target()
        except BaseException as exc:
            results[index] = exc

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)
        assert not thread.is_alive()
    return results


def wait_until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


# --- Scopes ---------------------------------------------------------------------------


def test_cloud_scopes_have_three_clouds() -> None:
    assert dict(CLOUD_SCOPES) == {
        "public": SCOPE_PUBLIC,
        "china": SCOPE_CHINA,
        "usgovernment": SCOPE_US_GOVERNMENT,
    }


@pytest.mark.parametrize(
    ("cloud", "expected"),
    [
        ("public", SCOPE_PUBLIC),
        ("AzureCloud", SCOPE_PUBLIC),
        ("PUBLIC", SCOPE_PUBLIC),
        ("china", SCOPE_CHINA),
        ("AzureChinaCloud", SCOPE_CHINA),
        ("usgovernment", SCOPE_US_GOVERNMENT),
        ("AzureUSGovernment", SCOPE_US_GOVERNMENT),
        ("us-government", SCOPE_US_GOVERNMENT),
    ],
)
def test_resolve_scope_by_cloud(cloud: str, expected: str) -> None:
    assert resolve_scope(cloud=cloud) == expected


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("srv.mysql.database.azure.com", SCOPE_PUBLIC),
        ("SRV.MySQL.Database.Azure.COM.", SCOPE_PUBLIC),
        ("srv.privatelink.mysql.database.azure.com", SCOPE_PUBLIC),
        ("srv.mysql.database.chinacloudapi.cn", SCOPE_CHINA),
        ("srv.mysql.database.usgovcloudapi.net", SCOPE_US_GOVERNMENT),
        ("10.0.0.4", SCOPE_PUBLIC),
        ("db.example.com", SCOPE_PUBLIC),
    ],
)
def test_resolve_scope_by_host(host: str, expected: str) -> None:
    assert resolve_scope(host=host) == expected


@pytest.mark.parametrize(
    ("host", "cloud"),
    [
        ("myserver.mysql.database.azure.com", "public"),
        (" MyServer.MySQL.Database.Azure.com. ", "public"),
        ("myserver.privatelink.mysql.database.azure.com", "public"),
        ("myserver.mysql.database.chinacloudapi.cn", "china"),
        ("myserver.mysql.database.usgovcloudapi.net", "usgovernment"),
        ("mysql.database.azure.com.example.com", None),
        ("db.example.com", None),
        ("10.0.0.4", None),
        ("", None),
    ],
)
def test_cloud_for_host(host: str, cloud: Optional[str]) -> None:
    assert cloud_for_host(host) == cloud


def test_resolve_scope_precedence() -> None:
    china_host = "srv.mysql.database.chinacloudapi.cn"
    assert resolve_scope() == SCOPE_PUBLIC
    assert resolve_scope(cloud="usgovernment", host=china_host) == SCOPE_US_GOVERNMENT
    assert resolve_scope(scope="api://custom/.default", cloud="china") == "api://custom/.default"


def test_resolve_scope_unknown_cloud() -> None:
    with pytest.raises(ConfigurationError) as info:
        resolve_scope(cloud="mars")
    assert "mars" in str(info.value)
    for name in ("public", "china", "usgovernment"):
        assert name in str(info.value)
    with pytest.raises(ConfigurationError):
        resolve_scope(scope=SCOPE_PUBLIC, cloud="mars")


def test_resolve_scope_rejects_empty_scope() -> None:
    with pytest.raises(ConfigurationError):
        resolve_scope(scope="  ")


@pytest.mark.parametrize(
    ("host", "cloud", "expected"),
    [
        ("srv.mysql.database.chinacloudapi.cn", None, SCOPE_CHINA),
        ("srv.mysql.database.usgovcloudapi.net", None, SCOPE_US_GOVERNMENT),
        ("srv.mysql.database.azure.com", None, SCOPE_PUBLIC),
        ("10.0.0.4", "AzureChinaCloud", SCOPE_CHINA),
        ("srv.mysql.database.azure.com", "usgovernment", SCOPE_US_GOVERNMENT),
    ],
)
def test_factory_scope_from_host_or_cloud(host: str, cloud: Optional[str], expected: str) -> None:
    from securemysql.factory import ConnectionFactory

    factory = ConnectionFactory(host, "app-user", cloud=cloud)

    assert factory.tokens.scope == expected


def test_audience_for_scope() -> None:
    assert audience_for_scope(SCOPE_PUBLIC) == AUDIENCE
    assert audience_for_scope(SCOPE_CHINA) == "https://ossrdbms-aad.database.chinacloudapi.cn"
    assert audience_for_scope("api://custom") == "api://custom"


# --- decode_claims and check_token ----------------------------------------------------


def test_decode_claims_reads_payload() -> None:
    token = make_jwt(exp=123, upn="a@example.com")
    claims = decode_claims(token)
    assert claims["exp"] == 123
    assert claims["upn"] == "a@example.com"
    assert decode_claims(f"  {token}\n") == claims


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "not-a-jwt",
        "a.b",
        "eyJhbGciOiJub25lIn0.e30.x.y.z",
        "eyJhbGciOiJub25lIn0.!!!!.sig",
        f"eyJhbGciOiJub25lIn0.{base64.urlsafe_b64encode(b'not json').decode().rstrip('=')}.s",
        f"eyJhbGciOiJub25lIn0.{b64url([1, 2])}.sig",
        f"{b64url('header')}.{b64url({'aud': 'x'})}.sig",
        f".{b64url({'aud': 'x'})}.sig",
    ],
)
def test_decode_claims_rejects_malformed(bad: str) -> None:
    with pytest.raises(MalformedTokenError) as info:
        decode_claims(bad)
    if len(bad) > 5:
        assert bad not in str(info.value)


def test_decode_claims_rejects_non_string() -> None:
    with pytest.raises(MalformedTokenError):
        decode_claims(b"abc.def.ghi")  # type: ignore[arg-type]


def test_check_token_strips_and_accepts() -> None:
    token = make_jwt(exp=START + 60)
    assert check_token(f" \t{token}\r\n", scope=SCOPE_PUBLIC, now=START) == token


def test_check_token_accepts_audience_list() -> None:
    token = make_jwt(exp=START + 60, aud=["other", AUDIENCE])
    assert check_token(token, scope=SCOPE_PUBLIC, now=START) == token


def test_check_token_inner_whitespace() -> None:
    token = make_jwt(exp=START + 60)
    broken = token[:20] + "\n" + token[20:]
    with pytest.raises(MalformedTokenError) as info:
        check_token(broken, scope=SCOPE_PUBLIC, now=START)
    assert "whitespace" in str(info.value)
    assert token[:20] not in str(info.value)


def test_check_token_not_a_jwt() -> None:
    with pytest.raises(MalformedTokenError):
        check_token("opaque-token-value", scope=SCOPE_PUBLIC, now=START)


def test_check_token_missing_exp() -> None:
    token = f"{b64url({'alg': 'none'})}.{b64url({'aud': AUDIENCE})}."
    with pytest.raises(MalformedTokenError) as info:
        check_token(token, scope=SCOPE_PUBLIC, now=START)
    assert "exp" in str(info.value)


def test_check_token_wrong_audience() -> None:
    token = make_jwt(exp=START + 60, aud="https://management.azure.com")
    with pytest.raises(TokenAudienceError) as info:
        check_token(token, scope=SCOPE_CHINA, now=START)
    message = str(info.value)
    assert SCOPE_CHINA in message
    assert "https://management.azure.com" in message
    assert token not in message


def test_check_token_missing_audience() -> None:
    token = f"{b64url({'alg': 'none'})}.{b64url({'exp': START + 60})}."
    with pytest.raises(TokenAudienceError):
        check_token(token, scope=SCOPE_PUBLIC, now=START)


def test_check_token_expired() -> None:
    token = make_jwt(exp=START)  # 2023-11-14 22:13:20 UTC
    with pytest.raises(TokenExpiredError) as info:
        check_token(token, scope=SCOPE_PUBLIC, now=START)
    assert "2023-11-14 22:13:20 UTC" in str(info.value)
    assert token not in str(info.value)
    assert check_token(token, scope=SCOPE_PUBLIC, now=START - 0.001) == token


def test_check_token_errors_are_distinct() -> None:
    classes = {MalformedTokenError, TokenAudienceError, TokenExpiredError}
    for error_class in classes:
        assert issubclass(error_class, InvalidTokenError)
        assert not any(issubclass(error_class, other) for other in classes - {error_class})


# --- AccessToken ----------------------------------------------------------------------


def test_access_token_hides_token() -> None:
    token = make_jwt(exp=START + 60, appid="app-1")
    access = AccessToken(token, START + 60, decode_claims(token), START)
    for text in (repr(access), str(access), f"{access}", repr([access])):
        assert token not in text
        assert "oid=oid-1" in text


def test_access_token_identity() -> None:
    claims = {"oid": "o", "appid": "a", "azp": "z", "upn": "u@x", "tid": "t"}
    assert AccessToken("x", 1.0, claims, 0.0).identity == "oid=o appid=a upn=u@x tid=t"
    assert AccessToken("x", 1.0, {"azp": "z"}, 0.0).identity == "azp=z"
    assert AccessToken("x", 1.0, {}, 0.0).identity == "unknown identity"


def test_access_token_claims_read_only() -> None:
    source = {"oid": "o"}
    access = AccessToken("x", 1.0, source, 0.0)
    source["oid"] = "changed"
    assert access.claims["oid"] == "o"
    with pytest.raises(TypeError):
        access.claims["oid"] = "p"  # type: ignore[index]


# --- TokenProvider: construction ------------------------------------------------------


def test_provider_is_lazy_by_default(clock: FakeClock, make_provider: Any) -> None:
    credential = FakeCredential(clock.token())
    provider = make_provider(credential)
    assert provider.fetch_count == 0
    assert provider.credential_name == "FakeCredential"
    provider.get_token()
    assert credential.scopes == [(SCOPE_PUBLIC,)]


def test_provider_prefetch(clock: FakeClock, make_provider: Any) -> None:
    credential = FakeCredential(clock.token())
    provider = make_provider(credential, prefetch=True)
    assert provider.fetch_count == 1


def test_provider_prefetch_failure_raises(clock: FakeClock) -> None:
    credential = FakeCredential(ServiceRequestError("connection refused"))
    with pytest.raises(TokenAcquisitionError):
        TokenProvider(credential, prefetch=True, clock=clock.time, monotonic=clock.monotonic)


def test_provider_scope_from_host(clock: FakeClock, make_provider: Any) -> None:
    token = clock.token(aud="https://ossrdbms-aad.database.chinacloudapi.cn")
    credential = FakeCredential(token)
    provider = make_provider(credential, host="srv.mysql.database.chinacloudapi.cn")
    assert provider.scope == SCOPE_CHINA
    provider.get_token()
    assert credential.scopes == [(SCOPE_CHINA,)]


@pytest.mark.parametrize(
    "options",
    [
        {"timeout": 0},
        {"timeout": -1.0},
        {"timeout": float("nan")},
        {"refresh_margin": -1},
        {"refresh_margin": float("inf")},
        {"cloud": "mars"},
    ],
)
def test_provider_rejects_bad_options(options: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        TokenProvider(FakeCredential(ServiceRequestError("unused")), **options)


def test_provider_rejects_client_id_with_credential() -> None:
    with pytest.raises(ConfigurationError) as info:
        TokenProvider(FakeCredential(ServiceRequestError("unused")), managed_identity_client_id="x")
    assert "ambiguous" in str(info.value)


def test_import_does_not_import_azure_identity() -> None:
    code = "import sys, securemysql.tokens; print('azure.identity' in sys.modules)"
    output = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert output.strip() == "False"


# --- TokenProvider: expiry and margins ------------------------------------------------


def test_expiry_is_credential_expiry_when_earlier(clock: FakeClock, make_provider: Any) -> None:
    jwt = make_jwt(exp=int(clock.wall + 3600), iat=int(clock.wall))
    credential = FakeCredential(CoreAccessToken(jwt, int(clock.wall + 1800)))
    assert make_provider(credential).get_token().expires_on == clock.wall + 1800


def test_expiry_is_jwt_exp_when_earlier(clock: FakeClock, make_provider: Any) -> None:
    jwt = make_jwt(exp=int(clock.wall + 1200), iat=int(clock.wall))
    credential = FakeCredential(CoreAccessToken(jwt, int(clock.wall + 3600)))
    token = make_provider(credential).get_token()
    assert token.expires_on == clock.wall + 1200
    assert token.fetched_at == clock.wall


def test_credential_reporting_expired_token(clock: FakeClock, make_provider: Any) -> None:
    jwt = make_jwt(exp=int(clock.wall + 3600))
    credential = FakeCredential(CoreAccessToken(jwt, int(clock.wall - 1)))
    with pytest.raises(TokenExpiredError):
        make_provider(credential).get_token()


@pytest.mark.parametrize(
    ("lifetime", "issued_ago", "margin_option", "expected_margin"),
    [
        (3600.0, 0.0, None, 300.0),  # long token: 300 s
        (1200.0, 0.0, None, 300.0),  # lifetime / 4 == 300 exactly
        (400.0, 0.0, None, 100.0),  # short token: lifetime / 4
        (300.0, 0.0, None, 75.0),  # 5-minute token
        (600.0, 3000.0, None, 300.0),  # from a credential cache: lifetime from iat
        (600.0, None, None, 150.0),  # no iat: lifetime from fetch
        (3600.0, 0.0, 60.0, 60.0),  # explicit margin
    ],
)
def test_refresh_margin_edges(
    clock: FakeClock,
    make_provider: Any,
    lifetime: float,
    issued_ago: Optional[float],
    margin_option: Optional[float],
    expected_margin: float,
) -> None:
    first = clock.token(lifetime, issued_ago=issued_ago)
    credential = FakeCredential(first)
    provider = make_provider(credential, refresh_margin=margin_option)
    assert provider.get_token().token == first.token

    clock.advance(lifetime - expected_margin - 0.001)
    assert provider.get_token().token == first.token
    assert provider.fetch_count == 1

    second = clock.token(3600)
    credential.respond = second
    clock.advance(0.001)
    assert provider.get_token().token == second.token
    assert provider.fetch_count == 2


def test_wall_clock_set_back_does_not_extend_token(clock: FakeClock, make_provider: Any) -> None:
    first = clock.token(3600)
    credential = FakeCredential(first)
    provider = make_provider(credential)
    provider.get_token()

    clock.mono += 3300  # real time passes; the wall clock was set back by as much
    second = clock.token(3600)
    credential.respond = second
    assert provider.get_token().token == second.token


def test_suspended_monotonic_clock_is_caught(clock: FakeClock, make_provider: Any) -> None:
    first = clock.token(3600)
    credential = FakeCredential(first)
    provider = make_provider(credential)
    provider.get_token()

    clock.wall += 3300  # host suspended: the monotonic clock stood still
    second = clock.token(3600)
    credential.respond = second
    assert provider.get_token().token == second.token


# --- TokenProvider: single flight, failures, timeouts ---------------------------------


def test_single_flight_64_threads(clock: FakeClock, make_provider: Any) -> None:
    gate = threading.Event()
    credential = FakeCredential(clock.token(), gate=gate)
    provider = make_provider(credential)

    def open_gate_later() -> None:
        credential.entered.wait(WAIT)
        time.sleep(0.2)  # let the other threads reach the wait; not a timing assertion
        gate.set()

    threading.Thread(target=open_gate_later).start()
    results = run_threads(64, provider.get_token)

    assert len(credential.calls) == 1
    assert all(isinstance(result, AccessToken) for result in results)
    assert len({result.token for result in results}) == 1


def test_failure_reaches_all_waiters_and_clears(clock: FakeClock, make_provider: Any) -> None:
    gate = threading.Event()
    cause = ServiceRequestError("Connection refused")
    credential = FakeCredential(cause, gate=gate)
    provider = make_provider(credential)

    def open_gate_later() -> None:
        credential.entered.wait(WAIT)
        time.sleep(0.2)
        gate.set()

    threading.Thread(target=open_gate_later).start()
    results = run_threads(64, provider.get_token)

    assert len(credential.calls) == 1
    assert all(isinstance(result, TokenAcquisitionError) for result in results)
    assert len({id(result) for result in results}) == 64
    for result in results:
        assert result.transient is True
        assert result.__cause__ is cause
        assert result.credential == "FakeCredential"
        assert result.scope == SCOPE_PUBLIC

    credential.respond = clock.token()
    assert provider.get_token().token == credential.respond.token
    assert provider.fetch_count == 2


def test_timeout_raises_and_does_not_block(clock: FakeClock, make_provider: Any) -> None:
    gate = threading.Event()
    hung = FakeCredential(clock.token(), gate=gate)
    provider = make_provider(hung, timeout=0.2)
    try:
        with pytest.raises(TokenAcquisitionError) as info:
            provider.get_token()
        assert info.value.transient is True
        assert "0.2 s" in str(info.value)

        fresh = clock.token()
        hung.respond = fresh
        hung.gate = None  # the next call returns at once; the first one still hangs
        assert provider.get_token().token == fresh.token
        assert provider.fetch_count == 2
    finally:
        gate.set()


def test_cached_token_served_during_failure(
    clock: FakeClock, make_provider: Any, caplog: pytest.LogCaptureFixture
) -> None:
    first = clock.token(3600)
    credential = FakeCredential(first)
    provider = make_provider(credential)
    provider.get_token()

    credential.respond = HttpResponseError(message="Service Unavailable")
    clock.advance(3400)  # past the 300 s margin, before the 30 s safety gap
    with caplog.at_level(logging.WARNING, logger="securemysql.tokens"):
        assert provider.get_token().token == first.token
    assert provider.fetch_count == 2
    assert any("serving the cached token" in r.getMessage() for r in caplog.records)
    assert all(first.token not in r.getMessage() for r in caplog.records)

    assert provider.get_token().token == first.token  # within the retry delay: no fetch
    assert provider.fetch_count == 2

    clock.advance(31)  # retry delay (at most 30 s) over: one more attempt
    assert provider.get_token().token == first.token
    assert provider.fetch_count == 3

    clock.advance(3570 - 3431)  # inside the safety gap: nothing usable left
    with pytest.raises(TokenAcquisitionError) as info:
        provider.get_token()
    assert info.value.transient is True


def test_invalid_token_is_not_cached(clock: FakeClock, make_provider: Any) -> None:
    credential = FakeCredential(clock.token(aud="https://management.azure.com"))
    provider = make_provider(credential)
    with pytest.raises(TokenAudienceError):
        provider.get_token()

    credential.respond = clock.token()
    assert provider.get_token().token == credential.respond.token
    assert provider.fetch_count == 2


# --- TokenProvider: a credential that returns its cached token ------------------------


def test_same_token_again_is_used_without_loop(clock: FakeClock, make_provider: Any) -> None:
    first = clock.token(3600)
    credential = FakeCredential(lambda claims: first if claims is None else clock.token(3600))
    provider = make_provider(credential)
    provider.get_token()

    clock.advance(3400)  # refresh due; the credential still hands out its cached token
    for _ in range(20):
        assert provider.get_token().token == first.token
    assert credential.calls == [None, None]

    clock.advance(3590 - 3400)  # inside the safety gap: fetch past the credential's cache
    fresh = provider.get_token()
    assert fresh.token != first.token
    assert fresh.expires_on == clock.wall + 3600
    assert len(credential.calls) == 4
    assert credential.calls[2] is None
    assert credential.calls[3] is not None and "nbf" in credential.calls[3]


def test_same_token_in_safety_gap_raises(clock: FakeClock, make_provider: Any) -> None:
    stuck = clock.token(3600)
    credential = FakeCredential(stuck)
    provider = make_provider(credential)
    provider.get_token()

    clock.advance(3590)
    with pytest.raises(TokenAcquisitionError) as info:
        provider.get_token()
    assert info.value.transient is True
    assert "safety gap" in str(info.value)
    assert provider.fetch_count == 3  # first fetch, then one plain and one past the cache


# --- TokenProvider: force_refresh -----------------------------------------------------


def test_force_refresh_dedup_64_threads(clock: FakeClock, make_provider: Any) -> None:
    first = clock.token()
    second = clock.token()
    credential = FakeCredential(first)
    provider = make_provider(credential)
    rejected = provider.get_token()

    gate = threading.Event()
    credential.respond = second
    credential.gate = gate
    credential.entered.clear()

    def open_gate_later() -> None:
        credential.entered.wait(WAIT)
        time.sleep(0.2)
        gate.set()

    threading.Thread(target=open_gate_later).start()
    results = run_threads(64, lambda: provider.force_refresh(rejected))

    assert {result.token for result in results} == {second.token}
    assert len(credential.calls) == 2
    assert credential.calls[1] is not None  # claims challenge to pass the credential's cache

    assert provider.force_refresh(rejected).token == second.token
    assert provider.get_token().token == second.token
    assert provider.fetch_count == 2


def test_force_refresh_without_argument(clock: FakeClock, make_provider: Any) -> None:
    credential = FakeCredential(clock.token())
    provider = make_provider(credential)
    first = provider.get_token()
    credential.respond = clock.token()
    assert provider.force_refresh().token != first.token
    assert provider.fetch_count == 2


def test_force_refresh_same_token_warns(
    clock: FakeClock, make_provider: Any, caplog: pytest.LogCaptureFixture
) -> None:
    credential = FakeCredential(clock.token())
    provider = make_provider(credential)
    rejected = provider.get_token()

    with caplog.at_level(logging.WARNING, logger="securemysql.tokens"):
        assert provider.force_refresh(rejected).token == rejected.token
    assert any("rejected access token again" in r.getMessage() for r in caplog.records)

    assert provider.force_refresh(rejected).token == rejected.token
    assert provider.fetch_count == 2  # the second rejection reuses the recent result

    clock.advance(31)
    provider.force_refresh(rejected)
    assert provider.fetch_count == 3


def test_force_refresh_claims_unsupported(clock: FakeClock, make_provider: Any) -> None:
    fresh = clock.token()

    def answer(claims: Optional[str]) -> CoreAccessToken:
        if claims is not None:
            raise ClientAuthenticationError("This credential doesn't support claims challenges")
        return fresh

    first = clock.token()
    credential = FakeCredential(first)
    provider = make_provider(credential)
    rejected = provider.get_token()
    credential.respond = answer
    assert provider.force_refresh(rejected).token == fresh.token
    assert credential.calls[1] is not None
    assert credential.calls[2] is None


def test_force_refresh_failure_raises(clock: FakeClock, make_provider: Any) -> None:
    credential = FakeCredential(clock.token())
    provider = make_provider(credential)
    rejected = provider.get_token()
    credential.respond = ServiceResponseError("Connection aborted")
    with pytest.raises(TokenAcquisitionError):
        provider.force_refresh(rejected)


# --- TokenProvider: error descriptions ------------------------------------------------


def _http_error(status: int, message: str) -> HttpResponseError:
    error = HttpResponseError(message=message)
    error.status_code = status
    return error


def _credential_unavailable(message: str) -> Exception:
    from azure.identity import CredentialUnavailableError

    return CredentialUnavailableError(message=message)


@pytest.mark.parametrize(
    ("error", "transient", "fix_word"),
    [
        (TimeoutError("timed out"), True, "timeout"),
        (
            ClientAuthenticationError(
                "ManagedIdentityCredential: Read timed out. (read timeout=5)"
            ),
            True,
            "timeout",
        ),
        (_http_error(429, "Too Many Requests"), True, "throttled"),
        (_http_error(503, "Service Unavailable"), True, "server error"),
        (ServiceRequestError("Failed to establish a new connection"), True, "unreachable"),
        (ConnectionRefusedError(111, "Connection refused"), True, "unreachable"),
        (
            _credential_unavailable("No managed identity endpoint found."),
            False,
            "enable a managed identity",
        ),
        (
            _credential_unavailable(
                "ManagedIdentityCredential authentication unavailable. "
                "No identity has been assigned to this resource."
            ),
            False,
            "managed_identity_client_id",
        ),
        (
            ClientAuthenticationError(
                "DefaultAzureCredential failed to retrieve a token from the included "
                "credentials. EnvironmentCredential: EnvironmentCredential authentication "
                "unavailable."
            ),
            False,
            "enable a managed identity",
        ),
        (_http_error(403, "Forbidden"), False, "permissions"),
        (
            ClientAuthenticationError(
                "DefaultAzureCredential failed to retrieve a token from the included "
                "credentials. ManagedIdentityCredential: JSON is invalid: Unterminated "
                "string starting at: line 1 column 18 (char 17)"
            ),
            True,
            "not valid JSON",
        ),
        (ValueError("something else"), False, "configuration"),
    ],
)
def test_failure_classification(
    clock: FakeClock, make_provider: Any, error: Exception, transient: bool, fix_word: str
) -> None:
    provider = make_provider(FakeCredential(error))
    with pytest.raises(TokenAcquisitionError) as info:
        provider.get_token()
    message = str(info.value)
    assert info.value.transient is transient
    assert fix_word in message
    assert "FakeCredential" in message
    assert SCOPE_PUBLIC in message
    assert info.value.__cause__ is error


def test_failure_message_redacts_token(clock: FakeClock, make_provider: Any) -> None:
    leaked = make_jwt(exp=1)
    error = ClientAuthenticationError(f'unexpected response {{"access_token": "{leaked}"}}')
    provider = make_provider(FakeCredential(error))
    with pytest.raises(TokenAcquisitionError) as info:
        provider.get_token()
    assert leaked not in str(info.value)
    assert "[REDACTED]" in str(info.value)
    assert info.value.__cause__ is None  # the original message is not chained


def opaque_jwt(**claims: Any) -> str:
    """Return a JWT whose header does not start with "eyJ", so no JWT pattern finds it."""
    header = base64.urlsafe_b64encode(b' {"alg": "none"}').rstrip(b"=").decode()
    payload = {"aud": AUDIENCE, "oid": "oid-1", "n": next(_serial), **claims}
    return f"{header}.{b64url(payload)}.c2lnbmF0dXJl"


def test_fetched_token_registered_for_redaction(clock: FakeClock, make_provider: Any) -> None:
    token = opaque_jwt(exp=int(clock.wall + 3600))
    assert token in redaction.redact(f"before {token}")

    provider = make_provider(FakeCredential(CoreAccessToken(token, int(clock.wall + 3600))))
    provider.get_token()

    assert token not in redaction.redact(f"sent {token}")


def test_rejected_token_registered_for_redaction(clock: FakeClock, make_provider: Any) -> None:
    token = opaque_jwt(exp=int(clock.wall + 3600), aud="https://management.azure.com")
    provider = make_provider(FakeCredential(CoreAccessToken(token, int(clock.wall + 3600))))

    with pytest.raises(TokenAudienceError):
        provider.get_token()

    assert token not in redaction.redact(f"sent {token}")


# --- TokenProvider: logging, repr, close ----------------------------------------------


def test_logging_never_contains_token(
    clock: FakeClock, make_provider: Any, caplog: pytest.LogCaptureFixture
) -> None:
    credential = FakeCredential(clock.token(appid="app-7"))
    provider = make_provider(credential)
    with caplog.at_level(logging.DEBUG, logger="securemysql.tokens"):
        token = provider.get_token()
        provider.get_token()
    messages = [r.getMessage() for r in caplog.records if r.name == "securemysql.tokens"]
    assert any("fetched" in m and "oid=oid-1 appid=app-7" in m for m in messages)
    assert any("cache hit" in m for m in messages)
    assert all(token.token not in m for m in messages)


def test_provider_repr_hides_token(clock: FakeClock, make_provider: Any) -> None:
    provider = make_provider(FakeCredential(clock.token()))
    token = provider.get_token()
    text = repr(provider)
    assert token.token not in text
    assert "FakeCredential" in text
    assert "oid=oid-1" in text


def test_close_is_idempotent(clock: FakeClock) -> None:
    with TokenProvider(
        FakeCredential(clock.token()), clock=clock.time, monotonic=clock.monotonic
    ) as provider:
        provider.get_token()
    provider.close()
    with pytest.raises(TokenAcquisitionError) as info:
        provider.get_token()
    assert "closed" in str(info.value)


# --- TokenProvider: background refresh ------------------------------------------------


def test_background_refresh_serves_without_waiting(clock: FakeClock, make_provider: Any) -> None:
    first = clock.token(3600)
    credential = FakeCredential(first)
    provider = make_provider(credential, background_refresh=True, prefetch=True)
    wait_until(lambda: provider.fetch_count == 1)

    gate = threading.Event()
    second = clock.token(3600)
    credential.respond = second
    credential.gate = gate
    clock.advance(3400)
    try:
        # The background thread fetches; the caller gets the cached token meanwhile.
        assert provider.get_token().token == first.token
        wait_until(lambda: provider.fetch_count == 2)
        assert provider.get_token().token == first.token
    finally:
        gate.set()
    wait_until(lambda: provider.get_token().token == second.token)
    assert provider.fetch_count == 2


def test_background_refresh_without_callers(providers: list[TokenProvider]) -> None:
    # Clocks that follow real time; the token is due for refresh 0.2 s after the fetch.
    origin = time.monotonic()

    def wall() -> float:
        return START + time.monotonic() - origin

    def answer(claims: Optional[str]) -> CoreAccessToken:
        now = wall()
        return CoreAccessToken(make_jwt(exp=now + 300.2, iat=now), int(now + 3600))

    credential = FakeCredential(answer)
    provider = TokenProvider(
        credential, refresh_margin=300.0, background_refresh=True, prefetch=True, clock=wall
    )
    providers.append(provider)
    wait_until(lambda: provider.fetch_count >= 2)


def test_close_stops_background_thread(clock: FakeClock) -> None:
    provider = TokenProvider(
        FakeCredential(clock.token()),
        background_refresh=True,
        prefetch=True,
        clock=clock.time,
        monotonic=clock.monotonic,
    )
    names = {thread.name for thread in threading.enumerate()}
    assert "securemysql-token-refresh" in names
    provider.close()
    wait_until(lambda: "securemysql-token-refresh" not in {t.name for t in threading.enumerate()})


# --- TokenProvider: provider-owned DefaultAzureCredential -----------------------------


class RecordingDefaultCredential:
    """Stands in for azure.identity.DefaultAzureCredential; each instance has its own cache."""

    instances: ClassVar[list[RecordingDefaultCredential]] = []
    clock: FakeClock

    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs
        self.closed = False
        self.cached: Optional[CoreAccessToken] = None
        self.instances.append(self)

    def get_token(self, *scopes: str, **kwargs: Any) -> CoreAccessToken:
        if self.cached is None:
            self.cached = self.clock.token()
        return self.cached

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def default_credential(
    monkeypatch: pytest.MonkeyPatch, clock: FakeClock
) -> type[RecordingDefaultCredential]:
    import azure.identity

    RecordingDefaultCredential.instances = []
    RecordingDefaultCredential.clock = clock
    monkeypatch.setattr(azure.identity, "DefaultAzureCredential", RecordingDefaultCredential)
    return RecordingDefaultCredential


def test_owned_credential_created_lazily(
    make_provider: Any, default_credential: type[RecordingDefaultCredential]
) -> None:
    provider = make_provider(None, managed_identity_client_id="client-1", timeout=12.0)
    assert provider.credential_name == "DefaultAzureCredential"
    assert default_credential.instances == []

    provider.get_token()
    (created,) = default_credential.instances
    assert callable(created.kwargs.pop("raw_response_hook"))
    assert created.kwargs == {
        "managed_identity_client_id": "client-1",
        "connection_timeout": 12.0,
        "read_timeout": 12.0,
        "process_timeout": 12.0,
    }


def _status_response(status: int) -> SimpleNamespace:
    """Stand in for the azure-core PipelineResponse that a raw_response_hook receives."""
    return SimpleNamespace(http_response=SimpleNamespace(status_code=status))


# azure-identity 1.27 reports an App Service endpoint that returns 500 or 429 like this.
_NO_CONFIGURATION = (
    "DefaultAzureCredential failed to retrieve a token from the included credentials. "
    "ManagedIdentityCredential: App Service managed identity configuration not found in "
    "environment. Token request error: (invalid_scope) None, None"
)


@pytest.mark.parametrize(
    ("status", "fix_word"), [(500, "server error"), (503, "server error"), (429, "throttled")]
)
def test_owned_credential_http_status_classifies(
    make_provider: Any,
    default_credential: type[RecordingDefaultCredential],
    monkeypatch: pytest.MonkeyPatch,
    status: int,
    fix_word: str,
) -> None:
    def failing_get_token(self: RecordingDefaultCredential, *scopes: str, **kwargs: Any) -> Any:
        for _ in range(2):
            self.kwargs["raw_response_hook"](_status_response(status))
        raise ClientAuthenticationError(_NO_CONFIGURATION)

    monkeypatch.setattr(default_credential, "get_token", failing_get_token)
    provider = make_provider(None)

    with pytest.raises(TokenAcquisitionError) as info:
        provider.get_token()

    assert info.value.transient is True
    assert f"HTTP {status}, {status}" in str(info.value)
    assert fix_word in str(info.value)


def test_repeated_failure_keeps_status(
    make_provider: Any,
    default_credential: type[RecordingDefaultCredential],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[int] = []

    def failing_get_token(self: RecordingDefaultCredential, *scopes: str, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:  # later calls repeat the failure without a request, as MSAL does
            self.kwargs["raw_response_hook"](_status_response(500))
        raise ClientAuthenticationError(_NO_CONFIGURATION)

    monkeypatch.setattr(default_credential, "get_token", failing_get_token)
    provider = make_provider(None)
    with pytest.raises(TokenAcquisitionError):
        provider.get_token()

    with pytest.raises(TokenAcquisitionError) as info:
        provider.get_token()

    assert len(calls) == 2
    assert info.value.transient is True
    assert "repeated an earlier failure without sending a request" in str(info.value)
    assert "HTTP 500" in str(info.value)


def test_other_failure_without_responses_not_repeat(
    make_provider: Any,
    default_credential: type[RecordingDefaultCredential],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    messages = iter([_NO_CONFIGURATION, "EnvironmentCredential: something else failed"])

    def failing_get_token(self: RecordingDefaultCredential, *scopes: str, **kwargs: Any) -> Any:
        message = next(messages)
        if message == _NO_CONFIGURATION:
            self.kwargs["raw_response_hook"](_status_response(500))
        raise ClientAuthenticationError(message)

    monkeypatch.setattr(default_credential, "get_token", failing_get_token)
    provider = make_provider(None)
    with pytest.raises(TokenAcquisitionError):
        provider.get_token()

    with pytest.raises(TokenAcquisitionError) as info:
        provider.get_token()

    assert info.value.transient is False
    assert "repeated" not in str(info.value)
    assert "HTTP" not in str(info.value)


def test_owned_credential_timeout_names_status(
    make_provider: Any,
    default_credential: type[RecordingDefaultCredential],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    gate = threading.Event()

    def hanging_get_token(self: RecordingDefaultCredential, *scopes: str, **kwargs: Any) -> Any:
        self.kwargs["raw_response_hook"](_status_response(429))
        gate.wait(WAIT)
        raise ClientAuthenticationError(_NO_CONFIGURATION)

    monkeypatch.setattr(default_credential, "get_token", hanging_get_token)
    provider = make_provider(None, timeout=0.2)
    try:
        with pytest.raises(TokenAcquisitionError) as info:
            provider.get_token()
    finally:
        gate.set()

    assert info.value.transient is True
    assert "within 0.2 s; so far the token endpoint returned HTTP 429" in str(info.value)
    assert "throttled" in str(info.value)


def test_response_hook_outside_fetch_harmless(
    make_provider: Any, default_credential: type[RecordingDefaultCredential]
) -> None:
    provider = make_provider(None)
    provider.get_token()
    hook = default_credential.instances[0].kwargs["raw_response_hook"]

    hook(_status_response(500))  # another thread's request, or one after the fetch
    hook(SimpleNamespace())  # a response object without http_response

    assert provider.get_token().token == default_credential.instances[0].cached.token


def test_owned_credential_without_client_id(
    make_provider: Any, default_credential: type[RecordingDefaultCredential]
) -> None:
    make_provider(None).get_token()
    assert "managed_identity_client_id" not in default_credential.instances[0].kwargs


def test_owned_credential_recreated_on_force(
    make_provider: Any, default_credential: type[RecordingDefaultCredential]
) -> None:
    provider = make_provider(None)
    rejected = provider.get_token()
    fresh = provider.force_refresh(rejected)

    assert fresh.token != rejected.token
    first, second = default_credential.instances
    assert first.closed is True
    assert second.closed is False

    provider.close()
    assert second.closed is True


# --- Real azure-identity credentials against a loopback managed identity endpoint -----


class _IdentityEndpoint(http.server.BaseHTTPRequestHandler):
    """App Service managed identity endpoint: a new token for every request."""

    requests = 0

    def do_GET(self) -> None:
        type(self).requests += 1
        now = int(time.time())
        body = json.dumps(
            {
                "access_token": make_jwt(exp=now + 3600, iat=now),
                "expires_on": str(now + 3600),
                "resource": AUDIENCE,
                "token_type": "Bearer",
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def identity_endpoint(monkeypatch: pytest.MonkeyPatch) -> Iterator[type[_IdentityEndpoint]]:
    for name in list(os.environ):
        if name.startswith(("AZURE_", "IDENTITY_", "MSI_", "IMDS_")):
            monkeypatch.delenv(name)
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _IdentityEndpoint)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("IDENTITY_ENDPOINT", f"http://127.0.0.1:{server.server_address[1]}/token")
    monkeypatch.setenv("IDENTITY_HEADER", "test-header")
    monkeypatch.setenv("AZURE_TOKEN_CREDENTIALS", "ManagedIdentityCredential")
    _IdentityEndpoint.requests = 0
    yield _IdentityEndpoint
    server.shutdown()
    server.server_close()


def test_managed_identity_force_refresh_passes_cache(
    identity_endpoint: type[_IdentityEndpoint], providers: list[TokenProvider]
) -> None:
    from azure.identity import ManagedIdentityCredential

    provider = TokenProvider(ManagedIdentityCredential())
    providers.append(provider)
    rejected = provider.get_token()
    assert identity_endpoint.requests == 1

    fresh = provider.force_refresh(rejected)
    assert fresh.token != rejected.token
    assert identity_endpoint.requests == 2


def test_default_credential_force_refresh_passes_cache(
    identity_endpoint: type[_IdentityEndpoint], providers: list[TokenProvider]
) -> None:
    provider = TokenProvider()
    providers.append(provider)
    rejected = provider.get_token()
    fresh = provider.force_refresh(rejected)
    assert fresh.token != rejected.token
    assert identity_endpoint.requests == 2
