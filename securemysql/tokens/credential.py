"""The azure-identity credential a TokenProvider calls, and how to get past its cache.

azure-identity credentials cache tokens in memory, so asking again may return a
token that the server has just rejected. :class:`CredentialHolder` gets a new
token anyway: it re-creates a DefaultAzureCredential that it created itself, and
sends a claims challenge to a credential that the caller gave.

The holder also records the HTTP status of every response that a created
credential receives. azure-identity 1.27 reports an App Service identity endpoint
that returns HTTP 500 or 429 as "managed identity configuration not found", so
the status is the only reliable sign of what went wrong. MSAL 1.39, which it
uses for managed identity, then replays such a response for 5 s (or the
Retry-After time) without sending a request. The holder recognises the repeated
failure by its text and reports the statuses of the earlier one.

azure-identity is imported only when a DefaultAzureCredential is first created.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Optional

from securemysql.errors import TokenAcquisitionError
from securemysql.tokens.failures import sanitize

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential

_LOGGER = logging.getLogger("securemysql.tokens")

DEFAULT_CREDENTIAL_NAME = "DefaultAzureCredential"


@dataclass
class ResponseLog:
    """HTTP responses behind one fetch, which may call the credential more than once.

    Attributes:
        statuses: the status of each response received, in order. The fetching
            thread appends to it, so another thread may read it while the fetch runs.
        repeated: statuses of an earlier failed call whose failure the credential
            repeated without sending a request; empty when there was none.
    """

    statuses: list[int] = field(default_factory=list)
    repeated: tuple[int, ...] = ()


class CredentialHolder:
    """Hold the credential, create DefaultAzureCredential lazily, and count calls.

    Args:
        credential: a credential from the caller (anything with ``get_token``), or
            None to create DefaultAzureCredential on first use. Only a created
            credential can be re-created and is closed by :meth:`close`.
        client_id: client ID of a user-assigned managed identity for the created
            DefaultAzureCredential, or None for azure-identity's default.
        timeout: seconds for the created credential's network and process time-outs.
        scope: the scope tokens are requested for, named in errors.

    Thread-safe.
    """

    def __init__(
        self,
        credential: Optional[TokenCredential],
        *,
        client_id: Optional[str],
        timeout: float,
        scope: str,
    ) -> None:
        self._credential = credential
        self.owned = credential is None
        self._client_id = client_id
        self._timeout = timeout
        self._scope = scope
        self._lock = threading.Lock()
        self._call_count = 0
        self._closed = False
        # Per thread: the ResponseLog of the fetch that the thread is running.
        self._current_log = threading.local()
        # The created credential whose last failed call received responses, the
        # text of that failure and the statuses of those responses.
        self._last_failure: Optional[tuple[object, str, tuple[int, ...]]] = None

    @property
    def name(self) -> str:
        """Class name of the credential (``DefaultAzureCredential`` if the holder creates it)."""
        if self.owned:
            return DEFAULT_CREDENTIAL_NAME
        return type(self._credential).__name__

    @property
    def call_count(self) -> int:
        """Number of ``get_token`` calls made so far, failed ones included."""
        with self._lock:
            return self._call_count

    def fetch(
        self,
        *,
        bypass_cache: bool,
        fallback_to_plain: bool,
        now: float,
        responses: Optional[ResponseLog] = None,
    ) -> Any:
        """Call ``get_token`` for the scope and return the credential's result.

        With ``bypass_cache``, a created credential is re-created first, and a
        caller's credential receives a claims challenge built from ``now`` (Unix
        epoch seconds). If that challenge raises and ``fallback_to_plain`` is set,
        a plain ``get_token`` follows.

        ``responses``, when given, receives the HTTP statuses that a created
        credential gets during this fetch. A caller's credential reports nothing.

        Raises:
            TokenAcquisitionError: the holder is closed or azure-identity is missing.
            Exception: whatever the credential raises.
        """
        self._current_log.responses = responses
        try:
            return self._fetch(
                bypass_cache=bypass_cache, fallback_to_plain=fallback_to_plain, now=now
            )
        finally:
            self._current_log.responses = None

    def _fetch(self, *, bypass_cache: bool, fallback_to_plain: bool, now: float) -> Any:
        if bypass_cache and self.owned:
            return self._call(self._recreate(), claims=None)

        credential = self._current()
        if bypass_cache:
            return self._call_with_claims(credential, fallback_to_plain=fallback_to_plain, now=now)
        return self._call(credential, claims=None)

    def close(self) -> None:
        """Close a created credential; a caller's credential is left open. Idempotent."""
        with self._lock:
            self._closed = True
            credential = self._credential if self.owned else None
            if self.owned:
                self._credential = None
        if credential is not None:
            _close_credential(credential)

    # --- Calls ---------------------------------------------------------------------

    def _call_with_claims(
        self, credential: TokenCredential, *, fallback_to_plain: bool, now: float
    ) -> Any:
        # A claims challenge in the form resources send for Continuous Access
        # Evaluation: "a token issued not before now". MSAL skips its cache for it.
        claims = json.dumps({"access_token": {"nbf": {"essential": True, "value": str(int(now))}}})
        try:
            return self._call(credential, claims=claims)
        except Exception as exc:
            if not fallback_to_plain:
                raise
            _LOGGER.debug(
                "%s.get_token with a claims challenge failed (%s); calling it without",
                self.name,
                sanitize(str(exc)),
            )
            return self._call(credential, claims=None)

    def _call(self, credential: TokenCredential, *, claims: Optional[str]) -> Any:
        with self._lock:
            self._call_count += 1

        responses: Optional[ResponseLog] = getattr(self._current_log, "responses", None)
        received_before = len(responses.statuses) if responses is not None else 0
        try:
            if claims is None:
                return credential.get_token(self._scope)
            return credential.get_token(self._scope, claims=claims)
        except Exception as exc:
            if responses is not None:
                self._note_failure(credential, exc, responses, received_before)
            raise

    def _note_failure(
        self,
        credential: TokenCredential,
        exc: Exception,
        responses: ResponseLog,
        received_before: int,
    ) -> None:
        """Remember a failure that came with responses; spot one repeated without any."""
        received = tuple(responses.statuses[received_before:])
        text = str(exc)
        with self._lock:
            if received:
                self._last_failure = (credential, text, received)
                return
            last = self._last_failure
        if last is not None and last[0] is credential and last[1] == text:
            responses.repeated = last[2]

    # --- The created DefaultAzureCredential ------------------------------------------

    def _current(self) -> TokenCredential:
        with self._lock:
            if self._credential is None:
                self._credential = self._create_default_credential()
            return self._credential

    def _recreate(self) -> TokenCredential:
        """Replace the created credential, whose in-memory token cache then starts empty."""
        with self._lock:
            old = self._credential
            self._credential = self._create_default_credential()
            credential = self._credential
        if old is not None:
            _close_credential(old)
        _LOGGER.debug("re-created DefaultAzureCredential to bypass its token cache")
        return credential

    def _create_default_credential(self) -> TokenCredential:
        """Create DefaultAzureCredential; call with self._lock held."""
        if self._closed:
            raise TokenAcquisitionError(
                "this TokenProvider is closed; create a new one",
                credential=self.name,
                scope=self._scope,
            )
        try:
            from azure.identity import DefaultAzureCredential
        except ImportError as exc:
            raise TokenAcquisitionError(
                f"azure-identity cannot be imported ({exc}); install it with "
                "'pip install azure-identity' or pass a credential",
                credential=DEFAULT_CREDENTIAL_NAME,
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
        # azure-core's CustomHookPolicy calls this for every response, retries included.
        options["raw_response_hook"] = self._record_response
        credential: TokenCredential = DefaultAzureCredential(**options)
        return credential

    def _record_response(self, response: Any) -> None:
        """Append the status of an azure-core PipelineResponse to the calling thread's log."""
        responses: Optional[ResponseLog] = getattr(self._current_log, "responses", None)
        status = getattr(getattr(response, "http_response", None), "status_code", None)
        if responses is not None and isinstance(status, int):
            responses.statuses.append(status)


def _close_credential(credential: object) -> None:
    close = getattr(credential, "close", None)
    if not callable(close):
        return
    try:
        close()
    except Exception as exc:  # closing is best effort; the holder is done with it
        _LOGGER.debug("closing %s failed: %s", type(credential).__name__, sanitize(str(exc)))
