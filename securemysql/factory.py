"""The connection factory: access token + verified TLS + retries, for any driver.

``ConnectionFactory`` takes the connection settings once and opens a new
driver connection on each call, so it can be handed to connection pools
(SQLAlchemy's ``creator=``, for example). ``connect()`` opens one connection.
"""

from __future__ import annotations

import logging
import os
import ssl
import sys
import types
from collections.abc import Mapping
from typing import Any, Optional

from securemysql import redaction
from securemysql.drivers import ConnectParams, Driver, load_driver
from securemysql.drivers.base import remember_tls_info
from securemysql.errors import AuthenticationError, ConfigurationError, TLSError
from securemysql.retry import Outcome, RetryPolicy, classify, error_number
from securemysql.tls import TLSConfig, translate_tls_failure
from securemysql.tokens import AccessToken, TokenProvider

logger = logging.getLogger("securemysql.factory")

DEFAULT_PORT = 3306
DEFAULT_CONNECT_TIMEOUT = 10.0


def default_program_name() -> str:
    """Return the running application's name, for the ``program_name`` connection attribute."""
    name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return name or "python"


class ConnectionFactory:
    """Open connections to Azure Database for MySQL with Microsoft Entra ID tokens.

    Each call returns a new driver connection (PyMySQL or mysql-connector).
    An access token from ``token_provider`` (built from ``credential`` when not
    given) is sent as the password with the ``mysql_clear_password`` auth
    plugin. It is sent only over TLS 1.2 or newer whose certificate chain and
    host name were verified. Transient errors are retried under ``retry``; a token the server
    rejects (1045) is refreshed once and the login tried once more.

    The factory is thread-safe and keeps no connection; it can be shared by a
    whole process. Extra keyword arguments go to the driver unchanged, except
    those that would weaken TLS or that the SDK sets itself, which are rejected.
    """

    def __init__(
        self,
        host: str,
        user: str,
        *,
        database: Optional[str] = None,
        port: int = DEFAULT_PORT,
        driver: str = "pymysql",
        credential: Any = None,
        token_provider: Optional[TokenProvider] = None,
        scope: Optional[str] = None,
        cloud: Optional[str] = None,
        managed_identity_client_id: Optional[str] = None,
        token_timeout: float = 30.0,
        ssl_ca: Optional[str] = None,
        ssl_capath: Optional[str] = None,
        ssl_context: Optional[ssl.SSLContext] = None,
        use_system_trust_store: bool = False,
        server_hostname: Optional[str] = None,
        retry: Optional[RetryPolicy] = None,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        program_name: Optional[str] = None,
        use_pure: Optional[bool] = None,
        **driver_kwargs: Any,
    ) -> None:
        _check_basic_arguments(host, user, port, connect_timeout)
        redaction.install()

        self.host = host
        self.user = user
        self.database = database
        self.port = port
        self.tls = TLSConfig(
            ca_file=ssl_ca,
            ca_path=ssl_capath,
            ssl_context=ssl_context,
            use_system_trust_store=use_system_trust_store,
            server_hostname=server_hostname,
        )
        self.retry = retry if retry is not None else RetryPolicy()
        self.tokens = token_provider or self._build_token_provider(
            credential, scope, cloud, managed_identity_client_id, token_timeout
        )

        driver_options = {} if use_pure is None else {"use_pure": use_pure}
        self.driver: Driver = load_driver(driver, **driver_options)
        self.driver.check_arguments(driver_kwargs)
        self.driver.check_tls(self.tls)
        self._ssl_context = self.tls.create_ssl_context()
        self._params = ConnectParams(
            host=host,
            port=port,
            user=user,
            database=database,
            connect_timeout=connect_timeout,
            program_name=program_name or default_program_name(),
            tls=self.tls,
            ssl_context=self._ssl_context,
            driver_kwargs=types.MappingProxyType(dict(driver_kwargs)),
        )

    def _build_token_provider(
        self,
        credential: Any,
        scope: Optional[str],
        cloud: Optional[str],
        managed_identity_client_id: Optional[str],
        token_timeout: float,
    ) -> TokenProvider:
        return TokenProvider(
            credential,
            scope=scope,
            cloud=cloud,
            host=self.host,
            managed_identity_client_id=managed_identity_client_id,
            timeout=token_timeout,
        )

    @property
    def driver_kwargs(self) -> Mapping[str, Any]:
        """Read-only view of the extra driver arguments."""
        return self._params.driver_kwargs

    def __call__(self) -> Any:
        """Open and return a new driver connection.

        Raises:
            securemysql.errors.TLSError: TLS could not be verified; nothing secret was sent.
            securemysql.errors.AuthenticationError: the server rejected a fresh token too.
            securemysql.errors.TokenAcquisitionError: no access token could be obtained,
                for a reason that retrying cannot fix, or for a transient one (endpoint
                error, throttling, time-out) when retries are disabled.
            securemysql.errors.InvalidTokenError: the credential returned a token that
                would fail at login (audience, expiry, format); it was not sent.
            securemysql.errors.ConnectionFailedError: retries ran out, or a permanent
                driver error; the last error (driver error or transient
                TokenAcquisitionError) is chained as ``__cause__``.
        """
        description = f"connect to {self.host}:{self.port} as {self.user!r}"
        return self.retry.call(self._connect_once, description=description)

    connect = __call__

    def _connect_once(self) -> Any:
        token = self.tokens.get_token()
        try:
            connection = self._open(token)
        except Exception as exc:
            if not self._is_auth_rejection(exc):
                raise
            connection = self._retry_with_fresh_token(token, exc)

        info = self.driver.tls_info(connection)
        self.driver.discard_token(connection)
        remember_tls_info(connection, info)
        logger.debug(
            "connected to %s:%d as %r over %s (%s); token %s",
            self.host,
            self.port,
            self.user,
            info.version,
            info.cipher,
            token.identity,
        )
        return connection

    def _retry_with_fresh_token(self, rejected: AccessToken, first_error: Exception) -> Any:
        logger.warning(
            "server rejected the access token for user %r (%s); refreshing the token once",
            self.user,
            _first_line(first_error),
        )
        fresh = self.tokens.force_refresh(rejected)
        try:
            return self._open(fresh)
        except Exception as exc:
            if not self._is_auth_rejection(exc):
                raise
            raise AuthenticationError(
                f"The server rejected the access token for MySQL user {self.user!r} twice, the "
                "second time with a freshly fetched token. Check that the user exists on the "
                "server for this Microsoft Entra identity (CREATE AADUSER), that the user name "
                "matches the Entra name exactly, and that the token's tenant and audience "
                f"({self.tokens.scope}) are those of the server.",
                user=self.user,
                errno=error_number(exc),
            ) from exc

    def _is_auth_rejection(self, exc: BaseException) -> bool:
        # retry.ERROR_TABLE decides (1045, 1698, or SQLSTATE 28000 without a number),
        # whatever exception class the driver chose.
        return classify(exc) is Outcome.AUTHENTICATION or self.driver.is_auth_rejection(exc)

    def _open(self, token: AccessToken) -> Any:
        try:
            return self.driver.connect(self._params, token.token)
        except TLSError:
            raise
        except Exception as exc:
            translated = translate_tls_failure(
                exc, hostname=self.tls.server_hostname or self.host, ca_source=self.tls.ca_source
            )
            if translated is None:
                raise
            raise translated from exc

    def __repr__(self) -> str:
        return (
            f"ConnectionFactory(host={self.host!r}, port={self.port}, user={self.user!r}, "
            f"database={self.database!r}, driver={self.driver.name!r}, tls={self.tls!r}, "
            f"retry={self.retry!r}, tokens={self.tokens!r})"
        )


def connect(host: str, user: str, **kwargs: Any) -> Any:
    """Open one connection; takes the same arguments as ``ConnectionFactory``."""
    return ConnectionFactory(host, user, **kwargs)()


def _check_basic_arguments(host: str, user: str, port: int, connect_timeout: float) -> None:
    if not isinstance(host, str) or not host.strip():
        raise ConfigurationError(f"host must be a non-empty host name or IP address, got {host!r}")
    if not isinstance(user, str) or not user.strip():
        raise ConfigurationError(
            f"user must be the MySQL user name created for the Entra identity, got {user!r}"
        )
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise ConfigurationError(f"port must be an integer from 1 to 65535, got {port!r}")
    if connect_timeout <= 0:
        raise ConfigurationError(
            f"connect_timeout must be a positive number of seconds, got {connect_timeout!r}"
        )


def _first_line(exc: BaseException) -> str:
    text = redaction.redact(str(exc))
    return text.splitlines()[0][:200] if text else type(exc).__name__
