"""Read error numbers and SQLSTATEs out of driver exceptions and classify them.

TLS failures always count as permanent, whatever number the driver reports them
under. PyMySQL reports a failed certificate check as 2003, mysql-connector-python's
pure-Python mode as 2055 and its C extension as 2026 (measured with PyMySQL 1.2.4
and mysql-connector-python 26.10.0).
"""

from __future__ import annotations

import errno as os_errno
import re
import socket
import sys
from collections.abc import Iterable
from typing import Optional

from securemysql.errors import (
    ConnectionFailedError,
    SecureMySQLError,
    TokenAcquisitionError,
)
from securemysql.retry.table import ERROR_TABLE, SQLSTATE_TABLE, Outcome

__all__ = [
    "classify",
    "error_number",
    "is_transient",
    "sqlstate",
]

_ExceptionTypes = tuple[type[BaseException], ...]

# How many levels of __cause__, __context__, ``orig`` (SQLAlchemy's DBAPIError) and
# ``original_exception`` (PyMySQL's wrapped OSError) classify() follows below the
# exception it is given. mysql-connector-python's pure-Python read time-out needs two.
_CHAIN_DEPTH = 3
_WRAPPED_EXCEPTION_ATTRIBUTES = ("orig", "original_exception")

_CR_SSL_CONNECTION_ERROR = 2026

# Lower-case texts that only a failed TLS certificate check or TLS version
# negotiation produces (CPython's ssl module and OpenSSL 3 as used by libmysqlclient).
_TLS_FAILURE_MARKERS = (
    "certificate_verify_failed",
    "certificate verify failed",
    "hostname mismatch",
    "ip address mismatch",
    "certificate is not valid for",
    "wrong_version_number",
    "wrong version number",
    "unsupported_protocol",
    "unsupported protocol",
    "tlsv1_alert_protocol_version",
    "no_protocols_available",
    "no protocols available",
)

# Lower-case texts of a connection that was reset or closed during the TLS handshake.
_CONNECTION_CUT_MARKERS = (
    "connection reset",
    "reset by peer",
    "broken pipe",
    "unexpected eof",
    "eof occurred in violation of protocol",
)
# OpenSSL's text for an empty error queue, which libmysqlclient reports as 2026 when
# the socket failed during the handshake: "error:00000000:lib(0)::reason(0)" (OpenSSL 3)
# or "error:00000000:lib(0):func(0):reason(0)" (OpenSSL 1.1).
_EMPTY_OPENSSL_ERROR = re.compile(r"error:00000000:lib\(0\):[^:]*:reason\(0\)")

# Messages of mysql-connector-python 26.10.0 errors that carry no error number
# (errno -1) and report a closed connection, in the pure-Python mode and the C
# extension. PyMySQL 1.2.4 raises InterfaceError(0, "") instead. SQLAlchemy 2.1's
# MySQL dialects treat the same errors as disconnects.
_CLOSED_CONNECTION_TEXTS = (
    "mysql connection not available",
    "connection to mysql is not available",
)

_NETWORK_ERRNOS = frozenset(
    number
    for number in (
        getattr(os_errno, name, None)
        for name in (
            "ECONNREFUSED",
            "ECONNRESET",
            "ECONNABORTED",
            "ETIMEDOUT",
            "EHOSTUNREACH",
            "EHOSTDOWN",
            "ENETUNREACH",
            "ENETDOWN",
            "ENETRESET",
            "EPIPE",
        )
    )
    if number is not None
)


# --- Reading numbers and SQLSTATEs out of driver exceptions ---------------------


def _as_error_number(value: object) -> Optional[int]:
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    return None


def _own_error_number(exc: BaseException) -> Optional[int]:
    """Return the MySQL error number that ``exc`` itself carries, without following links."""
    # An OSError's errno is an operating-system code, not a MySQL error number.
    if isinstance(exc, OSError):
        return None

    # mysql-connector-python (and its C extension) sets .errno, -1 when unknown.
    number = _as_error_number(getattr(exc, "errno", None))
    if number is not None:
        return number

    # PyMySQL and mysqlclient follow the DB-API habit of args == (errno, message).
    args = exc.args
    if len(args) >= 2 and isinstance(args[1], str):
        return _as_error_number(args[0])
    return None


def _own_sqlstate(exc: BaseException) -> Optional[str]:
    state = getattr(exc, "sqlstate", None)
    if isinstance(state, str) and len(state) == 5:
        return state.upper()
    return None


def _direct_links(exc: BaseException) -> list[BaseException]:
    links: list[BaseException] = []
    for attribute in _WRAPPED_EXCEPTION_ATTRIBUTES:
        wrapped = getattr(exc, attribute, None)
        if isinstance(wrapped, BaseException):
            links.append(wrapped)

    if exc.__cause__ is not None:
        links.append(exc.__cause__)
    elif exc.__context__ is not None and not exc.__suppress_context__:
        links.append(exc.__context__)
    return links


def _exception_chain(exc: BaseException) -> list[BaseException]:
    """Return ``exc`` and the exceptions it wraps, nearest first, at most _CHAIN_DEPTH deep.

    An exception raised while another was being handled counts as wrapping it
    (``__context__``) unless it was raised ``from`` something else or ``from None``.
    """
    chain = [exc]
    seen = {id(exc)}
    level = [exc]
    for _ in range(_CHAIN_DEPTH):
        next_level: list[BaseException] = []
        for current in level:
            for linked in _direct_links(current):
                if id(linked) not in seen:
                    seen.add(id(linked))
                    chain.append(linked)
                    next_level.append(linked)
        level = next_level
    return chain


def error_number(exc: BaseException) -> int | None:
    """Return the MySQL or MariaDB error number of ``exc`` or of an exception it wraps.

    Reads ``exc.errno`` (mysql-connector-python, also securemysql's
    AuthenticationError and ConnectionFailedError) or ``exc.args[0]`` when args is
    ``(int, str)`` (PyMySQL). When ``exc`` carries no number, the exceptions it wraps
    are searched: ``__cause__``, ``__context__``, ``orig`` (SQLAlchemy) and
    ``original_exception`` (PyMySQL), up to three levels deep. The errno of an
    OSError is an operating-system code and is never returned.
    """
    for link in _exception_chain(exc):
        number = _own_error_number(link)
        if number is not None:
            return number
    return None


def sqlstate(exc: BaseException) -> str | None:
    """Return the five-character SQLSTATE of ``exc`` or of an exception it wraps.

    Both drivers store it as ``.sqlstate``. Client-side errors have none (PyMySQL,
    mysql-connector-python's pure-Python mode) or the generic ``HY000``.
    """
    for link in _exception_chain(exc):
        state = _own_sqlstate(link)
        if state is not None:
            return state
    return None


# --- Classification ---------------------------------------------------------------


def _ssl_exception_types() -> tuple[_ExceptionTypes, _ExceptionTypes]:
    """Return the ssl exception types that mean a TLS failure and a cut connection.

    The ssl module is looked up, not imported: an SSL exception cannot exist before
    something imported ssl, and importing ssl early breaks the import of the
    mysql-connector-python 26.x C extension on Debian 12.
    """
    ssl_module = sys.modules.get("ssl")
    if ssl_module is None:
        return (), ()

    failures: _ExceptionTypes = (ssl_module.SSLError,)
    cut_connections: _ExceptionTypes = (
        ssl_module.SSLEOFError,
        ssl_module.SSLZeroReturnError,
        ssl_module.SSLSyscallError,
    )
    return failures, cut_connections


def _message(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:  # a broken __str__ must not hide the classification
        return ""


def _is_tls_failure(exc: BaseException) -> bool:
    """Tell whether ``exc`` reports a failed certificate check or TLS negotiation."""
    failures, cut_connections = _ssl_exception_types()
    if isinstance(exc, failures) and not isinstance(exc, cut_connections):
        return True

    text = _message(exc).lower()
    return any(marker in text for marker in _TLS_FAILURE_MARKERS)


def _is_connection_cut(exc: BaseException) -> bool:
    """Tell whether ``exc`` reports a connection that was reset or closed under the client."""
    _, cut_connections = _ssl_exception_types()
    if isinstance(exc, (ConnectionResetError, ConnectionAbortedError, BrokenPipeError)):
        return True
    if isinstance(exc, cut_connections):
        return True

    text = _message(exc).lower()
    if any(marker in text for marker in _CONNECTION_CUT_MARKERS):
        return True
    return _EMPTY_OPENSSL_ERROR.search(text) is not None


def _is_network_error(exc: OSError) -> bool:
    """Tell whether an OSError comes from the network rather than from a file or setting.

    FileNotFoundError for a missing CA bundle, for example, is not a network error.
    """
    _, cut_connections = _ssl_exception_types()
    network_types = (ConnectionError, TimeoutError, socket.timeout, socket.gaierror, socket.herror)
    if isinstance(exc, (*network_types, *cut_connections)):
        return True
    return exc.errno in _NETWORK_ERRNOS


def _is_closed_connection(exc: BaseException) -> bool:
    """Tell whether ``exc`` is a driver's report, without error number, of a closed connection.

    Drivers raise these when a statement, ping or ``cursor()`` meets a connection
    that is already closed, for example one that the server killed.
    """
    if _own_error_number(exc) is not None:
        return False

    text = _message(exc).lower()
    if any(marker in text for marker in _CLOSED_CONNECTION_TEXTS):
        return True
    from_pymysql = type(exc).__module__.startswith("pymysql")
    return from_pymysql and type(exc).__name__ == "InterfaceError" and exc.args == (0, "")


def _classify_securemysql_error(exc: SecureMySQLError) -> Outcome:
    # TokenAcquisitionError and ConnectionFailedError record whether they are transient.
    if isinstance(exc, (TokenAcquisitionError, ConnectionFailedError)):
        return Outcome.TRANSIENT if exc.transient else Outcome.PERMANENT

    # TLSError, ConfigurationError, InvalidTokenError, AuthenticationError (raised after
    # the forced token refresh failed too) and every other securemysql error.
    return Outcome.PERMANENT


def _classify_link(exc: BaseException, chain: Iterable[BaseException]) -> Optional[Outcome]:
    """Classify one exception of a chain, or return None when it carries no information."""
    if isinstance(exc, SecureMySQLError):
        return _classify_securemysql_error(exc)

    number = _own_error_number(exc)
    if number is not None:
        rule = ERROR_TABLE.get(number)
        if rule is None or not rule.applies_to(_message(exc)):
            # Unknown numbers defer to what the exception wraps, for example
            # mysql-connector-python's read time-out (3024) raised from socket.timeout.
            return None
        if number == _CR_SSL_CONNECTION_ERROR and any(_is_connection_cut(link) for link in chain):
            return Outcome.TRANSIENT
        return rule.outcome

    state = _own_sqlstate(exc)
    if state is not None and state in SQLSTATE_TABLE:
        return SQLSTATE_TABLE[state]

    if isinstance(exc, OSError):
        return Outcome.TRANSIENT if _is_network_error(exc) else Outcome.PERMANENT
    return None


def classify(exc: BaseException) -> Outcome:
    """Classify a failed connection attempt as transient, authentication or permanent.

    securemysql errors are classified by type. TokenAcquisitionError and
    ConnectionFailedError follow their ``transient`` attribute, and every other one
    (TLS, configuration, invalid token, authentication) is permanent.

    For other exceptions, a TLS failure anywhere in the chain makes the error
    permanent: an ssl.SSLError other than an unexpected EOF, or a message that
    reports a failed certificate check, a host name mismatch or a TLS version
    mismatch. Otherwise the exceptions of the chain are examined nearest first, and
    the first one that matches one of these rules decides:

    - a securemysql error, classified by type as above;
    - an error number listed in ERROR_TABLE whose entry applies to the message.
      2026 (CR_SSL_CONNECTION_ERROR) counts as transient when the chain shows a
      connection reset or cut during the TLS handshake. Unlisted numbers, and 4031
      without MySQL's idle-disconnect text, match nothing, so the exceptions they
      wrap decide;
    - for an exception without a number, an SQLSTATE listed in SQLSTATE_TABLE;
    - an OSError: transient when it comes from the network (refused, reset, timed
      out, unreachable, failed name lookup), permanent otherwise (for example a
      missing CA bundle file).

    When no rule matches, a driver error without a number that reports an already
    closed connection ("MySQL Connection not available" from mysql-connector-python,
    ``InterfaceError(0, "")`` from PyMySQL) is transient, and anything else is
    permanent. The chain is ``exc`` followed by the exceptions it wraps, as
    described for error_number().
    """
    if isinstance(exc, SecureMySQLError):
        return _classify_securemysql_error(exc)

    chain = _exception_chain(exc)
    if any(_is_tls_failure(link) for link in chain):
        return Outcome.PERMANENT

    for link in chain:
        outcome = _classify_link(link, chain)
        if outcome is not None:
            return outcome

    if any(_is_closed_connection(link) for link in chain):
        return Outcome.TRANSIENT
    return Outcome.PERMANENT


def is_transient(exc: BaseException) -> bool:
    """Tell whether a new connection may succeed where this one failed.

    Callers may use it to decide whether to reconnect and re-run their own statement.
    True does not tell whether a statement that was running took effect before the
    connection broke, so re-run only statements that are safe to repeat.
    """
    return classify(exc) is Outcome.TRANSIENT
