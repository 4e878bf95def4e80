"""Classify connection errors and retry transient ones with capped, jittered backoff.

``classify`` sorts an exception into one of three outcomes:

- ``TRANSIENT``: the server or the network was unavailable, and a new connection
  may succeed later (a restart, a high-availability failover, a full connection table).
- ``AUTHENTICATION``: the server rejected the credentials. The caller decides
  whether to refresh the access token and try once more.
- ``PERMANENT``: everything else, including every error this module does not
  recognise, because retrying an error that is not understood only delays the report.

``ERROR_TABLE`` lists the MySQL and MariaDB error numbers this module recognises,
and each entry names where its number is defined: the MySQL 8.0.27 error list in
``mysql.connector.errorcode`` (mysql-connector-python 26.10.0), the client error
constants in ``pymysql.constants.CR`` (PyMySQL 1.2.4) and ``perror`` of MariaDB
10.11.19. The unit tests check every symbol against the installed packages. Both
drivers get the same table, whatever exception class they raise.

MySQL and MariaDB assign some numbers above 3000 to different errors. MariaDB uses
4031, MySQL's idle-disconnect error, for a CREATE TRIGGER error, so the 4031 entry
applies only when the message carries MySQL's disconnect text. 3159 is not defined
by MariaDB 10.11, which rejects a login without TLS under require_secure_transport
with 1045 instead (measured).

Statement errors such as 1205 (lock wait timeout) and 1213 (deadlock) are
deliberately absent: they do not mean that the connection failed, and only the
caller can re-run the transaction they abort. 1081 (ER_IPSOCK_ERROR) is absent
because the server reports it in its own log when it cannot open its listening
socket, so no client receives it.

TLS failures always count as permanent, whatever number the driver reports them
under. PyMySQL reports a failed certificate check as 2003, mysql-connector-python's
pure-Python mode as 2055 and its C extension as 2026 (measured with the driver
versions above).
"""

from __future__ import annotations

import enum
import errno as os_errno
import logging
import math
import re
import socket
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Callable, Optional, TypeVar

import tenacity

from securemysql.errors import (
    ConfigurationError,
    ConnectionFailedError,
    SecureMySQLError,
    TokenAcquisitionError,
)
from securemysql.redaction import redact

__all__ = [
    "ERROR_TABLE",
    "SQLSTATE_TABLE",
    "ErrorRule",
    "Outcome",
    "RetryPolicy",
    "classify",
    "error_number",
    "is_transient",
    "sqlstate",
]

_logger = logging.getLogger("securemysql.retry")

T = TypeVar("T")
_ExceptionTypes = tuple[type[BaseException], ...]


class Outcome(enum.Enum):
    """Classification of a failed connection attempt: may a later attempt succeed?"""

    TRANSIENT = "transient"
    AUTHENTICATION = "authentication"
    PERMANENT = "permanent"


@dataclass(frozen=True)
class ErrorRule:
    """Classification of one MySQL or MariaDB error number.

    Attributes:
        errno: the error number as the driver reports it.
        symbol: the symbolic name in the MySQL or MariaDB sources, e.g. ``CR_CONN_HOST_ERROR``.
        outcome: how ``classify`` treats an error with this number.
        meaning: what the error means and why it has this outcome.
        source: the error list that defines the number.
        required_text: lower-case text that the error message must contain for
            the rule to apply, for numbers that MySQL and MariaDB assign to
            different errors. An error whose message lacks it is treated as if its
            number were not listed. None applies the rule to every message.
    """

    errno: int
    symbol: str
    outcome: Outcome
    meaning: str
    source: str
    required_text: Optional[str] = None

    def applies_to(self, message: str) -> bool:
        """Tell whether the rule applies to an error with this number and ``message``."""
        return self.required_text is None or self.required_text in message.lower()


_MYSQL_CLIENT = "MySQL client errors (mysql.connector.errorcode 26.10.0, pymysql.constants.CR)"
_MYSQL_SERVER = "MySQL 8.0.27 server errors (mysql.connector.errorcode 26.10.0)"
_MARIADB = "MariaDB 10.11.19 server errors (perror)"
_MYSQL_AND_MARIADB = f"{_MYSQL_SERVER} and {_MARIADB}"

_TRANSIENT = Outcome.TRANSIENT
_AUTHENTICATION = Outcome.AUTHENTICATION
_PERMANENT = Outcome.PERMANENT

_RULES = (
    # --- Server errors: the server is overloaded, restarting or dropped the connection.
    ErrorRule(
        1040,
        "ER_CON_COUNT_ERROR",
        _TRANSIENT,
        "Too many connections: the server has reached max_connections. Slots free up"
        " as other clients disconnect.",
        _MYSQL_AND_MARIADB,
    ),
    ErrorRule(
        1042,
        "ER_BAD_HOST_ERROR",
        _TRANSIENT,
        "The server could not resolve the client's address to a host name."
        " This is a failure of the server's resolver, which may recover.",
        _MYSQL_AND_MARIADB,
    ),
    ErrorRule(
        1053,
        "ER_SERVER_SHUTDOWN",
        _TRANSIENT,
        "Server shutdown in progress, as during a restart or a failover.",
        _MYSQL_AND_MARIADB,
    ),
    ErrorRule(
        1158,
        "ER_NET_READ_ERROR",
        _TRANSIENT,
        "The server got an error reading from the connection.",
        _MYSQL_AND_MARIADB,
    ),
    ErrorRule(
        1159,
        "ER_NET_READ_INTERRUPTED",
        _TRANSIENT,
        "The server timed out reading from the connection.",
        _MYSQL_AND_MARIADB,
    ),
    ErrorRule(
        1160,
        "ER_NET_ERROR_ON_WRITE",
        _TRANSIENT,
        "The server got an error writing to the connection.",
        _MYSQL_AND_MARIADB,
    ),
    ErrorRule(
        1161,
        "ER_NET_WRITE_INTERRUPTED",
        _TRANSIENT,
        "The server timed out writing to the connection.",
        _MYSQL_AND_MARIADB,
    ),
    ErrorRule(
        1203,
        "ER_TOO_MANY_USER_CONNECTIONS",
        _TRANSIENT,
        "The account has reached max_user_connections. Slots free up as its other"
        " connections close.",
        _MYSQL_AND_MARIADB,
    ),
    ErrorRule(
        1927,
        "ER_CONNECTION_KILLED",
        _TRANSIENT,
        "MariaDB killed the connection, by KILL or while shutting down.",
        _MARIADB,
    ),
    ErrorRule(
        3032,
        "ER_SERVER_OFFLINE_MODE",
        _TRANSIENT,
        "The server is in offline mode and accepts only administrators. An"
        " administrator, group replication or a cloud service short of disk space"
        " switches it on, typically for maintenance that ends. The deadline limits"
        " the cost when it does not end.",
        _MYSQL_AND_MARIADB,
    ),
    ErrorRule(
        3169,
        "ER_SESSION_WAS_KILLED",
        _TRANSIENT,
        "MySQL killed the session, by KILL or while shutting down.",
        _MYSQL_SERVER,
    ),
    # MariaDB 10.11 uses 4031 for ER_REFERENCED_TRG_DOES_NOT_EXIST, a CREATE TRIGGER
    # error with the same SQLSTATE (HY000), so only MySQL's message identifies it.
    ErrorRule(
        4031,
        "ER_CLIENT_INTERACTION_TIMEOUT",
        _TRANSIENT,
        "MySQL 8.0 closed a connection that was idle for longer than wait_timeout,"
        " and said so before closing it. A new connection is not affected. Applies"
        " only to MySQL's message text.",
        _MYSQL_SERVER,
        required_text="disconnected by the server because of inactivity",
    ),
    # --- Client library errors: the server could not be reached or the connection broke.
    ErrorRule(
        2002,
        "CR_CONNECTION_ERROR",
        _TRANSIENT,
        "Could not connect through the local socket file, or (mysql-connector-python)"
        " the socket connection timed out. The server may be restarting.",
        _MYSQL_CLIENT,
    ),
    ErrorRule(
        2003,
        "CR_CONN_HOST_ERROR",
        _TRANSIENT,
        "Could not open the TCP connection: refused, unreachable or timed out."
        " PyMySQL and mysql-connector-python's pure-Python mode also report failed"
        " host name lookups here.",
        _MYSQL_CLIENT,
    ),
    ErrorRule(
        2005,
        "CR_UNKNOWN_HOST",
        _TRANSIENT,
        "The client could not resolve the server's host name. Retried because the"
        " other drivers report the same lookup failure as 2003, because resolvers"
        " fail temporarily, and because a failover moves the DNS record. The"
        " deadline limits the cost of a misspelt host name.",
        _MYSQL_CLIENT,
    ),
    ErrorRule(
        2006,
        "CR_SERVER_GONE_ERROR",
        _TRANSIENT,
        "MySQL server has gone away: the connection was closed under the client.",
        _MYSQL_CLIENT,
    ),
    ErrorRule(
        2013,
        "CR_SERVER_LOST",
        _TRANSIENT,
        "Lost connection to the server, for example while reading the server's greeting.",
        _MYSQL_CLIENT,
    ),
    ErrorRule(
        2055,
        "CR_SERVER_LOST_EXTENDED",
        _TRANSIENT,
        "Lost connection to the server, with the system error. mysql-connector-python's"
        " pure-Python mode also reports TLS failures under this number, and classify()"
        " recognises those before it consults this table.",
        _MYSQL_CLIENT,
    ),
    # --- Authentication: the server rejected the credentials.
    ErrorRule(
        1045,
        "ER_ACCESS_DENIED_ERROR",
        _AUTHENTICATION,
        "Access denied: the server rejected the user name or the password, which"
        " securemysql sets to the access token.",
        _MYSQL_AND_MARIADB,
    ),
    ErrorRule(
        1698,
        "ER_ACCESS_DENIED_NO_PASSWORD_ERROR",
        _AUTHENTICATION,
        "Access denied, reported without the password detail.",
        _MYSQL_AND_MARIADB,
    ),
    # --- Permanent: only a change of configuration, grants or server settings helps.
    ErrorRule(
        1043,
        "ER_HANDSHAKE_ERROR",
        _PERMANENT,
        "Bad handshake: the server could not parse the client's handshake packet,"
        " and the same client sends the same packet again.",
        _MYSQL_AND_MARIADB,
    ),
    ErrorRule(
        1044,
        "ER_DBACCESS_DENIED_ERROR",
        _PERMANENT,
        "The account may not use the requested database, so a grant is missing.",
        _MYSQL_AND_MARIADB,
    ),
    ErrorRule(
        1049,
        "ER_BAD_DB_ERROR",
        _PERMANENT,
        "The requested database does not exist.",
        _MYSQL_AND_MARIADB,
    ),
    ErrorRule(
        1129,
        "ER_HOST_IS_BLOCKED",
        _PERMANENT,
        "The server blocks the client host after too many connection errors, until"
        " an administrator runs FLUSH HOSTS.",
        _MYSQL_AND_MARIADB,
    ),
    ErrorRule(
        1130,
        "ER_HOST_NOT_PRIVILEGED",
        _PERMANENT,
        "No account on the server matches the client host.",
        _MYSQL_AND_MARIADB,
    ),
    ErrorRule(
        1251,
        "ER_NOT_SUPPORTED_AUTH_MODE",
        _PERMANENT,
        "The client does not support the auth plugin that the server requests.",
        _MYSQL_AND_MARIADB,
    ),
    ErrorRule(
        1290,
        "ER_OPTION_PREVENTS_STATEMENT",
        _PERMANENT,
        "A server option such as read_only, super_read_only or secure_file_priv"
        " forbids the statement, and the error does not say which one. After a"
        " failover the host name leads to the new primary, so a read-only server"
        " reached by that name stays read-only until an operator changes it.",
        _MYSQL_AND_MARIADB,
    ),
    ErrorRule(
        3159,
        "ER_SECURE_TRANSPORT_REQUIRED",
        _PERMANENT,
        "The server requires TLS (require_secure_transport=ON) and the connection does"
        " not use it. MariaDB 10.11 reports this case as 1045 instead.",
        _MYSQL_SERVER,
    ),
    ErrorRule(
        2026,
        "CR_SSL_CONNECTION_ERROR",
        _PERMANENT,
        "TLS could not be set up: the server offers no TLS, the certificate does not"
        " verify, or the CA bundle cannot be loaded. classify() treats it as transient"
        " only when the connection was reset or cut during the TLS handshake.",
        _MYSQL_CLIENT,
    ),
    ErrorRule(
        2059,
        "CR_AUTH_PLUGIN_CANNOT_LOAD",
        _PERMANENT,
        "The client cannot load the auth plugin, or has not enabled it"
        " (mysql_clear_password must be enabled in the C client library).",
        _MYSQL_CLIENT,
    ),
    ErrorRule(
        2061,
        "CR_AUTH_PLUGIN_ERR",
        _PERMANENT,
        "The auth plugin reported an error, for example that it needs a secure connection.",
        _MYSQL_CLIENT,
    ),
)

ERROR_TABLE: Mapping[int, ErrorRule] = MappingProxyType({rule.errno: rule for rule in _RULES})
"""Recognised error numbers and their outcomes. Numbers not listed count as permanent."""

SQLSTATE_TABLE: Mapping[str, Outcome] = MappingProxyType(
    {
        "08S01": Outcome.TRANSIENT,  # communication link failure
        "08001": Outcome.TRANSIENT,  # client unable to establish connection
        "28000": Outcome.AUTHENTICATION,  # invalid authorization specification
    }
)
"""Outcomes by SQLSTATE, used only for errors that carry no MySQL error number.

08004 (server rejected the connection) is absent on purpose because the servers use
it for both 1040 (too many connections, transient) and 3159 (TLS required, permanent).
"""

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

_MAX_ERROR_TEXT = 200

_DEFAULT_MAX_ATTEMPTS = 40
_DEFAULT_DEADLINE = 150.0
_DEFAULT_INITIAL_WAIT = 2.0
_DEFAULT_MAX_WAIT = 15.0


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


# --- Retry policy -------------------------------------------------------------------


def _describe_error(exc: BaseException) -> str:
    """Return the exception's type and redacted text on one line, cut to _MAX_ERROR_TEXT.

    Redaction comes first, so that cutting the text cannot leave part of a token
    that redact() would no longer recognise.
    """
    text = " ".join(f"{type(exc).__name__}: {redact(_message(exc))}".split())
    if len(text) > _MAX_ERROR_TEXT:
        text = text[: _MAX_ERROR_TEXT - 3] + "..."
    return text


def _should_retry(exc: BaseException) -> bool:
    return isinstance(exc, Exception) and classify(exc) is Outcome.TRANSIENT


def _require_positive_seconds(name: str, value: object, example: float) -> None:
    valid = isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value < math.inf
    if not valid:
        raise ConfigurationError(
            f"RetryPolicy.{name} must be a finite number of seconds greater than 0,"
            f" got {value!r}. Pass a value such as {name}={example!r}."
        )


@dataclass(frozen=True)
class RetryPolicy:
    """Limits for retrying connection attempts that fail with transient errors.

    The defaults are sized to ride out an outage of up to 120 s, the length this
    project assumes for an Azure Database for MySQL high-availability failover.
    The upper end of the random wait starts at 2 s and doubles up to 15 s, and
    retries stop after 150 s. After the fourth failed attempt, waits average 7.5 s,
    so 40 attempts would wait about 270 s in total (an estimate that ignores the
    time each attempt takes). In practice the deadline, not max_attempts, ends the
    retries, after about 20 to 25 attempts.

    Attributes:
        max_attempts: maximum number of attempts, the first one included (>= 1).
        deadline: seconds from the first attempt after which no wait ends and no
            new attempt starts. A running attempt is not interrupted, so the total
            time can exceed the deadline by one attempt, which the driver's connect
            time-out bounds.
        initial_wait: upper end, in seconds, of the random wait after the first
            failed attempt.
        max_wait: maximum, in seconds, of that upper end, which doubles after each
            failed attempt.
        enabled: False makes exactly one attempt, regardless of max_attempts.
        sleep: waits the given number of seconds between attempts; time.sleep by
            default. Tests pass a function that records the waits.
    """

    max_attempts: int = _DEFAULT_MAX_ATTEMPTS
    deadline: float = _DEFAULT_DEADLINE
    initial_wait: float = _DEFAULT_INITIAL_WAIT
    max_wait: float = _DEFAULT_MAX_WAIT
    enabled: bool = True
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.max_attempts, int) or isinstance(self.max_attempts, bool):
            raise ConfigurationError(
                f"RetryPolicy.max_attempts must be an integer, got {self.max_attempts!r}."
            )
        if self.max_attempts < 1:
            raise ConfigurationError(
                f"RetryPolicy.max_attempts must be at least 1, got {self.max_attempts}."
                " Use RetryPolicy.disabled() for a single attempt without retries."
            )

        _require_positive_seconds("deadline", self.deadline, _DEFAULT_DEADLINE)
        _require_positive_seconds("initial_wait", self.initial_wait, _DEFAULT_INITIAL_WAIT)
        _require_positive_seconds("max_wait", self.max_wait, _DEFAULT_MAX_WAIT)
        if self.initial_wait > self.max_wait:
            raise ConfigurationError(
                f"RetryPolicy.initial_wait ({self.initial_wait!r} s) must not exceed"
                f" max_wait ({self.max_wait!r} s). Lower initial_wait or raise max_wait."
            )

        if not isinstance(self.enabled, bool):
            raise ConfigurationError(
                f"RetryPolicy.enabled must be True or False, got {self.enabled!r}."
            )
        if not callable(self.sleep):
            raise ConfigurationError(
                f"RetryPolicy.sleep must be a function that waits the given seconds,"
                f" got {self.sleep!r}."
            )

    @classmethod
    def disabled(cls) -> RetryPolicy:
        """Return a policy that makes exactly one attempt and never retries."""
        return cls(max_attempts=1, enabled=False)

    def call(
        self,
        attempt: Callable[[], T],
        *,
        description: str,
        sleep: Optional[Callable[[float], None]] = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> T:
        """Call ``attempt``, retrying transient failures, and return its result.

        After failed attempt n, the wait is drawn uniformly from
        [0, min(initial_wait * 2 ** (n - 1), max_wait)] seconds ("full jitter", so
        that clients cut off by the same failover do not reconnect in step). A wait
        that would end after the deadline is shortened to end at it. Retrying stops
        when ``attempt`` succeeds, raises an error that classify() does not call
        transient, has been called max_attempts times, or the deadline has passed.

        Each call of ``attempt`` must open a new connection by host name, so that
        the host name is resolved again: during a failover the DNS record moves to
        the new primary. PyMySQL 1.2.4 and mysql-connector-python 26.10.0's
        pure-Python mode call socket.getaddrinfo() on every connect (an integration
        test counts the calls), its C extension resolves inside libmysqlclient on
        every connect (seen with strace), and nothing in securemysql caches addresses.

        Every retry logs a WARNING on the ``securemysql.retry`` logger with the
        description, the attempt number, the error number, the error text (passed
        through securemysql.redaction.redact() and cut to 200 characters) and the
        wait in seconds.

        Args:
            attempt: makes one connection attempt and returns its result.
            description: names the operation in log records and errors, for example
                ``"connect to myserver.mysql.database.azure.com:3306"``. It must not
                contain secrets.
            sleep: waits the given number of seconds; None uses the policy's sleep.
            clock: returns monotonic seconds. Tests pass a fake.

        Raises:
            ConnectionFailedError: retries ran out (``transient`` is True), or a
                driver error that is not transient occurred (``transient`` is False).
                The last error is chained as ``__cause__``.
            SecureMySQLError: a securemysql error that is not transient (a TLS,
                configuration, token or authentication error) is raised unchanged,
                and so is a transient one (a TokenAcquisitionError from an endpoint
                time-out, say) when retries are disabled.
            BaseException: exceptions that are not Exception subclasses, such as
                KeyboardInterrupt, propagate unchanged and are never retried.
        """
        start = clock()
        attempts = 0

        def counted_attempt() -> T:
            nonlocal attempts
            attempts += 1
            return attempt()

        try:
            if not self.enabled:
                return counted_attempt()
            wait = self.sleep if sleep is None else sleep
            return self._retrying(start, description, wait, clock)(counted_attempt)
        except Exception as exc:
            failure = self._failure(exc, description, attempts, clock() - start)
            if failure is None:
                raise
            raise failure from exc

    def _retrying(
        self,
        start: float,
        description: str,
        sleep: Callable[[float], None],
        clock: Callable[[], float],
    ) -> tenacity.Retrying:
        jitter = tenacity.wait_random_exponential(multiplier=self.initial_wait, max=self.max_wait)

        def wait(retry_state: tenacity.RetryCallState) -> float:
            remaining = self.deadline - (clock() - start)
            return max(0.0, min(jitter(retry_state), remaining))

        def stop(retry_state: tenacity.RetryCallState) -> bool:
            if retry_state.attempt_number >= self.max_attempts:
                return True
            return clock() - start >= self.deadline

        def log_retry(retry_state: tenacity.RetryCallState) -> None:
            self._log_retry(retry_state, description)

        return tenacity.Retrying(
            stop=stop,
            wait=wait,
            retry=tenacity.retry_if_exception(_should_retry),
            sleep=sleep,
            before_sleep=log_retry,
            reraise=True,
        )

    def _log_retry(self, retry_state: tenacity.RetryCallState, description: str) -> None:
        outcome = retry_state.outcome
        exc = outcome.exception() if outcome is not None else None
        if exc is None:
            return

        number = error_number(exc)
        wait = retry_state.next_action.sleep if retry_state.next_action is not None else 0.0
        _logger.warning(
            "%s: attempt %d of %d failed with %s (%s), retrying in %.2f s",
            description,
            retry_state.attempt_number,
            self.max_attempts,
            f"error {number}" if number is not None else "an error without a MySQL error number",
            _describe_error(exc),
            wait,
            extra={
                "retry_attempt": retry_state.attempt_number,
                "retry_errno": number,
                "retry_wait": wait,
            },
        )

    def _failure(
        self, exc: Exception, description: str, attempts: int, elapsed: float
    ) -> Optional[ConnectionFailedError]:
        """Return the error that reports the final failure, or None to re-raise ``exc``."""
        outcome = classify(exc)
        if isinstance(exc, SecureMySQLError) and (
            outcome is not Outcome.TRANSIENT or not self.enabled
        ):
            # Our own errors already say what failed and what to do; with retries off a
            # transient one (say a token endpoint time-out) reaches the caller as itself.
            return None

        number = error_number(exc)
        summary = f"{description} failed after {attempts} attempt(s) in {elapsed:.1f} s"
        if outcome is not Outcome.TRANSIENT:
            message = (
                f"{summary} with an error that retrying cannot fix ({outcome.value}):"
                f" {_describe_error(exc)}. Fix the cause named in the chained exception."
            )
        elif not self.enabled:
            message = (
                f"{summary}: {_describe_error(exc)}. The error is transient, but retries"
                " are disabled. Pass a RetryPolicy with enabled=True to retry."
            )
        else:
            message = (
                f"{summary}: {_describe_error(exc)}. The server stayed unavailable for"
                f" the whole retry budget (max_attempts={self.max_attempts},"
                f" deadline={self.deadline!r} s). Check that the server is running and"
                " reachable, or raise RetryPolicy.deadline."
            )
        return ConnectionFailedError(
            message,
            attempts=attempts,
            elapsed=elapsed,
            errno=number,
            transient=outcome is Outcome.TRANSIENT,
        )
