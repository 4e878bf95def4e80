"""JWT claims: decoding, the checks made before a token is sent, and ``AccessToken``.

Signatures are not verified here, because the server verifies them. The client
checks what it can see in the claims (audience and expiry) so that a token that
would fail at login is reported with its cause instead of as "Access denied".
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from types import MappingProxyType
from typing import Any, Optional

from securemysql.errors import MalformedTokenError, TokenAudienceError, TokenExpiredError
from securemysql.tokens.scopes import audience_for_scope

_BASE64URL_SEGMENT = re.compile(r"[A-Za-z0-9_-]*")

# Claims that identify the caller without being secret, in the order shown.
_IDENTITY_CLAIMS = ("oid", "appid", "azp", "upn", "tid")
_MAX_IDENTITY_VALUE = 64


# --- Decoding ------------------------------------------------------------------


def decode_claims(token: str) -> dict[str, Any]:
    """Decode the payload of a JWT without verifying its signature.

    The signature is not checked because the server verifies it; the claims are
    used only to check audience and expiry before sending, and for logging.
    Surrounding whitespace is ignored.

    Raises:
        MalformedTokenError: ``token`` is not a compact JWS (three base64url
            segments whose first two decode to JSON objects). The message never
            contains the token.
    """
    if not isinstance(token, str):
        raise MalformedTokenError(f"access token must be a str, got {type(token).__name__}")

    segments = token.strip().split(".")
    if len(segments) != 3:
        raise MalformedTokenError(
            f"access token is not a JWT: expected 3 dot-separated segments, found {len(segments)}"
        )

    _decode_json_segment(segments[0], "header")
    return _decode_json_segment(segments[1], "payload")


def _decode_json_segment(segment: str, name: str) -> dict[str, Any]:
    if not segment or not _BASE64URL_SEGMENT.fullmatch(segment):
        raise MalformedTokenError(
            f"access token is not a JWT: its {name} segment is empty or not base64url"
        )

    try:
        raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
        value = json.loads(raw.decode("utf-8"))
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise MalformedTokenError(
            f"access token is not a JWT: its {name} segment does not decode to JSON"
        ) from None

    if not isinstance(value, dict):
        raise MalformedTokenError(f"access token is not a JWT: its {name} is not a JSON object")
    return value


# --- Checks before sending -----------------------------------------------------


def check_token(token: str, *, scope: str, now: float) -> str:
    """Check that ``token`` would pass the server's audience and expiry checks.

    Args:
        token: the access token; surrounding whitespace is removed.
        scope: the scope the token was requested for.
        now: current time, Unix epoch seconds.

    Returns:
        The token without surrounding whitespace.

    Raises:
        MalformedTokenError: whitespace inside the token, or not a JWT, or no
            numeric ``exp`` claim.
        TokenAudienceError: ``aud`` is not ``audience_for_scope(scope)``.
        TokenExpiredError: ``exp <= now``.
    """
    stripped, _claims = checked_token(token, scope=scope, now=now)
    return stripped


def checked_token(token: str, *, scope: str, now: float) -> tuple[str, dict[str, Any]]:
    """Run :func:`check_token` and return the stripped token with its decoded claims."""
    if not isinstance(token, str):
        raise MalformedTokenError(f"access token must be a str, got {type(token).__name__}")

    stripped = token.strip()
    if not stripped:
        raise MalformedTokenError("access token is empty")
    inner_space = re.search(r"\s", stripped)
    if inner_space is not None:
        raise MalformedTokenError(
            f"access token contains whitespace at offset {inner_space.start()}; "
            "a token copied from a terminal or file often contains a line break"
        )

    claims = decode_claims(stripped)
    _check_audience(claims, scope)
    _check_expiry(claims, now)
    return stripped, claims


def _check_audience(claims: Mapping[str, Any], scope: str) -> None:
    expected = audience_for_scope(scope)
    audience = claims.get("aud")
    audiences = audience if isinstance(audience, list) else [audience]
    if expected in audiences:
        return

    raise TokenAudienceError(
        f"access token was issued for audience {audience!r}, but scope {scope!r} needs "
        f"audience {expected!r}; request the token for the server's cloud "
        "(scope= or cloud=) and check that the credential honours the requested scope"
    )


def _check_expiry(claims: Mapping[str, Any], now: float) -> None:
    expires = numeric_claim(claims, "exp")
    if expires is None:
        raise MalformedTokenError("access token has no numeric 'exp' (expiry) claim")
    if expires <= now:
        raise TokenExpiredError(
            f"access token expired at {format_utc(expires)} "
            f"({now - expires:.0f} s before the local clock's {format_utc(now)}); "
            "fetch a new token, and check the local clock if this repeats"
        )


# --- Small helpers ---------------------------------------------------------------


def numeric_claim(claims: Mapping[str, Any], name: str) -> Optional[float]:
    """Return claim ``name`` as a finite float, or None when it is absent or not a number."""
    value = claims.get(name)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def is_finite_number(value: object) -> bool:
    """Tell whether ``value`` is an int or float (not a bool) that is neither NaN nor infinite."""
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(float(value))
    )


def format_utc(epoch_seconds: float) -> str:
    """Format Unix epoch seconds as ``YYYY-MM-DD HH:MM:SS UTC`` (``epoch N`` if out of range)."""
    try:
        moment = datetime.fromtimestamp(epoch_seconds, tz=timezone.utc)
    except (OverflowError, OSError, ValueError):
        return f"epoch {epoch_seconds:.0f}"
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


# --- Access token ----------------------------------------------------------------


@dataclass(frozen=True, repr=False)
class AccessToken:
    """A checked access token and what is known about it.

    Attributes:
        token: the JWT to send as the MySQL password; hidden from ``repr`` and ``str``.
        expires_on: expiry, Unix epoch seconds: the earlier of the credential's
            ``expires_on`` and the JWT's ``exp`` claim.
        claims: the decoded JWT payload (read-only).
        fetched_at: when the credential returned the token, Unix epoch seconds.
    """

    token: str
    expires_on: float
    claims: Mapping[str, Any] = field(compare=False, hash=False)
    fetched_at: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "claims", MappingProxyType(dict(self.claims)))

    @property
    def identity(self) -> str:
        """Short, loggable description of the token's subject, such as ``oid=... tid=...``.

        Built from the ``oid``, ``appid`` (or ``azp``), ``upn`` and ``tid`` claims;
        ``"unknown identity"`` when none is present.
        """
        parts = []
        for name in _IDENTITY_CLAIMS:
            value = self.claims.get(name)
            if value is None or (name == "azp" and "appid" in self.claims):
                continue
            parts.append(f"{name}={str(value)[:_MAX_IDENTITY_VALUE]}")
        return " ".join(parts) if parts else "unknown identity"

    def __repr__(self) -> str:
        return (
            f"AccessToken(identity={self.identity!r}, "
            f"expires_on={format_utc(self.expires_on)!r}, "
            f"fetched_at={format_utc(self.fetched_at)!r})"
        )

    __str__ = __repr__


def to_access_token(
    raw: Any, *, scope: str, fetched_at: float, credential_name: str
) -> AccessToken:
    """Check a credential's result (``.token``, ``.expires_on``) and wrap it in an AccessToken.

    ``fetched_at`` is when the credential returned, Unix epoch seconds. The expiry
    is the earlier of the JWT's ``exp`` and the credential's ``expires_on``.

    Raises:
        InvalidTokenError: a subclass from :func:`check_token`, or TokenExpiredError
            when the credential itself reports the token as expired.
    """
    stripped, claims = checked_token(raw.token, scope=scope, now=fetched_at)

    expires_on = float(claims["exp"])
    credential_expiry: Any = getattr(raw, "expires_on", None)
    if is_finite_number(credential_expiry):
        expires_on = min(expires_on, float(credential_expiry))
    if expires_on <= fetched_at:
        raise TokenExpiredError(
            f"{credential_name} returned an access token that it reports as "
            f"expired at {format_utc(expires_on)}; check the local clock"
        )

    return AccessToken(token=stripped, expires_on=expires_on, claims=claims, fetched_at=fetched_at)
