"""Exceptions raised by securemysql.

Every message names the value that failed and what to do about it, and no
message, attribute or chained exception carries an access token: callers may
log any of these objects as they are.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional


class SecureMySQLError(Exception):
    """Base class of every error that securemysql raises on purpose."""


class ConfigurationError(SecureMySQLError, ValueError):
    """An argument or setting is invalid; fix the value named in the message."""


class InsecureConfigurationError(ConfigurationError):
    """A setting would let the access token travel without verified TLS.

    securemysql rejects such settings instead of weakening the connection; the
    message names the setting and why it is rejected.
    """


class DriverNotAvailableError(SecureMySQLError, ImportError):
    """The requested database driver (or its C extension) cannot be imported."""


# --- Access tokens ---------------------------------------------------------


class TokenError(SecureMySQLError):
    """Base class of errors about Microsoft Entra ID access tokens."""


class TokenAcquisitionError(TokenError):
    """The credential did not return an access token.

    Attributes:
        credential: class name of the credential that was tried.
        scope: the scope that was requested.
        transient: True when a later attempt may succeed (endpoint errors,
            throttling, time-outs); False when configuration must change.
    """

    def __init__(
        self, message: str, *, credential: str, scope: str, transient: bool = False
    ) -> None:
        super().__init__(message)
        self.credential = credential
        self.scope = scope
        self.transient = transient


class InvalidTokenError(TokenError):
    """The credential returned a token that would fail at login; it was not sent."""


class MalformedTokenError(InvalidTokenError):
    """The token is not a JWT or contains whitespace."""


class TokenAudienceError(InvalidTokenError):
    """The token was issued for another audience than the requested scope."""


class TokenExpiredError(InvalidTokenError):
    """The token has already expired."""


# --- Transport security ----------------------------------------------------


class TLSError(SecureMySQLError):
    """TLS could not be established and verified; no access token was sent."""


class TLSNotOfferedError(TLSError):
    """The server does not offer TLS, so the token cannot be sent safely."""


class CertificateVerificationError(TLSError):
    """The server's certificate chain does not verify against the trusted CAs.

    Attributes:
        issuer: issuer the server presented, when the driver reports it.
        ca_source: the CA bundle, directory or context that was trusted.
    """

    def __init__(
        self, message: str, *, issuer: Optional[str] = None, ca_source: Optional[str] = None
    ) -> None:
        super().__init__(message)
        self.issuer = issuer
        self.ca_source = ca_source


class HostnameMismatchError(TLSError):
    """The server certificate is valid but was not issued for the expected host name.

    Attributes:
        hostname: the name (or IP address) that was checked.
        certificate_names: the DNS names and IP addresses in the certificate, when known.
    """

    def __init__(
        self, message: str, *, hostname: str, certificate_names: Sequence[str] = ()
    ) -> None:
        super().__init__(message)
        self.hostname = hostname
        self.certificate_names = tuple(certificate_names)


class TLSVersionError(TLSError):
    """The server offers only TLS versions older than the required minimum (TLS 1.2)."""


# --- Login and connection establishment ------------------------------------


class AuthenticationError(SecureMySQLError):
    """The server rejected the access token, also after one forced token refresh.

    Attributes:
        user: the MySQL user name that was tried.
        errno: the server's error number (1045 for access denied).
    """

    def __init__(self, message: str, *, user: str, errno: Optional[int] = None) -> None:
        super().__init__(message)
        self.user = user
        self.errno = errno


class ConnectionFailedError(SecureMySQLError):
    """Connection establishment failed, after retries where the error was transient.

    The last underlying error is chained as ``__cause__``.

    Attributes:
        attempts: number of connection attempts made.
        elapsed: seconds spent on all attempts, waits included.
        errno: MySQL error number of the last failure, when it had one.
        transient: True when the last failure was classified as transient.
    """

    def __init__(
        self,
        message: str,
        *,
        attempts: int,
        elapsed: float,
        errno: Optional[int] = None,
        transient: bool = False,
    ) -> None:
        super().__init__(message)
        self.attempts = attempts
        self.elapsed = elapsed
        self.errno = errno
        self.transient = transient
