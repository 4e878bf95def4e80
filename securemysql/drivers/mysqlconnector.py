"""mysql-connector-python driver module (``driver="mysql.connector"``).

mysql-connector-python has two modes, and securemysql guards each one differently:

Pure Python (``use_pure=True``)
    Every packet leaves through ``MySQLSocket.send()``. The connection class
    here swaps in a socket class whose ``send()`` writes nothing but one
    SSLRequest until the socket is TLS, verified with the SDK's own
    ``ssl.SSLContext``, which replaces the context mysql-connector would build
    from its ``ssl_*`` arguments. So every trust source works in this mode
    (CA file, CA directory, system store, a caller's context) and so does
    ``server_hostname``. The token is sent with ``auth_plugin="mysql_clear_password"``
    named up front when this release sends a long first auth response intact
    (older releases cut it at 255 bytes, and tokens are 1 to 3 KB). Otherwise it
    goes in the reply to the server's AuthSwitchRequest.

C extension (``use_pure=False``)
    libmysqlclient writes to the socket in C, so no Python guard can sit below
    it. securemysql passes ``ssl_ca`` (a CA file), ``ssl_verify_cert=True`` and
    ``ssl_verify_identity=True``: with these, libmysqlclient itself stops with
    error 2026 before the login packet unless TLS is set up and the certificate
    chain and host name verify. ``ssl_verify_identity`` is the one that makes TLS
    mandatory: with only ``ssl_verify_cert=True``, release 26.10 sent the
    password in clear text to a server without TLS. The C extension sends a
    clear-text password only with ``auth_plugin="mysql_clear_password"`` (error
    2059 otherwise). It takes file paths only, so ``ssl_capath``,
    ``ssl_context`` and ``server_hostname`` are rejected in this mode.

Default (``use_pure`` unset): the C extension when it can be imported and can
apply the TLS settings, otherwise the pure-Python mode, with a log line on the
``securemysql.drivers`` logger that gives the reason.

Importing the C extension: the wheels of mysql-connector-python 26.x for Linux
ship their own OpenSSL (3.5) next to ``_mysql_connector``. Once Python's ``ssl``
module has loaded the system's older OpenSSL (3.0 on Debian 12), the C extension
fails with "version `OPENSSL_3.2.0' not found". It imports only when
``import _mysql_connector`` runs before anything imports ``ssl``. Both Python's
``ssl`` and the C extension then use the bundled OpenSSL. Release 9.7.0 imports
either way.
"""

from __future__ import annotations

import functools
import logging
import math
import ssl
import sys
from collections.abc import Mapping
from typing import Any, Optional

from securemysql.drivers.base import (
    ConnectParams,
    Driver,
    check_driver_kwargs,
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
    TLSNotOfferedError,
)
from securemysql.tls import (
    TLSConfig,
    TLSInfo,
    is_verified_tls_socket,
    system_ca_bundle_file,
    tls_info_from_socket,
)

try:
    import mysql.connector
    from mysql.connector import errors as connector_errors
    from mysql.connector.connection import MySQLConnection
    from mysql.connector.constants import ClientFlag
    from mysql.connector.network import MySQLSocket, MySQLTCPSocket
    from mysql.connector.protocol import MySQLProtocol
    from mysql.connector.utils import lc_int
except ImportError as exc:
    raise DriverNotAvailableError(
        "driver='mysql.connector' needs mysql-connector-python. "
        "Install it with: pip install mysql-connector-python"
    ) from exc

logger = logging.getLogger("securemysql.drivers")

PURE_PYTHON = "pure Python"
C_EXTENSION = "C extension"

_CLEAR_PASSWORD_PLUGIN = "mysql_clear_password"
_ACCESS_DENIED = 1045
_ACCEPTED_TLS_VERSIONS = ("TLSv1.2", "TLSv1.3")
# mysql-connector's message when mysql_clear_password is named and the server offers no TLS.
_INSECURE_CHANNEL_TEXT = "not supported over insecure channels"

_USE_A_POOL = (
    "securemysql opens plain connections; give the ConnectionFactory to a pool "
    "(for example SQLAlchemy's creator=) instead of mysql-connector's pooling"
)

# Arguments of mysql.connector.connect() that the connection classes used here
# do not take, each with what to do instead.
_CONNECT_FUNCTION_ARGUMENTS: Mapping[str, str] = {
    "pool_name": _USE_A_POOL,
    "pool_size": _USE_A_POOL,
    "pool_reset_session": _USE_A_POOL,
    "failover": "securemysql connects to one host; Azure Database for MySQL keeps its host "
    "name across a failover, so reconnect by that name",
    "dsn": "pass host= and port= instead",
    "dns_srv": "pass host= and port= instead",
}


# --- Availability of the C extension and of long first auth responses ------------


@functools.cache
def c_extension_status() -> tuple[bool, str]:
    """Tell whether the C extension can be used in this process, and if not, why.

    Returns ``(True, "")`` or ``(False, reason)``; the reason is a sentence
    fragment that names the fix. The result is cached: a process that loaded
    an OpenSSL too old for the C extension cannot unload it.
    """
    try:
        from mysql.connector.connection_cext import CMySQLConnection  # noqa: F401
    except ImportError as exc:
        return False, _explain_c_extension_failure(exc)
    return True, ""


def _explain_c_extension_failure(exc: ImportError) -> str:
    text = str(exc)
    if "OPENSSL_" in text and "ssl" in sys.modules:
        return (
            f"its bundled libssl needs a newer OpenSSL than the {ssl.OPENSSL_VERSION} that "
            f"Python's ssl module loaded first ({text}). Make `import _mysql_connector` the "
            "first import of the program, before anything loads OpenSSL (ssl, hashlib)"
        )
    return f"it could not be imported ({text})"


@functools.cache
def first_auth_response_is_length_encoded() -> bool:
    """Tell whether this release sends a clear-text password of any length in the first packet.

    Builds, offline, the first auth response for a 1024-byte dummy password
    and checks that its length prefix is a length-encoded integer. Releases
    that write the length as a single byte cannot send a token this way.
    """
    dummy = "x" * 1024
    try:
        response, _ = MySQLProtocol.auth_plugin_first_response(
            auth_data=b"\x01" * 20,
            username="probe",
            password=dummy,
            auth_plugin=_CLEAR_PASSWORD_PLUGIN,
            ssl_enabled=True,
        )
    except Exception as exc:  # other releases have other signatures: use the safe path
        logger.debug("could not build a test auth response with mysql-connector: %r", exc)
        return False

    expected_payload = dummy.encode() + b"\x00"
    return bytes(response) == bytes(lc_int(len(expected_payload))) + expected_payload


# --- Pure-Python mode: a socket that writes only over the SDK's verified TLS ------


class GuardedTCPSocket(MySQLTCPSocket):
    """mysql-connector socket that uses the SDK's TLS context and refuses clear-text writes.

    Before TLS, one SSLRequest may be written. After it, every write requires
    that the socket is a TLS socket made by the SDK's context, which verifies
    the certificate chain and host name and allows only TLS 1.2+. Anything
    else closes the socket and raises TLSNotOfferedError.
    """

    def __init__(self, host: str, port: int, force_ipv6: bool, ssl_context: ssl.SSLContext) -> None:
        super().__init__(host=host, port=port, force_ipv6=force_ipv6)
        self._sdk_context = ssl_context
        self._sent_ssl_request = False

    def build_ssl_context(self, *args: Any, **kwargs: Any) -> ssl.SSLContext:
        # mysql-connector would build a context from its ssl_* arguments; the
        # SDK's context (trust source, host name, TLS 1.2+) replaces it.
        return self._sdk_context

    def send(
        self,
        payload: bytes,
        packet_number: Optional[int] = None,
        compressed_packet_number: Optional[int] = None,
        write_timeout: Optional[int] = None,
    ) -> None:
        # A closed socket sends nothing. mysql-connector then raises its own error,
        # which close() catches when it sends COM_QUIT after a failed connect.
        sock = self.sock
        if not is_closed_socket(sock) and not is_sdk_tls_socket(sock, self._sdk_context):
            if self._sent_ssl_request or not is_ssl_request(bytes(payload)):
                self.shutdown()
                raise not_verified_tls_error()
            self._sent_ssl_request = True
        super().send(payload, packet_number, compressed_packet_number, write_timeout)


class GuardedMySQLConnection(MySQLConnection):
    """mysql-connector pure-Python connection whose sockets are :class:`GuardedTCPSocket`.

    ``reconnect()`` and ``ping(reconnect=True)`` open a new guarded socket too.
    """

    def __init__(self, *, securemysql_ssl_context: ssl.SSLContext, **kwargs: Any) -> None:
        # Set before the base class connects from inside __init__.
        self._securemysql_ssl_context = securemysql_ssl_context
        super().__init__(**kwargs)

    def _get_connection(self) -> MySQLSocket:
        connection = GuardedTCPSocket(
            host=self.server_host,
            port=self.server_port,
            force_ipv6=self._force_ipv6,
            ssl_context=self._securemysql_ssl_context,
        )
        connection.set_connection_timeout(self._connection_timeout)
        return connection


# --- The driver ----------------------------------------------------------------


class MySQLConnectorDriver(Driver):
    """Connects with mysql-connector-python, in pure-Python mode or with its C extension.

    Args:
        use_pure: True for the pure-Python mode, False for the C extension,
            None (default) for the C extension when it can be used, else the
            pure-Python mode.

    Raises:
        DriverNotAvailableError: ``use_pure=False`` and the C extension cannot
            be imported; the message gives the reason and the fix.
    """

    name = "mysql.connector"

    def __init__(self, use_pure: Optional[bool] = None) -> None:
        if use_pure is not None and not isinstance(use_pure, bool):
            raise ConfigurationError(f"use_pure must be True, False or None, not {use_pure!r}")
        self.use_pure = use_pure
        if use_pure is False:
            available, reason = c_extension_status()
            if not available:
                raise DriverNotAvailableError(
                    "driver='mysql.connector' with use_pure=False needs mysql-connector-python's "
                    f"C extension, but {reason}. Or pass use_pure=True, or leave use_pure "
                    "unset to fall back to the pure-Python mode."
                )

    def __repr__(self) -> str:
        return f"MySQLConnectorDriver(use_pure={self.use_pure!r})"

    # --- configuration ---------------------------------------------------------

    def check_arguments(self, driver_kwargs: Mapping[str, Any]) -> None:
        check_driver_kwargs(driver_kwargs)

        for name in driver_kwargs:
            if name in _CONNECT_FUNCTION_ARGUMENTS:
                raise ConfigurationError(
                    f"Driver argument {name}= is not supported with driver='mysql.connector': "
                    f"{_CONNECT_FUNCTION_ARGUMENTS[name]}."
                )

        _check_client_flags(driver_kwargs.get("client_flags"))
        _check_conn_attrs(driver_kwargs.get("conn_attrs"))

    def check_tls(self, tls: TLSConfig) -> None:
        """Reject TLS settings the chosen mode cannot apply; log the mode when it falls back.

        Raises:
            ConfigurationError: ``use_pure=False`` with ``ssl_capath``,
                ``ssl_context``, ``server_hostname``, or a system trust store
                without a bundle file.
        """
        mode, reason = self.choose_mode(tls)
        if reason:
            logger.info("mysql.connector: using the pure-Python mode because %s", reason)
        else:
            logger.debug("mysql.connector: using the %s mode", mode)

    def choose_mode(self, tls: TLSConfig) -> tuple[str, str]:
        """Return the mode for ``tls`` (:data:`PURE_PYTHON` or :data:`C_EXTENSION`).

        The second item is the reason the default fell back to the pure-Python
        mode, and is empty otherwise.

        Raises:
            ConfigurationError: ``use_pure=False`` and the C extension cannot
                apply a TLS setting of ``tls``.
        """
        if self.use_pure:
            return PURE_PYTHON, ""

        blocker = _c_extension_tls_blocker(tls)
        if self.use_pure is False:
            if blocker:
                raise ConfigurationError(
                    f"use_pure=False cannot be combined with {blocker}. Or leave use_pure "
                    "unset: the pure-Python mode applies every TLS setting."
                )
            return C_EXTENSION, ""

        if blocker:
            return PURE_PYTHON, f"the C extension cannot apply {blocker}"
        available, import_failure = c_extension_status()
        if not available:
            return PURE_PYTHON, f"the C extension is not available: {import_failure}"
        return C_EXTENSION, ""

    # --- connecting ---------------------------------------------------------------

    def connect(self, params: ConnectParams, token: str) -> Any:
        mode, _ = self.choose_mode(params.tls)
        if mode == C_EXTENSION:
            return self._connect_c_extension(params, token)
        return self._connect_pure(params, token)

    def _connect_pure(self, params: ConnectParams, token: str) -> Any:
        arguments = _common_arguments(params, token)
        # These make mysql-connector itself require TLS (2026 from a server
        # without TLS); the guarded socket enforces it below the protocol code.
        arguments.update(ssl_disabled=False, ssl_verify_cert=True, ssl_verify_identity=True)
        arguments["connection_timeout"] = params.connect_timeout

        # Never auth_plugin=None: mysql-connector 9.7 and 26.10 then fail with AttributeError.
        if first_auth_response_is_length_encoded():
            arguments["auth_plugin"] = _CLEAR_PASSWORD_PLUGIN
        else:
            logger.info(
                "mysql-connector-python %s cuts a password sent in its first packet at 255 "
                "bytes; the access token is sent when the server asks for mysql_clear_password",
                mysql.connector.__version__,
            )

        try:
            return GuardedMySQLConnection(securemysql_ssl_context=params.ssl_context, **arguments)
        except connector_errors.Error as exc:
            error = _not_offered_error(params, exc) or diagnose_tls_failure(params, exc)
            if error is None:
                raise
            raise error from exc

    def _connect_c_extension(self, params: ConnectParams, token: str) -> Any:
        from mysql.connector.connection_cext import CMySQLConnection

        ca_file = params.tls.ca_bundle_file()
        if ca_file is None:  # choose_mode() rules this out; keep the C library off a blank CA
            raise ConfigurationError(f"No CA file for the C extension: {params.tls.ca_source}.")

        arguments = _common_arguments(params, token)
        # NOTE: libmysqlclient writes to the socket in C, so no SDK code checks
        # each write as the pure-Python guard does. The guarantee rests on
        # libmysqlclient. With these arguments it stops with 2026 before the login
        # packet in three cases: the server offers no TLS, the chain does not verify
        # against ca_file, or the certificate does not name host. It rejects TLS 1.1
        # (tests/unit/test_drivers.py checks each case against a fake server).
        # tls_info() checks the negotiated cipher afterwards.
        arguments.update(
            ssl_ca=ca_file,
            ssl_verify_cert=True,
            ssl_verify_identity=True,
            ssl_disabled=False,
            tls_versions=list(_ACCEPTED_TLS_VERSIONS),
            auth_plugin=_CLEAR_PASSWORD_PLUGIN,
            # The C extension takes whole seconds.
            connection_timeout=max(1, math.ceil(params.connect_timeout)),
        )
        try:
            return CMySQLConnection(**arguments)
        except connector_errors.Error as exc:
            error = diagnose_tls_failure(params, exc)
            if error is None:
                raise
            raise error from exc

    # --- after connecting -----------------------------------------------------------

    def discard_token(self, connection: Any) -> None:
        # Both connection classes keep the password in these attributes for reconnect().
        for name in ("_password", "_password1"):
            if getattr(connection, name, None):
                setattr(connection, name, "")

    def tls_info(self, connection: Any) -> TLSInfo:
        """Return the session's TLS version and cipher; close and raise if it is not TLS.

        Pure-Python mode: read from the client's TLS socket. C extension: the
        cipher from libmysqlclient (``get_ssl_cipher()``, None without TLS), and
        the version derived from the cipher's name, because libmysqlclient does
        not expose it and asking the server would cost a round trip per connect.
        """
        if isinstance(connection, MySQLConnection):
            return _pure_tls_info(connection)
        return _c_extension_tls_info(connection)

    def is_auth_rejection(self, exc: BaseException) -> bool:
        return isinstance(exc, connector_errors.Error) and exc.errno == _ACCESS_DENIED


def _not_offered_error(params: ConnectParams, exc: BaseException) -> Optional[TLSNotOfferedError]:
    # With mysql_clear_password named, a server without TLS fails this check of
    # mysql-connector before its own "SSL is required" check (2026).
    if _INSECURE_CHANNEL_TEXT not in str(exc):
        return None
    return TLSNotOfferedError(
        f"The server at {params.host!r} does not offer TLS, so the access token was not "
        "sent. Enable TLS on the server; securemysql never falls back to an unencrypted "
        "connection."
    )


def _common_arguments(params: ConnectParams, token: str) -> dict[str, Any]:
    arguments = dict(params.driver_kwargs)
    user_attributes = arguments.pop("conn_attrs", None) or {}
    arguments.update(
        host=params.host,
        port=params.port,
        user=params.user,
        password=token,
        database=params.database,
        conn_attrs={**user_attributes, "program_name": params.program_name},
    )
    return arguments


def _c_extension_tls_blocker(tls: TLSConfig) -> str:
    """Return which TLS setting the C extension cannot apply and what to do, or ""."""
    if tls.ssl_context is not None:
        return (
            "ssl_context= (the C extension takes CA file paths, not an SSLContext); "
            "pass ssl_ca= a PEM file with the CA certificates instead"
        )
    if tls.ca_path is not None:
        return (
            "ssl_capath= (the C extension takes one CA file, not a directory); "
            "concatenate the certificates into one PEM file and pass it as ssl_ca="
        )
    if tls.server_hostname is not None:
        return (
            "server_hostname= (libmysqlclient checks the certificate against the "
            "connection host only); connect by a name the certificate lists"
        )
    if tls.use_system_trust_store and system_ca_bundle_file() is None:
        return (
            "use_system_trust_store=True on a system without a CA bundle file; "
            "pass ssl_ca= a PEM file with the CA certificates instead"
        )
    return ""


def _check_client_flags(client_flags: object) -> None:
    # A list may remove flags with negative entries; removing CLIENT_SSL would turn TLS off.
    if isinstance(client_flags, (list, tuple)) and -ClientFlag.SSL in client_flags:
        raise ConfigurationError(
            "Driver argument client_flags= removes ClientFlag.SSL, which would turn off TLS; "
            "remove -ClientFlag.SSL from the list."
        )


def _check_conn_attrs(conn_attrs: object) -> None:
    if conn_attrs is None:
        return
    if not isinstance(conn_attrs, Mapping):
        raise ConfigurationError(
            f"conn_attrs must be a dict of connection attributes, not {type(conn_attrs).__name__}"
        )
    if "program_name" in conn_attrs:
        raise ConfigurationError(
            "conn_attrs['program_name'] is set by securemysql; pass program_name= instead."
        )


def _pure_tls_info(connection: Any) -> TLSInfo:
    network = getattr(connection, "_socket", None)
    sock = getattr(network, "sock", None)
    guarded = isinstance(network, GuardedTCPSocket)
    if not guarded or not isinstance(sock, ssl.SSLSocket) or not is_verified_tls_socket(sock):
        close_quietly(connection)
        raise not_verified_tls_error()
    return tls_info_from_socket(sock)


def _c_extension_tls_info(connection: Any) -> TLSInfo:
    cipher = _as_text(connection._cmysql.get_ssl_cipher())
    if not cipher:
        close_quietly(connection)
        raise not_verified_tls_error()

    # libmysqlclient negotiated within tls_versions (TLS 1.2 or 1.3, set at connect),
    # and OpenSSL names every TLS 1.3 cipher suite "TLS_..." and no TLS 1.2 suite so.
    version = "TLSv1.3" if cipher.startswith("TLS_") else "TLSv1.2"
    return TLSInfo(version=version, cipher=cipher)


def _as_text(value: object) -> str:
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", "replace")
    return "" if value is None else str(value)
