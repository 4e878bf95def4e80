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

from securemysql.errors import ConfigurationError, InsecureConfigurationError
from securemysql.tls import TLSConfig, TLSInfo


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
    "ssl_context": "ssl_context",
    "defer_connect": "nothing: the SDK opens the connection itself",
    "unix_socket": "nothing: tokens are only sent over TCP with verified TLS",
    "ssl_cert": "ssl_context= with the client certificate loaded into it",
    "ssl_key": "ssl_context= with the client certificate loaded into it",
}

# Arguments that would let the token travel without verified TLS.
WEAKENING_ARGUMENTS: Mapping[str, str] = {
    "ssl": "it replaces the SDK's verified TLS context; pass ssl_context= instead",
    "ssl_disabled": "disabling TLS would send the access token in clear text",
    "ssl_verify_cert": "certificate verification is always on",
    "ssl_verify_identity": "host name verification is always on",
    "ssl_mode": "TLS with certificate and host name verification is always required",
    "tls_versions": "the SDK requires TLS 1.2 or newer and negotiates the best version",
    "tls_ciphersuites": "the SDK uses Python's default secure cipher suites",
}


def check_driver_kwargs(driver_kwargs: Mapping[str, Any]) -> None:
    """Reject driver arguments that the SDK owns or that would weaken TLS."""
    for name in driver_kwargs:
        if name in WEAKENING_ARGUMENTS:
            raise InsecureConfigurationError(
                f"Driver argument {name}= is rejected: {WEAKENING_ARGUMENTS[name]}."
            )
        if name in RESERVED_ARGUMENTS:
            raise ConfigurationError(
                f"Driver argument {name}= is set by securemysql; "
                f"use {RESERVED_ARGUMENTS[name]} instead."
            )


class Driver(abc.ABC):
    """One database driver behind the SDK's connection factory."""

    #: Value of ``driver=`` that selects this driver.
    name: ClassVar[str]

    def check_arguments(self, driver_kwargs: Mapping[str, Any]) -> None:
        """Raise ConfigurationError for arguments this driver cannot take safely."""
        check_driver_kwargs(driver_kwargs)

    @abc.abstractmethod
    def connect(self, params: ConnectParams, token: str) -> Any:
        """Open one connection, sending ``token`` only over verified TLS.

        Raises the driver's own exceptions for server and network errors, and
        ``securemysql.errors.TLSError`` when the guard stops the token.
        """

    @abc.abstractmethod
    def tls_info(self, connection: Any) -> TLSInfo:
        """Return the TLS version and cipher of an open connection."""

    @abc.abstractmethod
    def is_auth_rejection(self, exc: BaseException) -> bool:
        """Return True when ``exc`` means the server rejected the password (1045)."""


_connection_tls: weakref.WeakKeyDictionary[Any, TLSInfo] = weakref.WeakKeyDictionary()


def remember_tls_info(connection: Any, info: TLSInfo) -> None:
    # A driver object that does not take weak references is simply not recorded.
    with contextlib.suppress(TypeError):
        _connection_tls[connection] = info


def connection_tls_info(connection: Any) -> Optional[TLSInfo]:
    """Return the TLS version and cipher recorded when the SDK opened ``connection``."""
    return _connection_tls.get(connection)
