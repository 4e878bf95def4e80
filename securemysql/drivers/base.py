"""The interface every database driver module implements.

A driver module turns one set of connection parameters and one access token
into a driver connection. It owns the driver's quirks: how to enable the
``mysql_clear_password`` auth plugin, how to hand over the TLS policy, and how
to keep the token off any socket that is not verified TLS.
"""

from __future__ import annotations

import abc
import contextlib
import ssl
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Optional

from securemysql.errors import (
    ConfigurationError,
    InsecureConfigurationError,
    TLSNotOfferedError,
)
from securemysql.tls import TLSConfig, TLSInfo

# MySQL capability flag CLIENT_SSL and the SSLRequest payload length (include/mysql_com.h).
CLIENT_SSL = 1 << 11
SSL_REQUEST_LENGTH = 32


@dataclass(frozen=True)
class ConnectParams:
    """Everything a driver needs for one connection, except the token.

    ``driver_kwargs`` is a read-only copy of the caller's extra arguments; a
    driver copies it before adding anything, so connects never share state.
    """

    host: str
    port: int
    user: str
    database: Optional[str]
    connect_timeout: float
    program_name: str
    tls: TLSConfig
    ssl_context: ssl.SSLContext = field(repr=False)
    driver_kwargs: Mapping[str, Any] = field(default_factory=dict)


_TOKEN_LOGIN = "nothing: securemysql logs in with the Microsoft Entra ID access token"
_OPTION_FILES = (
    "an option file can set the host, the password and TLS options (ssl-mode, ssl-ca, "
    "skip-ssl), which would bypass the SDK's TLS policy; pass the settings as arguments"
)

# Arguments that the SDK sets itself; each maps to the SDK parameter to use instead.
RESERVED_ARGUMENTS: Mapping[str, str] = {
    "host": "host",
    "port": "port",
    "user": "user",
    "username": "user",
    "password": "credential (the SDK sends an access token as the password)",
    "passwd": "credential (the SDK sends an access token as the password)",
    "password1": "credential (the SDK sends an access token as the password)",
    "database": "database",
    "db": "database",
    "connect_timeout": "connect_timeout",
    "connection_timeout": "connect_timeout",
    "auth_plugin": "nothing: the SDK enables mysql_clear_password itself",
    "auth_plugin_map": "nothing: the SDK enables mysql_clear_password itself",
    "program_name": "program_name",
    "ssl_ca": "ssl_ca",
    "ssl_capath": "ssl_capath",
    # TLSConfig's field names, which users may take for factory arguments.
    "ca_file": "ssl_ca",
    "ca_path": "ssl_capath",
    "cafile": "ssl_ca",
    "capath": "ssl_capath",
    "ssl_context": "ssl_context",
    "defer_connect": "nothing: the SDK opens the connection itself",
    "unix_socket": "nothing: tokens are only sent over TCP with verified TLS",
    "ssl_cert": "ssl_context= with the client certificate loaded into it",
    "ssl_key": "ssl_context= with the client certificate loaded into it",
    "password2": "nothing: the access token is the only password (no multi-factor login)",
    "password3": "nothing: the access token is the only password (no multi-factor login)",
    "krb_service_principal": _TOKEN_LOGIN,
    "kerberos_auth_mode": _TOKEN_LOGIN,
    "oci_config_file": _TOKEN_LOGIN,
    "oci_config_profile": _TOKEN_LOGIN,
    "webauthn_callback": _TOKEN_LOGIN,
    "openid_token_file": _TOKEN_LOGIN,
}

# Arguments that would let the token travel without verified TLS.
WEAKENING_ARGUMENTS: Mapping[str, str] = {
    "ssl": "it replaces the SDK's verified TLS context; pass ssl_context= instead",
    "ssl_disabled": "disabling TLS would send the access token in clear text",
    "ssl_verify_cert": "certificate verification is always on",
    "ssl_verify_identity": "host name verification is always on",
    "ssl_mode": "TLS with certificate and host name verification is always required",
    "tls_versions": "the SDK requires TLS 1.2 or newer and negotiates the best version",
    "tls_ciphersuites": "the SDK uses the TLS library's default secure cipher suites",
    "ssl_cipher": "the SDK uses the TLS library's default secure cipher suites",
    "option_files": _OPTION_FILES,
    "option_groups": _OPTION_FILES,
    "read_default_file": _OPTION_FILES,
    "read_default_group": _OPTION_FILES,
}

# Values of weakening arguments that only repeat what the SDK sets: still
# rejected (the SDK owns these arguments), but as plain ConfigurationError.
_SDK_VALUES: Mapping[str, bool] = {
    "ssl_disabled": False,
    "ssl_verify_cert": True,
    "ssl_verify_identity": True,
}

# Any other argument with these prefixes configures TLS in PyMySQL or mysql-connector.
_TLS_PREFIXES = ("ssl_", "tls_")

_TLS_ARGUMENTS_HINT = (
    "TLS is configured with securemysql's own arguments: ssl_ca=, ssl_capath=, ssl_context=, "
    "use_system_trust_store= and server_hostname="
)


def check_driver_kwargs(driver_kwargs: Mapping[str, Any]) -> None:
    """Reject driver arguments that the SDK owns or that would weaken TLS.

    Raises:
        InsecureConfigurationError: the argument could turn off TLS or its
            verification, or replace the SDK's TLS settings.
        ConfigurationError: the SDK sets the argument itself (the message names
            the SDK parameter to use instead).
    """
    for name, value in driver_kwargs.items():
        if name in _SDK_VALUES and value is _SDK_VALUES[name]:
            raise ConfigurationError(
                f"Driver argument {name}={value!r} is what securemysql always sets; remove it."
            )
        if name in WEAKENING_ARGUMENTS:
            raise InsecureConfigurationError(
                f"Driver argument {name}= is rejected: {WEAKENING_ARGUMENTS[name]}."
            )
        if name in RESERVED_ARGUMENTS:
            raise ConfigurationError(
                f"Driver argument {name}= is set by securemysql; "
                f"use {RESERVED_ARGUMENTS[name]} instead."
            )
        if name.startswith(_TLS_PREFIXES):
            raise ConfigurationError(f"Driver argument {name}= is rejected: {_TLS_ARGUMENTS_HINT}.")


def is_sdk_tls_socket(sock: object, context: ssl.SSLContext) -> bool:
    """Tell whether ``sock`` is a TLS socket set up with ``context``, the SDK's verifying context.

    ``context`` requires a verified certificate chain and host name and TLS
    1.2 or newer, so such a socket either completed a verified handshake or
    performs one before it writes anything, and it encrypts every write. That
    stays true after the server ends the session: writes then fail, but
    nothing is sent in clear text.
    """
    return (
        isinstance(sock, ssl.SSLSocket)
        and sock.context is context
        and context.verify_mode == ssl.CERT_REQUIRED
        and context.check_hostname
    )


def is_closed_socket(sock: object) -> bool:
    """Tell whether ``sock`` is missing or closed, so that a write cannot reach the network."""
    if sock is None:
        return True
    fileno = getattr(sock, "fileno", None)
    return callable(fileno) and fileno() == -1


def is_ssl_request(payload: bytes) -> bool:
    """Tell whether ``payload`` (without packet header) is the client's SSLRequest.

    The SSLRequest is the only packet a client sends before the TLS handshake:
    capability flags with CLIENT_SSL, maximum packet size, character set and 23
    zero bytes, 32 bytes in all. It carries no user name and no password.
    """
    if len(payload) != SSL_REQUEST_LENGTH:
        return False
    capabilities = int.from_bytes(payload[:4], "little")
    return bool(capabilities & CLIENT_SSL) and payload[9:] == bytes(23)


def not_verified_tls_error() -> TLSNotOfferedError:
    """Return the error a guard raises when a write would leave on a socket without verified TLS."""
    return TLSNotOfferedError(
        "Stopped before sending credentials: the connection to the server is not "
        "verified TLS (the server may not offer TLS). Enable TLS on the server; "
        "securemysql never sends an access token in clear text."
    )


def close_quietly(connection: Any) -> None:
    """Close a driver connection that is being given up, ignoring errors from closing."""
    with contextlib.suppress(Exception):
        connection.close()


class Driver(abc.ABC):
    """One database driver behind the SDK's connection factory."""

    #: Value of ``driver=`` that selects this driver.
    name: ClassVar[str]

    def check_arguments(self, driver_kwargs: Mapping[str, Any]) -> None:
        """Raise ConfigurationError for arguments this driver cannot take safely."""
        check_driver_kwargs(driver_kwargs)

    def check_tls(self, tls: TLSConfig) -> None:
        """Raise ConfigurationError when this driver cannot apply ``tls``.

        The connection factory calls it once, when it is created. Drivers that
        take every trust source (PyMySQL) accept everything.
        """
        return

    @abc.abstractmethod
    def connect(self, params: ConnectParams, token: str) -> Any:
        """Open one connection, sending ``token`` only over verified TLS.

        Raises the driver's own exceptions for server and network errors, and
        ``securemysql.errors.TLSError`` when the guard stops the token.
        """

    @abc.abstractmethod
    def tls_info(self, connection: Any) -> TLSInfo:
        """Return the TLS version and cipher of an open connection.

        Raises ``securemysql.errors.TLSError`` (and closes the connection) when
        the session is not verified TLS 1.2 or newer.
        """

    @abc.abstractmethod
    def is_auth_rejection(self, exc: BaseException) -> bool:
        """Return True when ``exc`` means the server rejected the password (1045)."""

    @abc.abstractmethod
    def discard_token(self, connection: Any) -> None:
        """Drop the driver's copy of the token from an open connection.

        Drivers keep the password for a later reconnect, which would send an
        expired token anyway. Dropping it keeps the secret out of memory dumps,
        debuggers and pickles for the connection's whole life.
        """


_connection_tls: weakref.WeakKeyDictionary[Any, TLSInfo] = weakref.WeakKeyDictionary()


def remember_tls_info(connection: Any, info: TLSInfo) -> None:
    # A driver object that does not take weak references is simply not recorded.
    with contextlib.suppress(TypeError):
        _connection_tls[connection] = info


def connection_tls_info(connection: Any) -> Optional[TLSInfo]:
    """Return the TLS version and cipher recorded when the SDK opened ``connection``."""
    return _connection_tls.get(connection)
