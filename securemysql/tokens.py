"""Microsoft Entra ID access tokens for Azure Database for MySQL.

Azure Database for MySQL accepts an Entra ID access token as the MySQL password.
This module picks the scope for the server's cloud, checks tokens before they are
sent (JWT shape, audience, expiry), and caches them in :class:`TokenProvider`,
which shares one ``azure-identity`` credential call among all concurrent callers.

Times are in seconds: ``expires_on`` and ``fetched_at`` are Unix epoch seconds
(UTC); margins, gaps and time-outs are durations in seconds.

Nothing in this module logs, formats or raises an access token: :class:`AccessToken`
hides it from ``repr`` and ``str``, and error messages carry only claims
(``aud``, ``exp``, ``oid``, ...) and the credential's own message with anything
shaped like a token removed.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import math
import re
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Callable, Optional

from securemysql.errors import (
    ConfigurationError,
    InvalidTokenError,
    MalformedTokenError,
    TokenAcquisitionError,
    TokenAudienceError,
    TokenError,
    TokenExpiredError,
)

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential

__all__ = [
    "CLOUD_SCOPES",
    "SCOPE_CHINA",
    "SCOPE_PUBLIC",
    "SCOPE_US_GOVERNMENT",
    "AccessToken",
    "TokenProvider",
    "audience_for_scope",
    "check_token",
    "decode_claims",
    "resolve_scope",
]

_LOGGER = logging.getLogger("securemysql.tokens")

# --- Scopes ------------------------------------------------------------------

SCOPE_PUBLIC = "https://ossrdbms-aad.database.windows.net/.default"
SCOPE_CHINA = "https://ossrdbms-aad.database.chinacloudapi.cn/.default"
SCOPE_US_GOVERNMENT = "https://ossrdbms-aad.database.usgovcloudapi.net/.default"

#: Scope of Azure Database for MySQL per cloud name.
CLOUD_SCOPES: Mapping[str, str] = MappingProxyType(
    {
        "public": SCOPE_PUBLIC,
        "china": SCOPE_CHINA,
        "usgovernment": SCOPE_US_GOVERNMENT,
    }
)

# Accepted cloud names and aliases, compared after lower-casing and removing "-",
# "_" and spaces.
_CLOUD_ALIASES: Mapping[str, str] = MappingProxyType(
    {
        "public": "public",
        "azurecloud": "public",
        "azurepubliccloud": "public",
        "china": "china",
        "azurechinacloud": "china",
        "usgovernment": "usgovernment",
        "usgov": "usgovernment",
        "azureusgovernment": "usgovernment",
        "azureusgovernmentcloud": "usgovernment",
    }
)

# Host-name suffix of Azure Database for MySQL servers per cloud.
_HOST_SUFFIXES = (
    (".mysql.database.azure.com", "public"),
    (".mysql.database.chinacloudapi.cn", "china"),
    (".mysql.database.usgovcloudapi.net", "usgovernment"),
)

_DEFAULT_SUFFIX = "/.default"


def resolve_scope(
    *, scope: Optional[str] = None, cloud: Optional[str] = None, host: Optional[str] = None
) -> str:
    """Return the scope to request tokens for.

    An explicit ``scope`` wins, then ``cloud``, then the suffix of the server's
    ``host`` name. Anything else (an IP address, a custom DNS name, nothing)
    gets the public-cloud scope.

    Raises:
        ConfigurationError: ``cloud`` is not a known cloud name (checked even when
            ``scope`` is given), or ``scope`` is empty.
    """
    cloud_key = _cloud_key(cloud) if cloud is not None else None

    if scope is not None:
        if not isinstance(scope, str) or not scope.strip():
            raise ConfigurationError(f"scope must be a non-empty string, got {scope!r}")
        return scope.strip()

    if cloud_key is not None:
        return CLOUD_SCOPES[cloud_key]

    if host:
        normalized_host = host.strip().rstrip(".").lower()
        for suffix, host_cloud in _HOST_SUFFIXES:
            if normalized_host.endswith(suffix):
                return CLOUD_SCOPES[host_cloud]

    return SCOPE_PUBLIC


def _cloud_key(cloud: str) -> str:
    normalized = re.sub(r"[-_\s]", "", str(cloud)).lower()
    key = _CLOUD_ALIASES.get(normalized)
    if key is None:
        valid = ", ".join(CLOUD_SCOPES)
        raise ConfigurationError(
            f"unknown cloud {cloud!r}; valid values are {valid} "
            "(or AzureCloud, AzureChinaCloud, AzureUSGovernment)"
        )
    return key


def audience_for_scope(scope: str) -> str:
    """Return the ``aud`` claim of tokens for ``scope``: the scope without ``/.default``."""
    if scope.endswith(_DEFAULT_SUFFIX):
        return scope[: -len(_DEFAULT_SUFFIX)]
    return scope


# --- Token checks --------------------------------------------------------------

_BASE64URL_SEGMENT = re.compile(r"[A-Za-z0-9_-]*")


def decode_claims(token: str) -> dict[str, Any]:
    """Decode the payload of a JWT without verifying its signature.

    The signature is not checked because the server verifies it; the claims are
    used only to check audience and expiry before sending, and for logging.
    Surrounding whitespace is ignored.

    Raises:
        MalformedTokenError: ``token`` is not a compact JWS (three base64url
            segments whose first two decode to JSON objects). The message never
            contains the token.
    """
    if not isinstance(token, str):
        raise MalformedTokenError(f"access token must be a str, got {type(token).__name__}")

    segments = token.strip().split(".")
    if len(segments) != 3:
        raise MalformedTokenError(
            f"access token is not a JWT: expected 3 dot-separated segments, found {len(segments)}"
        )

    _decode_json_segment(segments[0], "header")
    return _decode_json_segment(segments[1], "payload")


def _decode_json_segment(segment: str, name: str) -> dict[str, Any]:
    if not segment or not _BASE64URL_SEGMENT.fullmatch(segment):
        raise MalformedTokenError(
            f"access token is not a JWT: its {name} segment is empty or not base64url"
        )

    try:
        raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
        value = json.loads(raw.decode("utf-8"))
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise MalformedTokenError(
            f"access token is not a JWT: its {name} segment does not decode to JSON"
        ) from None

    if not isinstance(value, dict):
        raise MalformedTokenError(f"access token is not a JWT: its {name} is not a JSON object")
    return value


def check_token(token: str, *, scope: str, now: float) -> str:
    """Check that ``token`` would pass the server's audience and expiry checks.

    Args:
        token: the access token; surrounding whitespace is removed.
        scope: the scope the token was requested for.
        now: current time, Unix epoch seconds.

    Returns:
        The token without surrounding whitespace.

    Raises:
        MalformedTokenError: whitespace inside the token, or not a JWT, or no
            numeric ``exp`` claim.
        TokenAudienceError: ``aud`` is not ``audience_for_scope(scope)``.
        TokenExpiredError: ``exp <= now``.
    """
    stripped, _claims = _checked_token(token, scope=scope, now=now)
    return stripped


def _checked_token(token: str, *, scope: str, now: float) -> tuple[str, dict[str, Any]]:
    if not isinstance(token, str):
        raise MalformedTokenError(f"access token must be a str, got {type(token).__name__}")

    stripped = token.strip()
    if not stripped:
        raise MalformedTokenError("access token is empty")
    inner_space = re.search(r"\s", stripped)
    if inner_space is not None:
        raise MalformedTokenError(
            f"access token contains whitespace at offset {inner_space.start()}; "
            "a token copied from a terminal or file often contains a line break"
        )

    claims = decode_claims(stripped)
    _check_audience(claims, scope)
    _check_expiry(claims, now)
    return stripped, claims


def _check_audience(claims: Mapping[str, Any], scope: str) -> None:
    expected = audience_for_scope(scope)
    audience = claims.get("aud")
    audiences = audience if isinstance(audience, list) else [audience]
    if expected in audiences:
        return

    raise TokenAudienceError(
        f"access token was issued for audience {audience!r}, but scope {scope!r} needs "
        f"audience {expected!r}; request the token for the server's cloud "
        "(scope= or cloud=) and check that the credential honours the requested scope"
    )


def _check_expiry(claims: Mapping[str, Any], now: float) -> None:
    expires = _numeric_claim(claims, "exp")
    if expires is None:
        raise MalformedTokenError("access token has no numeric 'exp' (expiry) claim")
    if expires <= now:
        raise TokenExpiredError(
            f"access token expired at {_format_utc(expires)} "
            f"({now - expires:.0f} s before the local clock's {_format_utc(now)}); "
            "fetch a new token, and check the local clock if this repeats"
        )


def _numeric_claim(claims: Mapping[str, Any], name: str) -> Optional[float]:
    value = claims.get(name)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _format_utc(epoch_seconds: float) -> str:
    try:
        moment = datetime.fromtimestamp(epoch_seconds, tz=timezone.utc)
    except (OverflowError, OSError, ValueError):
        return f"epoch {epoch_seconds:.0f}"
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


# --- Access token --------------------------------------------------------------

# Claims that identify the caller without being secret, in the order shown.
_IDENTITY_CLAIMS = ("oid", "appid", "azp", "upn", "tid")
_MAX_IDENTITY_VALUE = 64


@dataclass(frozen=True, repr=False)
class AccessToken:
    """A checked access token and what is known about it.

    Attributes:
        token: the JWT to send as the MySQL password; hidden from ``repr`` and ``str``.
        expires_on: expiry, Unix epoch seconds: the earlier of the credential's
            ``expires_on`` and the JWT's ``exp`` claim.
        claims: the decoded JWT payload (read-only).
        fetched_at: when the credential returned the token, Unix epoch seconds.
    """

    token: str
    expires_on: float
    claims: Mapping[str, Any] = field(compare=False, hash=False)
    fetched_at: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "claims", MappingProxyType(dict(self.claims)))

    @property
    def identity(self) -> str:
        """Short, loggable description of the token's subject, such as ``oid=... tid=...``.

        Built from the ``oid``, ``appid`` (or ``azp``), ``upn`` and ``tid`` claims;
        ``"unknown identity"`` when none is present.
        """
        parts = []
        for name in _IDENTITY_CLAIMS:
            value = self.claims.get(name)
            if value is None or (name == "azp" and "appid" in self.claims):
                continue
            parts.append(f"{name}={str(value)[:_MAX_IDENTITY_VALUE]}")
        return " ".join(parts) if parts else "unknown identity"

    def __repr__(self) -> str:
        return (
            f"AccessToken(identity={self.identity!r}, "
            f"expires_on={_format_utc(self.expires_on)!r}, "
            f"fetched_at={_format_utc(self.fetched_at)!r})"
        )

    __str__ = __repr__


# --- Cache policy ----------------------------------------------------------------

# azure-identity and MSAL (1.27 / 1.39) refresh a cached token 300 s before it expires.
_DEFAULT_MARGIN = 300.0
# For tokens shorter than 4 * 300 s the margin is a quarter of the lifetime, so a
# 5-minute token is served for 225 s instead of being refreshed at once.
_MARGIN_FRACTION = 0.25
# A cached token is not handed out later than this before it expires, so that a
# login that takes a while still arrives with a valid token.
_MAX_SAFETY_GAP = 30.0
_SAFETY_GAP_FRACTION = 0.1
# Delay between refresh attempts after a failed refresh or one that returned no
# newer token. azure-identity itself does not re-request a token within 30 s.
_MIN_RETRY_DELAY = 1.0
_MAX_RETRY_DELAY = 30.0
# The background thread wakes at least this often, because a sleep measured on
# the monotonic clock may overrun while the host is suspended.
_MAX_BACKGROUND_SLEEP = 30.0


def _default_margin(lifetime: float) -> float:
    """Return the refresh margin for a token living ``lifetime`` s: min(300, lifetime / 4)."""
    return max(0.0, min(_DEFAULT_MARGIN, lifetime * _MARGIN_FRACTION))


def _safety_gap(lifetime: float, margin: float) -> float:
    """Return how long before expiry a token stops being served: min(30, lifetime / 10, margin)."""
    return max(0.0, min(_MAX_SAFETY_GAP, lifetime * _SAFETY_GAP_FRACTION, margin))


def _token_lifetime(token: AccessToken) -> float:
    """Return the token's full lifetime: from ``iat`` when present, else from fetch time."""
    issued_at = _numeric_claim(token.claims, "iat")
    if issued_at is not None and issued_at < token.expires_on:
        return token.expires_on - issued_at
    return max(0.0, token.expires_on - token.fetched_at)


@dataclass(frozen=True)
class _CacheEntry:
    """A cached token with its deadlines on both clocks.

    Each deadline exists as a wall-clock time (epoch seconds) and as a monotonic
    time (fetch time on the monotonic clock plus the remaining lifetime at fetch).
    A deadline has passed once either clock reaches it: a wall clock set back cannot
    stretch a token's life, and a monotonic clock that stood still while the host
    was suspended is caught by the wall clock.
    """

    token: AccessToken
    refresh_wall: float
    refresh_mono: float
    usable_wall: float
    usable_mono: float
    margin: float
    gap: float


_FRESH = "fresh"  # served from cache without fetching
_STALE = "stale"  # served from cache; a refresh is due
_UNUSABLE = "unusable"  # missing, expired or inside the safety gap: callers wait for a fetch


class _Flight:
    """One credential fetch that any number of callers wait for."""

    def __init__(self, *, forced: bool, rejected: Optional[AccessToken], deadline: float) -> None:
        self.forced = forced
        self.rejected = rejected
        # Real monotonic time after which waiters give up (time.monotonic(), not the
        # injected clock, because waiting uses real time).
        self.deadline = deadline
        self.done = threading.Event()
        self.result: Optional[AccessToken] = None
        self.failure: Optional[_Failure] = None


@dataclass(frozen=True)
class _Failure:
    """A failed fetch, turned into a new exception for each waiter.

    Each waiter raises its own exception object, because one object raised in
    several threads would share and overwrite its traceback.
    """

    build: Callable[[], TokenError]
    cause: Optional[BaseException]

    def raise_error(self) -> None:
        raise self.build() from self.cause


# --- Token provider ----------------------------------------------------------------


class TokenProvider:
    """Fetch, check and cache access tokens from an azure-identity credential.

    Callers get a token from the cache while ``now < expires_on - margin``. The
    default margin is ``min(300, lifetime / 4)`` seconds, where lifetime runs from
    the ``iat`` claim (or the fetch) to ``expires_on``; ``refresh_margin`` sets a
    fixed margin instead. Past the margin, the cached token is still served until
    ``expires_on - gap`` (gap ``min(30, lifetime / 10, margin)`` seconds) while it is
    refreshed: by the background thread when ``background_refresh`` is on, else by
    the first caller that finds it due, which waits up to ``timeout`` for the fetch
    and gets the cached token if the fetch fails. Without a token inside that
    window, callers wait for a fetch.

    Deadlines are kept on both clocks (``clock``, wall time, and ``monotonic``) and a
    deadline has passed once either clock reaches it: setting the wall clock back
    cannot stretch a token's life, and a monotonic clock that stood still while the
    host was suspended is caught by the wall clock. Time-outs always use real time.

    Fetches are single-flight: one credential call at a time, whose result or
    failure every waiting caller receives. The exception is a call that timed out:
    it may still run in its daemon thread while the next call starts. A credential
    that returns the token it returned before (azure-identity credentials cache
    tokens) is not called again for that reason more often than every 1 to 30 s.

    Thread-safe. Closing stops the background thread and closes a credential that
    the provider created; it never closes a credential it was given.
    """

    def __init__(
        self,
        credential: Optional[TokenCredential] = None,
        *,
        scope: Optional[str] = None,
        cloud: Optional[str] = None,
        host: Optional[str] = None,
        managed_identity_client_id: Optional[str] = None,
        timeout: float = 30.0,
        refresh_margin: Optional[float] = None,
        background_refresh: bool = False,
        prefetch: bool = False,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        """Create a provider; without a credential, create DefaultAzureCredential on first fetch.

        Args:
            credential: an azure-identity credential (anything with ``get_token``).
                ``None`` creates ``DefaultAzureCredential`` lazily; only such a
                provider-owned credential can be re-created to bypass its cache.
            scope, cloud, host: select the scope, see :func:`resolve_scope`.
            managed_identity_client_id: client ID of a user-assigned managed
                identity, passed to the DefaultAzureCredential this provider
                creates. Rejected together with ``credential``.
            timeout: seconds a caller waits for one fetch (> 0).
            refresh_margin: fixed seconds before expiry to refresh (>= 0); ``None``
                means ``min(300, lifetime / 4)``.
            background_refresh: refresh in a daemon thread ahead of expiry, so that
                callers do not wait while a cached token is still usable.
            prefetch: fetch in the constructor and raise its error; the default
                fetches on first use.
            clock: wall clock, epoch seconds. monotonic: monotonic clock, seconds.

        Raises:
            ConfigurationError: invalid or conflicting arguments.
            TokenError: with ``prefetch=True``, the first fetch failed.
        """
        if credential is not None and managed_identity_client_id is not None:
            raise ConfigurationError(
                "managed_identity_client_id is ambiguous together with a credential; "
                "pass it to the credential (for example "
                "ManagedIdentityCredential(client_id=...)) or omit the credential"
            )
        if not _is_finite_number(timeout) or timeout <= 0:
            raise ConfigurationError(
                f"timeout must be a positive number of seconds, got {timeout!r}"
            )
        if refresh_margin is not None and (
            not _is_finite_number(refresh_margin) or refresh_margin < 0
        ):
            raise ConfigurationError(
                f"refresh_margin must be a non-negative number of seconds, got {refresh_margin!r}"
            )

        self._scope = resolve_scope(scope=scope, cloud=cloud, host=host)
        self._credential: Optional[TokenCredential] = credential
        self._owns_credential = credential is None
        self._client_id = managed_identity_client_id
        self._timeout = float(timeout)
        self._refresh_margin = None if refresh_margin is None else float(refresh_margin)
        self._background = background_refresh
        self._clock = clock
        self._monotonic = monotonic

        self._lock = threading.Lock()
        self._credential_lock = threading.Lock()
        self._entry: Optional[_CacheEntry] = None
        self._flight: Optional[_Flight] = None
        self._retry_at: Optional[float] = None
        # A token that a forced refresh got back unchanged, and when (monotonic).
        self._reconfirmed: Optional[tuple[AccessToken, float]] = None
        self._failures_in_row = 0
        self._fetch_count = 0
        self._closed = False
        self._wake = threading.Event()
        self._thread: Optional[threading.Thread] = None

        if prefetch:
            try:
                self.get_token()
            except BaseException:
                self.close()
                raise

    # --- Public properties ---------------------------------------------------------

    @property
    def scope(self) -> str:
        """The scope that tokens are requested for."""
        return self._scope

    @property
    def credential_name(self) -> str:
        """Class name of the credential (``DefaultAzureCredential`` if the provider creates it)."""
        if self._owns_credential:
            return "DefaultAzureCredential"
        return type(self._credential).__name__

    @property
    def fetch_count(self) -> int:
        """Number of ``credential.get_token`` calls made so far, failed ones included."""
        with self._lock:
            return self._fetch_count

    def __repr__(self) -> str:
        with self._lock:
            entry = self._entry
        cached = "none" if entry is None else repr(entry.token)
        return (
            f"TokenProvider(credential={self.credential_name}, scope={self._scope!r}, "
            f"cached={cached}, fetch_count={self.fetch_count})"
        )

    # --- Getting tokens ------------------------------------------------------------

    def get_token(self) -> AccessToken:
        """Return a checked token, from the cache when possible.

        Raises:
            TokenAcquisitionError: no usable token could be fetched (shared by every
                caller that waited for the same fetch), or the provider is closed.
            InvalidTokenError: the credential returned a token that fails
                :func:`check_token`.
        """
        self._raise_if_closed()
        self._start_background_thread()

        with self._lock:
            entry = self._entry
            state = self._state_of(entry)
            if entry is not None and state == _FRESH:
                _LOGGER.debug("access token cache hit (%s)", entry.token.identity)
                return entry.token

            if entry is not None and state == _STALE:
                if self._background or self._flight is not None or self._in_backoff():
                    self._wake.set()
                    _LOGGER.debug("serving cached access token; refresh is pending")
                    return entry.token
                flight = self._start_flight(forced=False, rejected=None)
                fallback: Optional[_CacheEntry] = entry
            else:
                flight = self._flight or self._start_flight(forced=False, rejected=None)
                fallback = None

        return self._await_refresh(flight, fallback)

    def force_refresh(self, rejected: Optional[AccessToken] = None) -> AccessToken:
        """Fetch a new token because the server rejected ``rejected`` (by default the cached one).

        When the cached token already differs from ``rejected`` and is not older
        (another thread refreshed it), it is returned without fetching, so many
        threads that see the same rejection cause one fetch.

        To get past azure-identity's own cache, a provider-created credential is
        re-created before the fetch. A credential given by the caller receives a
        claims challenge (``get_token(scope, claims=...)``). MSAL-based credentials
        then request a new token: managed identity on App Service, VMs, Arc, Azure ML
        and Service Fabric, and client secret, certificate and workload identity
        credentials. If that call raises, a plain ``get_token`` follows. Credentials
        with an outside cache (Azure CLI, Azure PowerShell) and Cloud Shell managed
        identity may still return the rejected token. It is then returned again and
        a WARNING is logged.

        Raises:
            TokenAcquisitionError: the fetch failed or timed out.
            InvalidTokenError: the credential returned a token that fails :func:`check_token`.
        """
        self._raise_if_closed()

        with self._lock:
            if rejected is None and self._entry is not None:
                rejected = self._entry.token

        while True:
            with self._lock:
                newer = self._entry_newer_than(rejected)
                if newer is not None:
                    _LOGGER.debug("access token was already refreshed by another caller")
                    return newer.token
                if self._recently_reconfirmed(rejected) and self._entry is not None:
                    _LOGGER.debug("the credential returned this token again moments ago")
                    return self._entry.token
                flight = self._flight or self._start_flight(forced=True, rejected=rejected)

            token = self._wait_for(flight)
            if flight.forced or rejected is None:
                return self._usable_or_raise(token)

    # --- Closing -------------------------------------------------------------------

    def close(self) -> None:
        """Stop the background thread and close a credential this provider created. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            thread = self._thread
        self._wake.set()

        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=self._timeout)

        with self._credential_lock:
            credential = self._credential if self._owns_credential else None
            self._credential = None if self._owns_credential else self._credential
        if credential is not None:
            _close_credential(credential)

    def __enter__(self) -> TokenProvider:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- Cache state (call with self._lock held) -------------------------------------

    def _state_of(self, entry: Optional[_CacheEntry]) -> str:
        if entry is None:
            return _UNUSABLE
        wall = self._clock()
        mono = self._monotonic()
        if wall < entry.refresh_wall and mono < entry.refresh_mono:
            return _FRESH
        if wall < entry.usable_wall and mono < entry.usable_mono:
            return _STALE
        return _UNUSABLE

    def _is_usable(self, entry: Optional[_CacheEntry]) -> bool:
        return self._state_of(entry) != _UNUSABLE

    def _in_backoff(self) -> bool:
        return self._retry_at is not None and self._monotonic() < self._retry_at

    def _entry_newer_than(self, rejected: Optional[AccessToken]) -> Optional[_CacheEntry]:
        entry = self._entry
        if rejected is None or entry is None or not self._is_usable(entry):
            return None
        if entry.token.token == rejected.token or entry.token.fetched_at < rejected.fetched_at:
            return None
        return entry

    def _recently_reconfirmed(self, rejected: Optional[AccessToken]) -> bool:
        """Tell whether a forced refresh returned ``rejected`` again less than 30 s ago."""
        if rejected is None or self._reconfirmed is None:
            return False
        token, at = self._reconfirmed
        recent = self._monotonic() - at < _MAX_RETRY_DELAY
        return recent and token.token == rejected.token and self._is_usable(self._entry)

    def _make_entry(self, token: AccessToken, fetched_mono: float) -> _CacheEntry:
        lifetime = _token_lifetime(token)
        margin = self._refresh_margin
        if margin is None:
            margin = _default_margin(lifetime)
        gap = _safety_gap(lifetime, margin)

        # Remaining life measured at fetch time, carried over to the monotonic clock.
        expires_mono = fetched_mono + (token.expires_on - token.fetched_at)
        return _CacheEntry(
            token=token,
            refresh_wall=token.expires_on - margin,
            refresh_mono=expires_mono - margin,
            usable_wall=token.expires_on - gap,
            usable_mono=expires_mono - gap,
            margin=margin,
            gap=gap,
        )

    def _retry_delay(self) -> float:
        """Return the pause before the next refresh attempt after an unsuccessful one."""
        entry = self._entry
        if entry is not None and self._is_usable(entry):
            remaining = min(
                entry.usable_mono - self._monotonic(), entry.usable_wall - self._clock()
            )
            return min(_MAX_RETRY_DELAY, max(_MIN_RETRY_DELAY, remaining / 4))
        return min(_MAX_RETRY_DELAY, 2.0 ** min(self._failures_in_row, 5))

    # --- Flights -------------------------------------------------------------------

    def _start_flight(self, *, forced: bool, rejected: Optional[AccessToken]) -> _Flight:
        """Start a fetch in a daemon thread; call with self._lock held."""
        flight = _Flight(
            forced=forced, rejected=rejected, deadline=time.monotonic() + self._timeout
        )
        self._flight = flight
        worker = threading.Thread(
            target=self._run_flight,
            args=(flight,),
            name="securemysql-token-fetch",
            daemon=True,
        )
        worker.start()
        return flight

    def _wait_for(self, flight: _Flight) -> AccessToken:
        """Wait until ``flight`` ends or its deadline passes; return its token or raise."""
        finished = flight.done.wait(max(0.0, flight.deadline - time.monotonic()))
        if not finished:
            self._abandon(flight)
            raise TokenAcquisitionError(
                f"{self.credential_name} did not return an access token for scope "
                f"{self._scope} within {self._timeout:g} s. Likely fix: check that the "
                "managed identity endpoint or Microsoft Entra ID is reachable from this "
                "host, or raise the timeout",
                credential=self.credential_name,
                scope=self._scope,
                transient=True,
            )

        if flight.failure is not None:
            flight.failure.raise_error()
        assert flight.result is not None  # noqa: S101 - set whenever failure is None
        return flight.result

    def _abandon(self, flight: _Flight) -> None:
        """Detach a timed-out flight so that the next caller starts a new fetch."""
        with self._lock:
            if self._flight is not flight:
                return
            self._flight = None
            self._failures_in_row += 1
            self._retry_at = self._monotonic() + self._retry_delay()
        _LOGGER.warning(
            "%s did not return an access token for scope %s within %g s; "
            "the fetch continues in the background and the next request starts a new one",
            self.credential_name,
            self._scope,
            self._timeout,
        )

    def _await_refresh(self, flight: _Flight, fallback: Optional[_CacheEntry]) -> AccessToken:
        """Wait for ``flight``; serve ``fallback`` (a still usable cached entry) if it fails."""
        try:
            self._wait_for(flight)
        except TokenError as exc:
            with self._lock:
                still_usable = fallback is not None and self._is_usable(fallback)
            if fallback is None or not still_usable:
                raise
            _LOGGER.warning(
                "refreshing the access token ahead of expiry failed; serving the cached "
                "token (%s), which expires at %s: %s",
                fallback.token.identity,
                _format_utc(fallback.token.expires_on),
                exc,
            )
            return fallback.token

        with self._lock:
            entry = self._entry
            usable = self._is_usable(entry)
        if entry is not None and usable:
            return entry.token
        return self._usable_or_raise(flight.result)

    def _usable_or_raise(self, token: Optional[AccessToken]) -> AccessToken:
        """Return ``token`` unless it expires within its safety gap."""
        assert token is not None  # noqa: S101 - only called after a successful flight
        with self._lock:
            entry = self._entry
            if entry is not None and entry.token.token == token.token:
                if self._is_usable(entry):
                    return token
                gap = entry.gap
            else:
                gap = self._make_entry(token, self._monotonic()).gap
        remaining = token.expires_on - self._clock()
        raise TokenAcquisitionError(
            f"{self.credential_name} returned an access token for scope {self._scope} "
            f"that expires in {remaining:.0f} s, within the {gap:.0f} s safety gap; "
            "the credential keeps serving a cached token. Likely fix: retry shortly, "
            "or let securemysql create the credential (credential=None) so that it can "
            "bypass the credential's cache",
            credential=self.credential_name,
            scope=self._scope,
            transient=True,
        )

    # --- Fetching (worker threads) ---------------------------------------------------

    def _run_flight(self, flight: _Flight) -> None:
        token: Optional[AccessToken] = None
        fetched_mono = 0.0
        failure: Optional[_Failure] = None
        try:
            token, fetched_mono = self._fetch_for(flight)
        except InvalidTokenError as exc:
            failure = _Failure(build=_rebuilder(exc), cause=None)
        except TokenAcquisitionError as exc:
            failure = _Failure(build=_rebuilder(exc), cause=exc.__cause__)
        except Exception as exc:
            failure = self._acquisition_failure(exc)
        finally:
            if token is None and failure is None:
                failure = _Failure(
                    build=lambda: TokenAcquisitionError(
                        f"fetching an access token from {self.credential_name} was interrupted",
                        credential=self.credential_name,
                        scope=self._scope,
                        transient=True,
                    ),
                    cause=None,
                )
            self._complete(flight, token, fetched_mono, failure)

    def _fetch_for(self, flight: _Flight) -> tuple[AccessToken, float]:
        """Fetch once; fetch once more, past the credential's cache, if the token is unusable.

        At most two fetches per flight, plus a plain ``get_token`` when a claims
        challenge to a caller-supplied credential raised during a forced refresh.
        """
        if flight.forced:
            return self._fetch(bypass_cache=True, fallback_to_plain=True)

        token, fetched_mono = self._fetch(bypass_cache=False, fallback_to_plain=False)
        if self._is_usable(self._make_entry(token, fetched_mono)):
            return token, fetched_mono

        _LOGGER.info(
            "%s returned an access token that expires at %s, too soon to use; "
            "fetching again past the credential's cache",
            self.credential_name,
            _format_utc(token.expires_on),
        )
        try:
            return self._fetch(bypass_cache=True, fallback_to_plain=False)
        except Exception as exc:
            _LOGGER.warning(
                "fetching past the credential's cache failed: %s",
                _sanitize(str(exc)),
            )
            return token, fetched_mono

    def _fetch(self, *, bypass_cache: bool, fallback_to_plain: bool) -> tuple[AccessToken, float]:
        """Call the credential and check its token; return it with the monotonic fetch time."""
        if bypass_cache and self._owns_credential:
            credential = self._recreate_credential()
            raw = self._call_credential(credential, claims=None)
        elif bypass_cache:
            credential = self._credential_for_fetch()
            raw = self._call_with_claims(credential, fallback_to_plain=fallback_to_plain)
        else:
            credential = self._credential_for_fetch()
            raw = self._call_credential(credential, claims=None)

        fetched_at = self._clock()
        fetched_mono = self._monotonic()
        return self._to_access_token(raw, fetched_at), fetched_mono

    def _call_with_claims(self, credential: TokenCredential, *, fallback_to_plain: bool) -> Any:
        # A claims challenge in the form resources send for Continuous Access
        # Evaluation: "a token issued not before now". MSAL skips its cache for it.
        claims = json.dumps(
            {"access_token": {"nbf": {"essential": True, "value": str(int(self._clock()))}}}
        )
        try:
            return self._call_credential(credential, claims=claims)
        except Exception as exc:
            if not fallback_to_plain:
                raise
            _LOGGER.debug(
                "%s.get_token with a claims challenge failed (%s); calling it without",
                self.credential_name,
                _sanitize(str(exc)),
            )
            return self._call_credential(credential, claims=None)

    def _call_credential(self, credential: TokenCredential, *, claims: Optional[str]) -> Any:
        with self._lock:
            self._fetch_count += 1
        if claims is None:
            return credential.get_token(self._scope)
        return credential.get_token(self._scope, claims=claims)

    def _to_access_token(self, raw: Any, fetched_at: float) -> AccessToken:
        stripped, claims = _checked_token(raw.token, scope=self._scope, now=fetched_at)

        expires_on = float(claims["exp"])
        credential_expiry: Any = getattr(raw, "expires_on", None)
        if _is_finite_number(credential_expiry):
            expires_on = min(expires_on, float(credential_expiry))
        if expires_on <= fetched_at:
            raise TokenExpiredError(
                f"{self.credential_name} returned an access token that it reports as "
                f"expired at {_format_utc(expires_on)}; check the local clock"
            )

        return AccessToken(
            token=stripped, expires_on=expires_on, claims=claims, fetched_at=fetched_at
        )

    def _complete(
        self,
        flight: _Flight,
        token: Optional[AccessToken],
        fetched_mono: float,
        failure: Optional[_Failure],
    ) -> None:
        """Store a flight's outcome, wake its waiters and log it."""
        with self._lock:
            if token is not None:
                outcome = self._store(token, fetched_mono, flight)
                self._failures_in_row = 0
            else:
                outcome = "failed"
                self._failures_in_row += 1
                self._retry_at = self._monotonic() + self._retry_delay()
            flight.result = token
            flight.failure = failure
            if self._flight is flight:
                self._flight = None

        # Log before waking the waiters, so that their callers see the log first.
        self._log_outcome(flight, token, failure, outcome)
        flight.done.set()
        self._wake.set()

    def _store(self, token: AccessToken, fetched_mono: float, flight: _Flight) -> str:
        """Cache ``token`` if it is better than the cached one; return what happened."""
        previous = self._entry

        if previous is not None and previous.token.token == token.token:
            outcome = "same"
            if flight.forced:
                self._reconfirmed = (previous.token, self._monotonic())
        elif (
            previous is None
            or flight.forced
            or not self._is_usable(previous)
            or token.expires_on >= previous.token.expires_on
        ):
            self._entry = self._make_entry(token, fetched_mono)
            outcome = "new"
        else:
            outcome = "older"

        if self._state_of(self._entry) == _FRESH:
            self._retry_at = None
        else:
            self._retry_at = self._monotonic() + self._retry_delay()
        return outcome

    def _log_outcome(
        self,
        flight: _Flight,
        token: Optional[AccessToken],
        failure: Optional[_Failure],
        outcome: str,
    ) -> None:
        if failure is not None or token is None:
            message = str(failure.build()) if failure is not None else "no token returned"
            _LOGGER.warning("fetching an access token failed: %s", message)
            return

        remaining = token.expires_on - self._clock()
        if outcome == "new":
            _LOGGER.info(
                "%s access token from %s for scope %s (%s), expires at %s (in %.0f s)",
                "refreshed" if flight.forced else "fetched",
                self.credential_name,
                self._scope,
                token.identity,
                _format_utc(token.expires_on),
                remaining,
            )
        elif flight.forced and flight.rejected is not None and token.token == flight.rejected.token:
            _LOGGER.warning(
                "%s returned the rejected access token again (%s, expires at %s); it "
                "serves it from a cache that securemysql cannot bypass for this credential",
                self.credential_name,
                token.identity,
                _format_utc(token.expires_on),
            )
        else:
            _LOGGER.debug(
                "%s returned %s access token (%s, expires at %s, in %.0f s); keeping the cache",
                self.credential_name,
                "the cached" if outcome == "same" else "an older",
                token.identity,
                _format_utc(token.expires_on),
                remaining,
            )

    def _acquisition_failure(self, exc: Exception) -> _Failure:
        transient, fix = _classify_failure(exc)
        cause_text = _sanitize(str(exc)) or type(exc).__name__
        message = (
            f"{self.credential_name} could not get an access token for scope "
            f"{self._scope}: {cause_text}. Likely fix: {fix}"
        )
        name = self.credential_name
        scope = self._scope

        def build() -> TokenError:
            return TokenAcquisitionError(message, credential=name, scope=scope, transient=transient)

        # Chain the credential's exception only when nothing in it looked like a token.
        safe_to_chain = all(_redact(str(link)) == str(link) for link in _exception_chain(exc))
        return _Failure(build=build, cause=exc if safe_to_chain else None)

    # --- Credential ------------------------------------------------------------------

    def _credential_for_fetch(self) -> TokenCredential:
        with self._credential_lock:
            if self._credential is None:
                self._credential = self._create_default_credential()
            return self._credential

    def _recreate_credential(self) -> TokenCredential:
        """Replace the provider-owned credential, whose in-memory token cache then starts empty."""
        with self._credential_lock:
            old = self._credential
            self._credential = self._create_default_credential()
            credential = self._credential
        if old is not None:
            _close_credential(old)
        _LOGGER.debug("re-created DefaultAzureCredential to bypass its token cache")
        return credential

    def _create_default_credential(self) -> TokenCredential:
        self._raise_if_closed()
        try:
            from azure.identity import DefaultAzureCredential
        except ImportError as exc:
            raise TokenAcquisitionError(
                f"azure-identity cannot be imported ({exc}); install it with "
                "'pip install azure-identity' or pass a credential",
                credential="DefaultAzureCredential",
                scope=self._scope,
            ) from exc

        # azure-core transports read connection_timeout / read_timeout; the
        # developer-tool credentials (Azure CLI, PowerShell, azd) read process_timeout.
        options: dict[str, Any] = {
            "connection_timeout": self._timeout,
            "read_timeout": self._timeout,
            "process_timeout": self._timeout,
        }
        # Passing None would override azure-identity's default from AZURE_CLIENT_ID.
        if self._client_id is not None:
            options["managed_identity_client_id"] = self._client_id
        credential: TokenCredential = DefaultAzureCredential(**options)
        return credential

    # --- Background refresh ------------------------------------------------------------

    def _start_background_thread(self) -> None:
        if not self._background:
            return
        with self._lock:
            if self._thread is not None or self._closed:
                return
            self._thread = threading.Thread(
                target=self._background_loop, name="securemysql-token-refresh", daemon=True
            )
            self._thread.start()

    def _background_loop(self) -> None:
        while True:
            self._wake.clear()
            with self._lock:
                if self._closed:
                    return
                delay = self._background_delay()
            if delay > 0:
                self._wake.wait(min(delay, _MAX_BACKGROUND_SLEEP))
                continue
            self._refresh_in_background()

    def _background_delay(self) -> float:
        """Return seconds until the background thread should fetch; call with self._lock held."""
        if self._flight is not None:
            return math.inf
        entry = self._entry
        if entry is not None and self._state_of(entry) == _FRESH:
            return min(entry.refresh_wall - self._clock(), entry.refresh_mono - self._monotonic())
        if self._retry_at is not None:
            return max(0.0, self._retry_at - self._monotonic())
        return 0.0

    def _refresh_in_background(self) -> None:
        with self._lock:
            if self._closed:
                return
            flight = self._flight or self._start_flight(forced=False, rejected=None)
        try:
            self._wait_for(flight)
        except TokenError as exc:
            # The flight's failure is already logged at WARNING by _complete.
            _LOGGER.debug("background refresh of the access token failed: %s", exc)

    def _raise_if_closed(self) -> None:
        if self._closed:
            raise TokenAcquisitionError(
                "this TokenProvider is closed; create a new one",
                credential=self.credential_name,
                scope=self._scope,
            )


# --- Helpers ---------------------------------------------------------------------------


def _is_finite_number(value: object) -> bool:
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(float(value))
    )


def _close_credential(credential: object) -> None:
    close = getattr(credential, "close", None)
    if not callable(close):
        return
    try:
        close()
    except Exception as exc:  # closing is best effort; the provider is done with it
        _LOGGER.debug("closing %s failed: %s", type(credential).__name__, _sanitize(str(exc)))


def _rebuilder(exc: TokenError) -> Callable[[], TokenError]:
    """Return a factory for copies of ``exc`` (same class, message and attributes)."""
    if isinstance(exc, TokenAcquisitionError):
        message, credential, scope, transient = str(exc), exc.credential, exc.scope, exc.transient
        return lambda: TokenAcquisitionError(
            message, credential=credential, scope=scope, transient=transient
        )
    error_class, message = type(exc), str(exc)
    return lambda: error_class(message)


# Anything shaped like a JWT (the JSON header starts "eyJ" in base64url, or long
# segments), and values of token-like keys in JSON or key=value text.
_JWT_LIKE = re.compile(
    r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*"
    r"|[A-Za-z0-9_-]{20,}\.[A-Za-z0-9_-]{20,}\.[A-Za-z0-9_-]*"
)
_SECRET_VALUE = re.compile(
    r"""(?P<key>["']?(?:access_token|refresh_token|id_token|token|client_secret|secret)["']?"""
    r"""\s*[:=]\s*["']?)(?P<value>[^"'\s,;&}]+)""",
    re.IGNORECASE,
)
_MAX_CAUSE_LENGTH = 1500


def _redact(text: str) -> str:
    """Replace token-like content in ``text`` with ``[REDACTED]``."""
    redacted = _JWT_LIKE.sub("[REDACTED]", text)
    return _SECRET_VALUE.sub(r"\g<key>[REDACTED]", redacted)


def _sanitize(text: str) -> str:
    """Redact a credential's error message and fold it onto one line of limited length."""
    cleaned = " ".join(_redact(text).split())
    if len(cleaned) > _MAX_CAUSE_LENGTH:
        cleaned = cleaned[:_MAX_CAUSE_LENGTH] + " ..."
    return cleaned


def _exception_chain(exc: BaseException) -> Iterator[BaseException]:
    """Yield ``exc`` and its causes and contexts, each once, at most 10."""
    seen: set[int] = set()
    current: Optional[BaseException] = exc
    while current is not None and id(current) not in seen and len(seen) < 10:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


_FIX_TIMEOUT = "check that the identity endpoint is reachable, or raise the timeout"
_FIX_THROTTLED = "the identity endpoint throttled requests (HTTP 429); retry after a pause"
_FIX_SERVER = "the identity endpoint returned a server error; retry after a pause"
_FIX_UNREACHABLE = (
    "the identity endpoint is unreachable; check network access, proxy and firewall "
    "settings of this host"
)
_FIX_CLIENT_ID = (
    "check managed_identity_client_id: it must be the client ID of a user-assigned "
    "managed identity that is assigned to this resource"
)
_FIX_NO_IDENTITY = (
    "no credential is available here: on Azure, enable a managed identity for this "
    "resource (and pass managed_identity_client_id for a user-assigned one); "
    "elsewhere sign in with 'az login' or configure a service principal"
)
_FIX_DENIED = "the identity was rejected; check its client ID, tenant and permissions"
_FIX_UNKNOWN = "check the credential's configuration; the cause is chained to this error"

_CLIENT_ID_HINTS = (
    "no identity has been assigned",
    "identity not found",
    "identity is not assigned",
    "unable to load the proper managed identity",
    "invalid client id",
    "aadsts700016",
)
_UNREACHABLE_HINTS = (
    "connection refused",
    "failed to establish",
    "name or service not known",
    "temporary failure in name resolution",
    "network is unreachable",
    "connection reset",
    "connection aborted",
)
_SERVER_ERROR_HINTS = (
    "internal server error",
    "bad gateway",
    "service unavailable",
    "gateway timeout",
)
_TIMEOUT_NAMES = {
    "TimeoutError",
    "TimeoutExpired",
    "ServiceRequestTimeoutError",
    "ServiceResponseTimeoutError",
}
_CONNECTION_NAMES = {"ConnectionError", "ServiceRequestError", "ServiceResponseError"}


def _classify_failure(exc: BaseException) -> tuple[bool, str]:
    """Return (transient, likely fix) for a credential's exception.

    Time-outs, throttling (429), server errors (5xx) and connection errors are
    transient; an unavailable credential, a wrong client ID or a 4xx are not.

    NOTE: azure-identity often reports failures as ClientAuthenticationError with
    only a message, so this matches message text, which new wordings can defeat.
    """
    chain = list(_exception_chain(exc))
    text = " ".join(str(link) for link in chain).lower()
    class_names = {cls.__name__ for link in chain for cls in type(link).__mro__}
    statuses = {status for status in map(_status_code, chain) if status is not None}

    if class_names & _TIMEOUT_NAMES or "timed out" in text:
        return True, _FIX_TIMEOUT
    if 429 in statuses or re.search(r"\b429\b|too many requests|throttl", text):
        return True, _FIX_THROTTLED
    if any(500 <= status < 600 for status in statuses) or any(
        hint in text for hint in _SERVER_ERROR_HINTS
    ):
        return True, _FIX_SERVER
    if any(hint in text for hint in _CLIENT_ID_HINTS):
        return False, _FIX_CLIENT_ID
    if "CredentialUnavailableError" in class_names:
        return False, _FIX_NO_IDENTITY
    if class_names & _CONNECTION_NAMES or any(hint in text for hint in _UNREACHABLE_HINTS):
        return True, _FIX_UNREACHABLE
    # DefaultAzureCredential lists each unavailable credential in its message.
    if "authentication unavailable" in text:
        return False, _FIX_NO_IDENTITY
    if any(400 <= status < 500 for status in statuses):
        return False, _FIX_DENIED
    return False, _FIX_UNKNOWN


def _status_code(exc: BaseException) -> Optional[int]:
    status = getattr(exc, "status_code", None)
    if status is None:
        status = getattr(getattr(exc, "response", None), "status_code", None)
    return status if isinstance(status, int) else None
