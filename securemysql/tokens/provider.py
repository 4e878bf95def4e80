"""TokenProvider: a thread-safe cache of access tokens with single-flight refresh.

Times are in seconds: ``expires_on`` and ``fetched_at`` are Unix epoch seconds
(UTC); margins, gaps and time-outs are durations in seconds.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from typing import TYPE_CHECKING, Callable, Optional

from securemysql import redaction
from securemysql.errors import (
    ConfigurationError,
    InvalidTokenError,
    TokenAcquisitionError,
    TokenError,
)
from securemysql.tokens.cache import (
    FRESH,
    MAX_RETRY_DELAY,
    STALE,
    UNUSABLE,
    CacheEntry,
    make_entry,
    retry_delay,
)
from securemysql.tokens.claims import AccessToken, format_utc, is_finite_number, to_access_token
from securemysql.tokens.credential import CredentialHolder, ResponseLog
from securemysql.tokens.failures import (
    Failure,
    acquisition_failure,
    rebuilder,
    sanitize,
    timeout_error,
)
from securemysql.tokens.scopes import resolve_scope

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential

_LOGGER = logging.getLogger("securemysql.tokens")

# The background thread wakes at least this often, because a sleep measured on
# the monotonic clock may overrun while the host is suspended.
_MAX_BACKGROUND_SLEEP = 30.0


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
        self.failure: Optional[Failure] = None
        self.responses = ResponseLog()


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

    Every token the credential returns is passed to
    :func:`securemysql.redaction.register_secret`, so log records that contain it
    are redacted.

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
        _check_options(credential, managed_identity_client_id, timeout, refresh_margin)

        self._scope = resolve_scope(scope=scope, cloud=cloud, host=host)
        self._credential = CredentialHolder(
            credential,
            client_id=managed_identity_client_id,
            timeout=float(timeout),
            scope=self._scope,
        )
        self._timeout = float(timeout)
        self._refresh_margin = None if refresh_margin is None else float(refresh_margin)
        self._background = background_refresh
        self._clock = clock
        self._monotonic = monotonic

        self._lock = threading.Lock()
        self._entry: Optional[CacheEntry] = None
        self._flight: Optional[_Flight] = None
        self._retry_at: Optional[float] = None
        # A token that a forced refresh got back unchanged, and when (monotonic).
        self._reconfirmed: Optional[tuple[AccessToken, float]] = None
        self._failures_in_row = 0
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
        return self._credential.name

    @property
    def fetch_count(self) -> int:
        """Number of ``credential.get_token`` calls made so far, failed ones included."""
        return self._credential.call_count

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
            if entry is not None and state == FRESH:
                _LOGGER.debug("access token cache hit (%s)", entry.token.identity)
                return entry.token

            # A stale token is served while another thread refreshes it, or during the
            # pause after a failed refresh. Otherwise this caller refreshes it and
            # falls back to it if the refresh fails.
            if entry is not None and state == STALE:
                if self._background or self._flight is not None or self._in_backoff():
                    self._wake.set()
                    _LOGGER.debug("serving cached access token; refresh is pending")
                    return entry.token
                flight = self._start_flight(forced=False, rejected=None)
                fallback: Optional[CacheEntry] = entry
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
            # The joined flight was an ordinary refresh, which may have returned the
            # rejected token from the credential's cache: check again, then force one.

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

        self._credential.close()

    def __enter__(self) -> TokenProvider:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- Cache state (call with self._lock held) -------------------------------------

    def _state_of(self, entry: Optional[CacheEntry]) -> str:
        if entry is None:
            return UNUSABLE
        return entry.state(self._clock(), self._monotonic())

    def _is_usable(self, entry: Optional[CacheEntry]) -> bool:
        return self._state_of(entry) != UNUSABLE

    def _in_backoff(self) -> bool:
        return self._retry_at is not None and self._monotonic() < self._retry_at

    def _entry_newer_than(self, rejected: Optional[AccessToken]) -> Optional[CacheEntry]:
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
        recent = self._monotonic() - at < MAX_RETRY_DELAY
        return recent and token.token == rejected.token and self._is_usable(self._entry)

    def _make_entry(self, token: AccessToken, fetched_mono: float) -> CacheEntry:
        return make_entry(token, fetched_mono, self._refresh_margin)

    def _schedule_retry(self) -> None:
        """Set the earliest monotonic time of the next refresh attempt."""
        delay = retry_delay(
            self._entry,
            wall=self._clock(),
            mono=self._monotonic(),
            failures_in_row=self._failures_in_row,
        )
        self._retry_at = self._monotonic() + delay

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
            raise timeout_error(
                credential_name=self.credential_name,
                scope=self._scope,
                timeout=self._timeout,
                http_statuses=list(flight.responses.statuses),
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
            self._schedule_retry()
        _LOGGER.warning(
            "%s did not return an access token for scope %s within %g s; "
            "the fetch continues in the background and the next request starts a new one",
            self.credential_name,
            self._scope,
            self._timeout,
        )

    def _await_refresh(self, flight: _Flight, fallback: Optional[CacheEntry]) -> AccessToken:
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
                format_utc(fallback.token.expires_on),
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
        failure: Optional[Failure] = None
        try:
            token, fetched_mono = self._fetch_for(flight)
        except InvalidTokenError as exc:
            failure = Failure(build=rebuilder(exc), cause=None)
        except TokenAcquisitionError as exc:
            failure = Failure(build=rebuilder(exc), cause=exc.__cause__)
        except Exception as exc:
            failure = acquisition_failure(
                exc,
                credential_name=self.credential_name,
                scope=self._scope,
                http_statuses=list(flight.responses.statuses),
                repeated_statuses=flight.responses.repeated,
            )
        finally:
            if token is None and failure is None:
                failure = self._interrupted_failure()
            self._complete(flight, token, fetched_mono, failure)

    def _interrupted_failure(self) -> Failure:
        """Describe a fetch that ended without a result or an Exception (KeyboardInterrupt)."""
        message = f"fetching an access token from {self.credential_name} was interrupted"
        name = self.credential_name
        scope = self._scope
        return Failure(
            build=lambda: TokenAcquisitionError(
                message, credential=name, scope=scope, transient=True
            ),
            cause=None,
        )

    def _fetch_for(self, flight: _Flight) -> tuple[AccessToken, float]:
        """Fetch once; fetch once more, past the credential's cache, if the token is unusable.

        At most two fetches per flight, plus a plain ``get_token`` when a claims
        challenge to a caller-supplied credential raised during a forced refresh.
        """
        if flight.forced:
            return self._fetch(flight, bypass_cache=True, fallback_to_plain=True)

        token, fetched_mono = self._fetch(flight, bypass_cache=False, fallback_to_plain=False)
        if self._is_usable(self._make_entry(token, fetched_mono)):
            return token, fetched_mono

        _LOGGER.info(
            "%s returned an access token that expires at %s, too soon to use; "
            "fetching again past the credential's cache",
            self.credential_name,
            format_utc(token.expires_on),
        )
        try:
            return self._fetch(flight, bypass_cache=True, fallback_to_plain=False)
        except Exception as exc:
            _LOGGER.warning(
                "fetching past the credential's cache failed: %s",
                sanitize(str(exc)),
            )
            return token, fetched_mono

    def _fetch(
        self, flight: _Flight, *, bypass_cache: bool, fallback_to_plain: bool
    ) -> tuple[AccessToken, float]:
        """Call the credential and check its token; return it with the monotonic fetch time."""
        raw = self._credential.fetch(
            bypass_cache=bypass_cache,
            fallback_to_plain=fallback_to_plain,
            now=self._clock(),
            responses=flight.responses,
        )
        fetched_at = self._clock()
        fetched_mono = self._monotonic()
        _register_secret(raw)

        token = to_access_token(
            raw, scope=self._scope, fetched_at=fetched_at, credential_name=self.credential_name
        )
        return token, fetched_mono

    def _complete(
        self,
        flight: _Flight,
        token: Optional[AccessToken],
        fetched_mono: float,
        failure: Optional[Failure],
    ) -> None:
        """Store a flight's outcome, wake its waiters and log it."""
        with self._lock:
            if token is not None:
                outcome = self._store(token, fetched_mono, flight)
                self._failures_in_row = 0
            else:
                outcome = "failed"
                self._failures_in_row += 1
                self._schedule_retry()
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

        if self._state_of(self._entry) == FRESH:
            self._retry_at = None
        else:
            self._schedule_retry()
        return outcome

    def _log_outcome(
        self,
        flight: _Flight,
        token: Optional[AccessToken],
        failure: Optional[Failure],
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
                format_utc(token.expires_on),
                remaining,
            )
        elif flight.forced and flight.rejected is not None and token.token == flight.rejected.token:
            _LOGGER.warning(
                "%s returned the rejected access token again (%s, expires at %s); it "
                "serves it from a cache that securemysql cannot bypass for this credential",
                self.credential_name,
                token.identity,
                format_utc(token.expires_on),
            )
        else:
            _LOGGER.debug(
                "%s returned %s access token (%s, expires at %s, in %.0f s); keeping the cache",
                self.credential_name,
                "the cached" if outcome == "same" else "an older",
                token.identity,
                format_utc(token.expires_on),
                remaining,
            )

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
        if entry is not None and self._state_of(entry) == FRESH:
            return entry.seconds_until_refresh(self._clock(), self._monotonic())
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


def _check_options(
    credential: object,
    managed_identity_client_id: Optional[str],
    timeout: float,
    refresh_margin: Optional[float],
) -> None:
    """Raise ConfigurationError for invalid or conflicting TokenProvider arguments."""
    if credential is not None and managed_identity_client_id is not None:
        raise ConfigurationError(
            "managed_identity_client_id is ambiguous together with a credential; "
            "pass it to the credential (for example "
            "ManagedIdentityCredential(client_id=...)) or omit the credential"
        )
    if not is_finite_number(timeout) or timeout <= 0:
        raise ConfigurationError(f"timeout must be a positive number of seconds, got {timeout!r}")
    if refresh_margin is not None and (not is_finite_number(refresh_margin) or refresh_margin < 0):
        raise ConfigurationError(
            f"refresh_margin must be a non-negative number of seconds, got {refresh_margin!r}"
        )


def _register_secret(raw: object) -> None:
    """Register the credential's token with the log redaction, before any check can fail."""
    token = getattr(raw, "token", None)
    if isinstance(token, str) and len(token.strip()) >= redaction.MIN_SECRET_LENGTH:
        redaction.register_secret(token.strip())
