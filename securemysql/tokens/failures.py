"""Turn a credential's exception into a TokenAcquisitionError with a likely fix.

azure-identity raises ``ClientAuthenticationError``, ``CredentialUnavailableError``
and azure-core transport errors, often with only a message to tell the causes
apart. This module decides whether a later attempt may succeed (``transient``),
names the likely fix, and removes anything shaped like a token from the text.
The HTTP statuses that :mod:`securemysql.tokens.credential` records take part in
the decision, because azure-identity's messages often leave them out.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Callable, Optional

from securemysql.errors import TokenAcquisitionError, TokenError
from securemysql.redaction import redact

_MAX_CAUSE_LENGTH = 1500
_MAX_CHAIN_LENGTH = 10
_MAX_STATUSES_SHOWN = 10


@dataclass(frozen=True)
class Failure:
    """A failed fetch, turned into a new exception for each waiter.

    Each waiter raises its own exception object, because one object raised in
    several threads would share and overwrite its traceback.
    """

    build: Callable[[], TokenError]
    cause: Optional[BaseException]

    def raise_error(self) -> None:
        raise self.build() from self.cause


def rebuilder(exc: TokenError) -> Callable[[], TokenError]:
    """Return a factory for copies of ``exc`` (same class, message and attributes)."""
    if isinstance(exc, TokenAcquisitionError):
        message, credential, scope, transient = str(exc), exc.credential, exc.scope, exc.transient
        return lambda: TokenAcquisitionError(
            message, credential=credential, scope=scope, transient=transient
        )
    error_class, message = type(exc), str(exc)
    return lambda: error_class(message)


def acquisition_failure(
    exc: Exception,
    *,
    credential_name: str,
    scope: str,
    http_statuses: Sequence[int] = (),
    repeated_statuses: Sequence[int] = (),
) -> Failure:
    """Describe a credential's exception as a TokenAcquisitionError with a likely fix.

    ``http_statuses`` are the statuses of the HTTP responses the credential
    received during the failed fetch. ``repeated_statuses`` are those of an
    earlier failure that the credential repeated without a request. Both are
    named in the message and take part in the classification.

    The credential's exception is chained as the cause only when none of the
    exceptions in its chain contains text that :func:`securemysql.redaction.redact`
    would change, so that no token reaches a logged traceback.
    """
    transient, fix = classify_failure(exc, [*http_statuses, *repeated_statuses])
    cause_text = sanitize(str(exc)) or type(exc).__name__
    responses = describe_responses(http_statuses)
    if repeated_statuses and not http_statuses:
        responses = (
            "the credential repeated an earlier failure without sending a request; "
            f"before that, {describe_responses(repeated_statuses)}"
        )
    message = (
        f"{credential_name} could not get an access token for scope {scope}: {cause_text}"
        f"{f' ({responses})' if responses else ''}. Likely fix: {fix}"
    )

    def build() -> TokenError:
        return TokenAcquisitionError(
            message, credential=credential_name, scope=scope, transient=transient
        )

    safe_to_chain = all(redact(str(link)) == str(link) for link in exception_chain(exc))
    return Failure(build=build, cause=exc if safe_to_chain else None)


def timeout_error(
    *, credential_name: str, scope: str, timeout: float, http_statuses: Sequence[int]
) -> TokenAcquisitionError:
    """Return the transient error for a credential call still running after ``timeout`` s."""
    responses = describe_responses(http_statuses)
    if 429 in http_statuses:
        fix = _FIX_THROTTLED
    elif any(500 <= status < 600 for status in http_statuses):
        fix = _FIX_SERVER
    else:
        fix = (
            "check that the managed identity endpoint or Microsoft Entra ID is reachable "
            "from this host, or raise the timeout"
        )
    return TokenAcquisitionError(
        f"{credential_name} did not return an access token for scope {scope} within "
        f"{timeout:g} s{f'; so far {responses}' if responses else ''}. Likely fix: {fix}",
        credential=credential_name,
        scope=scope,
        transient=True,
    )


def describe_responses(http_statuses: Sequence[int]) -> str:
    """Return e.g. ``the token endpoint returned HTTP 500, 500``, or "" without responses."""
    if not http_statuses:
        return ""
    shown = ", ".join(str(status) for status in http_statuses[-_MAX_STATUSES_SHOWN:])
    if len(http_statuses) > _MAX_STATUSES_SHOWN:
        shown = f"... {shown} ({len(http_statuses)} responses)"
    return f"the token endpoint returned HTTP {shown}"


def sanitize(text: str) -> str:
    """Redact a credential's error message and fold it onto one line of limited length."""
    cleaned = " ".join(redact(text).split())
    if len(cleaned) > _MAX_CAUSE_LENGTH:
        cleaned = cleaned[:_MAX_CAUSE_LENGTH] + " ..."
    return cleaned


def exception_chain(exc: BaseException) -> Iterator[BaseException]:
    """Yield ``exc`` and its causes and contexts, each once, at most 10."""
    seen: set[int] = set()
    current: Optional[BaseException] = exc
    while current is not None and id(current) not in seen and len(seen) < _MAX_CHAIN_LENGTH:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


# --- Classification ----------------------------------------------------------------

_FIX_TIMEOUT = "check that the identity endpoint is reachable, or raise the timeout"
_FIX_THROTTLED = "the identity endpoint throttled requests (HTTP 429); retry after a pause"
_FIX_SERVER = "the identity endpoint returned a server error; retry after a pause"
_FIX_BAD_RESPONSE = (
    "the identity endpoint returned a response that is not valid JSON; retry after a "
    "pause, and check for a proxy that alters responses"
)
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
# azure-core's DecodeError ("JSON is invalid: ..."); DefaultAzureCredential keeps only its text.
_BAD_RESPONSE_HINTS = ("json is invalid",)
_TIMEOUT_NAMES = {
    "TimeoutError",
    "TimeoutExpired",
    "ServiceRequestTimeoutError",
    "ServiceResponseTimeoutError",
}
_CONNECTION_NAMES = {"ConnectionError", "ServiceRequestError", "ServiceResponseError"}


def classify_failure(exc: BaseException, http_statuses: Sequence[int] = ()) -> tuple[bool, str]:
    """Return (transient, likely fix) for a credential's exception.

    Time-outs, throttling (429), server errors (5xx), responses that are not
    JSON and connection errors are transient; an unavailable credential, a wrong
    client ID or a 4xx are not. ``http_statuses`` adds the statuses of responses
    the credential received to those found on the exceptions.

    NOTE: azure-identity often reports failures as ClientAuthenticationError with
    only a message, so this matches message text, which new wordings can defeat.
    """
    chain = list(exception_chain(exc))
    text = " ".join(str(link) for link in chain).lower()
    class_names = {cls.__name__ for link in chain for cls in type(link).__mro__}
    statuses = {status for status in map(_status_code, chain) if status is not None}
    statuses.update(http_statuses)

    if class_names & _TIMEOUT_NAMES or "timed out" in text:
        return True, _FIX_TIMEOUT
    if 429 in statuses or re.search(r"\b429\b|too many requests|throttl", text):
        return True, _FIX_THROTTLED
    if any(500 <= status < 600 for status in statuses) or any(
        hint in text for hint in _SERVER_ERROR_HINTS
    ):
        return True, _FIX_SERVER
    if "DecodeError" in class_names or any(hint in text for hint in _BAD_RESPONSE_HINTS):
        return True, _FIX_BAD_RESPONSE
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
