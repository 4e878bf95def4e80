"""PyMySQL driver module.

PyMySQL follows the server's switch to ``mysql_clear_password`` without any
opt-in, and uses an ``ssl.SSLContext`` as given. Left alone it would also send
the token in clear text to a server without TLS when no TLS arguments are set
(PyMySQL 1.2), so this module adds a guard below the protocol code: before the
socket is verified TLS, the only bytes PyMySQL may write are one 32-byte
SSLRequest packet that starts the TLS upgrade.

``server_hostname`` needs nothing here: the context that
``TLSConfig.create_ssl_context()`` builds for it replaces the name PyMySQL
passes to ``wrap_socket()`` (the connection host).
"""

from __future__ import annotations

import ssl
from typing import Any, Optional

from securemysql.drivers.base import (
    ConnectParams,
    Driver,
    close_quietly,
    is_closed_socket,
    is_sdk_tls_socket,
    is_ssl_request,
    not_verified_tls_error,
)
from securemysql.drivers.diagnose import diagnose_tls_failure
from securemysql.errors import (
    ConfigurationError,
    DriverNotAvailableError,
    InsecureConfigurationError,
)
from securemysql.tls import TLSInfo, is_verified_tls_socket, tls_info_from_socket

try:
    import pymysql
    import pymysql.connections
except ImportError as exc:  # pragma: no cover - pymysql is a core dependency
    raise DriverNotAvailableError(
        "driver='pymysql' needs PyMySQL. Install it with: pip install pymysql"
    ) from exc

_ACCESS_DENIED = 1045
_PACKET_HEADER_LENGTH = 4

# The type stubs omit the private methods that the guard overrides.
_PyMySQLConnection: Any = pymysql.connections.Connection


class GuardedConnection(_PyMySQLConnection):  # type: ignore[misc]
    """A PyMySQL connection that writes nothing but the TLS upgrade request in clear text.

    ``_write_bytes`` is where every PyMySQL packet leaves for the socket. Each
    new socket (``connect()`` and ``ping(reconnect=True)`` open one) may carry
    one SSLRequest before TLS. Any other write must go to a TLS socket made by
    ``securemysql_context`` (the SDK's verifying context); otherwise the
    connection is closed and TLSNotOfferedError raised.
    """

    securemysql_context: Optional[ssl.SSLContext] = None
    _securemysql_cleartext_socket: Optional[object] = None

    def _write_bytes(self, data: bytes) -> None:
        sock = self._sock
        if not is_closed_socket(sock) and not self._is_sdk_tls(sock):
            if not self._may_send_ssl_request(data):
                self._force_close()
                raise not_verified_tls_error()
            self._securemysql_cleartext_socket = sock
        super()._write_bytes(data)

    def _is_sdk_tls(self, sock: object) -> bool:
        context = self.securemysql_context
        return context is not None and is_sdk_tls_socket(sock, context)

    def _may_send_ssl_request(self, data: bytes) -> bool:
        first_on_socket = self._securemysql_cleartext_socket is not self._sock
        return first_on_socket and is_ssl_request(data[_PACKET_HEADER_LENGTH:])


class PyMySQLDriver(Driver):
    """Connects with PyMySQL and returns ``pymysql.connections.Connection`` objects."""

    name = "pymysql"

    def __init__(self, use_pure: Optional[bool] = None) -> None:
        if use_pure is not None:
            raise ConfigurationError(
                "use_pure= selects a mode of driver='mysql.connector'; PyMySQL has only one. "
                "Remove use_pure, or pass driver='mysql.connector'."
            )

    def connect(self, params: ConnectParams, token: str) -> Any:
        if pymysql.connections.DEBUG:
            raise InsecureConfigurationError(
                "pymysql.connections.DEBUG is on: PyMySQL would print every packet, "
                "the access token included, to standard output. Turn it off."
            )

        arguments = dict(params.driver_kwargs)
        arguments.update(
            host=params.host,
            port=params.port,
            user=params.user,
            password=token,
            database=params.database,
            connect_timeout=params.connect_timeout,
            program_name=params.program_name,
            ssl=params.ssl_context,
            defer_connect=True,
        )
        connection = GuardedConnection(**arguments)
        connection.securemysql_context = params.ssl_context
        try:
            connection.connect()
        except pymysql.err.MySQLError as exc:
            error = diagnose_tls_failure(params, exc)
            if error is None:
                raise
            raise error from exc
        return connection

    def discard_token(self, connection: Any) -> None:
        # PyMySQL reads .password again only in connect(), for ping(reconnect=True).
        connection.password = b""

    def tls_info(self, connection: Any) -> TLSInfo:
        sock = getattr(connection, "_sock", None)
        if not isinstance(sock, ssl.SSLSocket) or not is_verified_tls_socket(sock):
            close_quietly(connection)
            raise not_verified_tls_error()
        return tls_info_from_socket(sock)

    def is_auth_rejection(self, exc: BaseException) -> bool:
        return (
            isinstance(exc, pymysql.err.OperationalError)
            and bool(exc.args)
            and exc.args[0] == _ACCESS_DENIED
        )

    def __repr__(self) -> str:
        return "PyMySQLDriver()"
