"""Stages 4 to 6: obtain an access token, log in through the SDK, and look at the session.

The token itself never leaves this module's local variables: stages record
the credential's name, the scope and a few decoded claims only.
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
from collections.abc import Iterator, Mapping
from datetime import datetime, timezone
from typing import Any, Optional

from securemysql import redaction
from securemysql.check.stage import FactRecorder, RunState, StageFailed
from securemysql.errors import (
    AuthenticationError,
    ConnectionFailedError,
    InvalidTokenError,
    SecureMySQLError,
    TLSError,
    TokenAcquisitionError,
    TokenAudienceError,
    TokenError,
    TokenExpiredError,
)
from securemysql.tokens import TokenProvider, audience_for_scope

logger = logging.getLogger("securemysql.check")

# Claims shown in the report: (claim, label). Everything else stays out of it.
_REPORTED_CLAIMS = (
    ("aud", "audience"),
    ("iss", "issuer"),
    ("tid", "tenant id"),
    ("oid", "object id"),
    ("appid", "app id"),
    ("azp", "app id (azp)"),
    ("upn", "UPN"),
    ("preferred_username", "user name"),
    ("unique_name", "unique name"),
    ("idtyp", "identity type"),
)
_MAX_CLAIM_LENGTH = 200

_ER_DBACCESS_DENIED = 1044
_ER_ACCESS_DENIED = 1045
_ER_BAD_DB = 1049


# --- Stage 4: token ----------------------------------------------------------------


def run_token(state: RunState, facts: FactRecorder) -> None:
    """Fetch an access token through azure-identity; record its source and claims."""
    options = state.options
    provider = TokenProvider(
        scope=state.scope,
        host=options.host,
        managed_identity_client_id=options.client_id,
        timeout=options.timeout,
    )
    state.provider = provider
    facts.add("scope", "scope", provider.scope)
    facts.add("client_id", "client id", options.client_id, options.client_id or "none given")

    with _credential_names() as names:
        try:
            token = provider.get_token()
        except TokenError as exc:
            facts.add("credential", "credential", _credential_text(provider, names))
            raise _token_failure(exc, provider.scope) from exc

    redaction.register_secret(token.token)
    state.token = token
    credential = _credential_text(provider, names)
    facts.add("credential", "credential", credential)

    claims = _reported_claims(token.claims)
    facts.add("claims", "claims", claims, _claims_text(claims))
    expires = datetime.fromtimestamp(token.expires_on, tz=timezone.utc)
    remaining = token.expires_on - time.time()
    facts.add(
        "expires_at",
        "expires",
        expires.isoformat(),
        f"{expires.isoformat()} (in {remaining / 60:.0f} min)",
    )
    facts.summary = f"token from {credential}"


class _CredentialNameFilter(logging.Filter):
    """Picks the credential's name out of azure-identity's "acquired a token from" message.

    Attached to an azure-identity logger whose level was lowered to INFO, it
    drops the records that the logger's previous level would have dropped, so
    the output does not change.
    """

    def __init__(self, previous_level: int, names: list[str]) -> None:
        super().__init__()
        self._previous_level = previous_level
        self._names = names

    def filter(self, record: logging.LogRecord) -> bool:
        match = _ACQUIRED_FROM.search(record.getMessage())
        if match is not None:
            self._names.append(match.group(1))
        return record.levelno >= self._previous_level


# DefaultAzureCredential tries several credentials in turn and logs at INFO which
# one returned the token (azure-identity 1.x, from these two modules).
_AZURE_IDENTITY_LOGGERS = (
    "azure.identity._credentials.default",
    "azure.identity._credentials.chained",
)
_ACQUIRED_FROM = re.compile(r"acquired a token from (\w+)")


@contextlib.contextmanager
def _credential_names() -> Iterator[list[str]]:
    """Collect, for the block, the names of credentials that DefaultAzureCredential used."""
    names: list[str] = []
    installed: list[tuple[logging.Logger, int, _CredentialNameFilter]] = []
    for logger_name in _AZURE_IDENTITY_LOGGERS:
        azure_logger = logging.getLogger(logger_name)
        name_filter = _CredentialNameFilter(azure_logger.getEffectiveLevel(), names)
        installed.append((azure_logger, azure_logger.level, name_filter))
        azure_logger.addFilter(name_filter)
        if azure_logger.getEffectiveLevel() > logging.INFO:
            azure_logger.setLevel(logging.INFO)
    try:
        yield names
    finally:
        for azure_logger, level, installed_filter in installed:
            azure_logger.removeFilter(installed_filter)
            azure_logger.setLevel(level)


def _credential_text(provider: TokenProvider, names: list[str]) -> str:
    if not names or names[-1] == provider.credential_name:
        return provider.credential_name
    return f"{names[-1]} (through {provider.credential_name})"


def _reported_claims(claims: Mapping[str, Any]) -> dict[str, Any]:
    reported: dict[str, Any] = {}
    for claim, _label in _REPORTED_CLAIMS:
        value = claims.get(claim)
        if value is None:
            continue
        reported[claim] = value if isinstance(value, list) else str(value)[:_MAX_CLAIM_LENGTH]
    return reported


def _claims_text(claims: Mapping[str, Any]) -> str:
    labels = dict(_REPORTED_CLAIMS)
    return "; ".join(f"{labels[claim]} {value}" for claim, value in claims.items()) or "none"


def _token_failure(exc: TokenError, scope: str) -> StageFailed:
    message = str(exc)
    if isinstance(exc, TokenExpiredError):
        return StageFailed(
            "the credential returned an expired token",
            cause=message,
            fix=(
                "Check this machine's clock (timedatectl or w32tm). If the clock is right, the "
                "credential serves a stale token: restart the process or sign in again "
                "(az login) to clear its cache."
            ),
        )
    if isinstance(exc, TokenAudienceError):
        return StageFailed(
            "the token is for another audience",
            cause=message,
            fix=(
                f"Tokens for this server need audience {audience_for_scope(scope)}. Pass "
                "--scope for the server's cloud (or drop a wrong --scope), and check that the "
                "credential honours the requested scope."
            ),
        )
    if isinstance(exc, InvalidTokenError):
        return StageFailed(
            "the credential returned an unusable token",
            cause=message,
            fix="Check which credential is configured; it must return a Microsoft Entra JWT.",
        )

    cause, _, fix = message.partition(" Likely fix: ")
    transient = isinstance(exc, TokenAcquisitionError) and exc.transient
    return StageFailed(
        "no access token",
        cause=cause,
        fix=(fix or "Check the credential's configuration.")
        + (" The failure looks transient: run the check again." if transient else ""),
    )


# --- Stage 5: authentication ---------------------------------------------------------


def run_authentication(state: RunState, facts: FactRecorder) -> None:
    """Log in through the SDK's ConnectionFactory with retries disabled."""
    from securemysql.drivers import connection_tls_info
    from securemysql.factory import ConnectionFactory
    from securemysql.retry import RetryPolicy

    options = state.options
    facts.add("user", "user", options.user)
    facts.add("database", "database", options.database)
    facts.add("driver", "driver", options.driver)

    started = time.perf_counter()
    try:
        factory = ConnectionFactory(
            options.host,
            options.user,
            port=options.port,
            database=options.database,
            driver=options.driver,
            token_provider=state.provider,
            ssl_ca=options.ssl_ca,
            retry=RetryPolicy.disabled(),
            connect_timeout=options.timeout,
            program_name="securemysql-check",
        )
        state.connection = factory()
    except ConnectionFailedError as exc:
        if exc.errno in (_ER_BAD_DB, _ER_DBACCESS_DENIED):
            _accept_with_database_rejection(state, facts, exc)
            return
        raise _login_failure(state, exc) from exc
    except SecureMySQLError as exc:
        raise _login_failure(state, exc) from exc
    elapsed_ms = (time.perf_counter() - started) * 1000.0

    facts.add("login_ms", "login time", round(elapsed_ms, 3), f"{elapsed_ms:.1f} ms")
    client_tls = connection_tls_info(state.connection)
    if client_tls is not None:
        facts.add(
            "client_tls",
            "TLS (client view)",
            {"version": client_tls.version, "cipher": client_tls.cipher},
            f"{client_tls.version}, {client_tls.cipher}",
        )
    facts.summary = f"logged in as {options.user!r} with the access token"


def _accept_with_database_rejection(
    state: RunState, facts: FactRecorder, exc: ConnectionFailedError
) -> None:
    """Pass this stage and leave the database error to the session stage.

    MySQL and MariaDB check the database only after the credentials were
    accepted, so 1044 and 1049 prove that authentication itself worked.
    """
    options = state.options
    if exc.errno == _ER_BAD_DB:
        cause = f"The server accepted the login but has no database {options.database!r} (1049)."
        fix = (
            f"Create the database {options.database!r}, or pass the right name with --database "
            "(or omit it)."
        )
    else:
        cause = (
            f"The server accepted the login, but user {options.user!r} may not use database "
            f"{options.database!r} (1044). MySQL and MariaDB also answer 1044 for a database "
            "that does not exist when the user has no access to it."
        )
        fix = (
            f"Check the name passed with --database. If {options.database!r} exists, the "
            "server's administrator grants access: GRANT ... ON "
            f"`{options.database}`.* TO '{options.user}'@'%'."
        )
    state.database_rejection = StageFailed(
        f"database {options.database!r} rejected",
        cause=cause,
        fix=fix,
        error_number=exc.errno,
    )
    facts.summary = (
        f"the server accepted the access token for {options.user!r}, then rejected the database"
    )


def _login_failure(state: RunState, exc: SecureMySQLError) -> StageFailed:
    options = state.options
    message = redaction.redact(str(exc))

    if isinstance(exc, AuthenticationError) or getattr(exc, "errno", None) == _ER_ACCESS_DENIED:
        return StageFailed(
            f"the server rejected the access token for {options.user!r} (1045)",
            cause=(
                f"The server answered 1045 (access denied) for MySQL user {options.user!r}, "
                "also after a freshly fetched token."
            ),
            fix="Work through the likely causes below, in order.",
            likely_causes=_access_denied_causes(state),
            error_number=_ER_ACCESS_DENIED,
        )

    if isinstance(exc, TLSError):
        return StageFailed(
            "the driver's TLS connection failed",
            cause=message,
            fix=(
                "The TLS stage passed with Python's ssl module, so the driver verifies "
                "differently: try --driver pymysql, and check the driver's TLS support."
            ),
        )

    if isinstance(exc, TokenError):
        return StageFailed("no access token for the login", cause=message, fix=_token_fix(exc))

    return StageFailed(
        "login failed",
        cause=message,
        fix="Fix the cause named above; run with -vv to see the driver's log.",
        error_number=getattr(exc, "errno", None),
    )


def _token_fix(exc: TokenError) -> str:
    _cause, _, fix = str(exc).partition(" Likely fix: ")
    return fix or "Check the credential's configuration."


def _tenant_or_audience_cause(claims: Mapping[str, Any], expected_audience: str) -> str:
    tenant = claims.get("tid", "unknown")
    audience = claims.get("aud", "unknown")
    if audience == expected_audience:
        return (
            f"The token is from another tenant than the server's: tenant {tenant}. Its "
            f"audience, {audience}, is the one the server needs, so only the tenant can be "
            "wrong: the server accepts tokens from the tenant of its Entra administrator."
        )
    return (
        f"The token belongs to another tenant or audience: tenant {tenant}, audience "
        f"{audience}; the server needs audience {expected_audience} and a token from the "
        "tenant of its Entra administrator."
    )


def _access_denied_causes(state: RunState) -> list[str]:
    """Return the usual reasons for 1045 with a token, most likely first."""
    options = state.options
    claims: Mapping[str, Any] = state.token.claims if state.token is not None else {}
    identity = _identity_text(claims)
    expected_audience = audience_for_scope(state.scope) if state.scope else "unknown"

    causes = [
        (
            f"No MySQL user {options.user!r} exists on the server for this identity "
            f"({identity}): the server's Microsoft Entra administrator creates it with "
            "CREATE AADUSER."
        ),
        (
            f"The user name {options.user!r} differs from the name the user was created "
            "with for this identity: it must match the Entra user, group or managed identity "
            "name exactly (case included)."
        ),
        _tenant_or_audience_cause(claims, expected_audience),
    ]
    single_server_form = _single_server_user(options.user)
    causes.append(
        (
            f"The user name {options.user!r} is in the Single Server form 'user@server'; "
            f"Flexible Server expects {single_server_form!r}."
        )
        if single_server_form is not None
        else (
            "A Single Server user name 'user@server' is used against a Flexible Server host; "
            f"{options.user!r} is not in that form, so this is unlikely here."
        )
    )
    return causes


def _single_server_user(user: str) -> Optional[str]:
    name, separator, server = user.rpartition("@")
    if separator and name and server and "." not in server:
        return name
    return None


def _identity_text(claims: Mapping[str, Any]) -> str:
    parts = [f"{claim} {claims[claim]}" for claim in ("upn", "appid", "oid") if claim in claims]
    return ", ".join(parts) or "identity claims unknown"


# --- Stage 6: session ------------------------------------------------------------------


def run_session(state: RunState, facts: FactRecorder) -> None:
    """Query CURRENT_USER(), the server version, and the session TLS the server reports."""
    if state.database_rejection is not None:
        raise state.database_rejection

    session = query_session(state.connection)
    current_user = session["current_user"]
    facts.add("current_user", "CURRENT_USER()", current_user)
    facts.add("server_version", "server version", session["server_version"])
    tls_version = session["tls_version"]
    tls_cipher = session["tls_cipher"]
    facts.add(
        "tls",
        "TLS (server view)",
        {"version": tls_version, "cipher": tls_cipher},
        f"{tls_version}, {tls_cipher}" if tls_version else "none",
        status="pass" if tls_version else "fail",
    )
    if not tls_version:
        raise StageFailed(
            "the server sees no TLS on this session",
            cause="SHOW SESSION STATUS reports an empty Ssl_version for this connection.",
            fix="Report this: securemysql sends tokens only over verified TLS.",
        )
    facts.summary = f"CURRENT_USER() is {current_user}; server sees {tls_version}"


def query_session(connection: Any) -> dict[str, str]:
    """Return ``current_user``, ``server_version``, ``tls_version`` and ``tls_cipher``.

    The TLS values are the server's view (``Ssl_version``, ``Ssl_cipher``); they are
    empty strings on a session without TLS.
    """
    cursor = connection.cursor()
    try:
        cursor.execute("SELECT CURRENT_USER(), VERSION()")
        current_user, version = cursor.fetchone()
        cursor.execute("SHOW SESSION STATUS WHERE Variable_name IN ('Ssl_version', 'Ssl_cipher')")
        status = {_text(name): _text(value) for name, value in cursor.fetchall()}
    finally:
        cursor.close()

    return {
        "current_user": _text(current_user),
        "server_version": _text(version),
        "tls_version": status.get("Ssl_version", ""),
        "tls_cipher": status.get("Ssl_cipher", ""),
    }


def _text(value: Any) -> str:
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", "replace")
    return str(value)
