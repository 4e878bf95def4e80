"""The error numbers and SQLSTATEs that classify() recognises, with their outcomes.

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
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Optional

__all__ = [
    "ERROR_TABLE",
    "SQLSTATE_TABLE",
    "ErrorRule",
    "Outcome",
]


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
