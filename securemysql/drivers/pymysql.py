"""PyMySQL driver module.

PyMySQL answers the server's switch to ``mysql_clear_password`` without any
opt-in, and uses an ``ssl.SSLContext`` as given. Left alone it would also send
the token in clear text to a server without TLS when no TLS arguments are set
(PyMySQL 1.2), so this module adds a guard below the protocol code: before the
socket is verified TLS, the only bytes PyMySQL may write are the 32-byte
SSLRequest packet that starts the TLS upgrade.
"""

from __future__ import annotations

import ssl
from typing import Any, Optional

from securemysql.drivers.base import ConnectParams, Driver
from securemysql.errors import (
    DriverNotAvailableError,
    InsecureConfigurationError,
    TLSNotOfferedError,
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
# Packet header (3-byte length + sequence id) plus the 32-byte SSLRequest payload.
_SSL_REQUEST_PACKET_LENGTH = 4 + 32


class _ServerHostnameContext:
    """Wraps an SSLContext so that TLS checks the configured server host name.

    PyMySQL passes the host it connected to as ``server_hostname``; through a
    private IP address the certificate carries the public host name instead.
    """

    def __init__(self, context: ssl.SSLContext, server_hostname: str) -> None:
        self._context = context
        self._server_hostname = server_hostname

    def wrap_socket(self, sock: Any, server_hostname: Optional[str] = None, **kwargs: Any) -> Any:
        return self._context.wrap_socket(sock, server_hostname=self._server_hostname, **kwargs)


# The type stubs omit the private methods that the guard overrides.
_PyMySQLConnection: Any = pymysql.connections.Connection


class GuardedConnection(_PyMySQLConnection):  # type: ignore[misc]
    """A PyMySQL connection that writes nothing but the TLS upgrade request in clear text."""

    def _write_bytes(self, data: bytes) -> None:
        if not is_verified_tls_socket(self._sock) and not _is_ssl_request(data):
            self._force_close()
            raise TLSNotOfferedError(
                "Stopped before sending credentials: the connection to the server is not "
                "verified TLS (the server may not offer TLS). Enable TLS on the server; "
                "securemysql never sends an access token in clear text."
            )
        super()._write_bytes(data)


def _is_ssl_request(data: bytes) -> bool:
    """Return True for the client's SSLRequest packet, which carries no secret."""
    if len(data) != _SSL_REQUEST_PACKET_LENGTH:
        return False
    capabilities = int.from_bytes(data[4:8], "little")
    return bool(capabilities & pymysql.constants.CLIENT.SSL)


class PyMySQLDriver(Driver):
    """Connects with PyMySQL and returns ``pymysql.connections.Connection`` objects."""

    name = "pymysql"

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
        if params.tls.server_hostname:
            connection.ctx = _ServerHostnameContext(params.ssl_context, params.tls.server_hostname)
        connection.connect()
        return connection

    def tls_info(self, connection: Any) -> TLSInfo:
        return tls_info_from_socket(connection._sock)

    def is_auth_rejection(self, exc: BaseException) -> bool:
        return (
            isinstance(exc, pymysql.err.OperationalError)
            and bool(exc.args)
            and exc.args[0] == _ACCESS_DENIED
        )
