"""The sandbox's token authority: it signs Entra-style access tokens and validates them.

Tokens are RS256 JWTs whose claims follow what Microsoft Entra ID issues for
Azure Database for MySQL: ``aud`` is the resource without ``/.default``,
``iss`` names a tenant, and ``oid``/``appid``/``upn`` identify the caller.
Validation checks what the Azure server checks at login: signature, audience,
issuer, ``nbf``/``exp`` and that the MySQL user name belongs to the token's
identity.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Optional

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

AZURE_MYSQL_AUDIENCE = "https://ossrdbms-aad.database.windows.net"

# A few claims that real managed-identity tokens carry; they also bring sandbox
# tokens to a realistic length (well over 1 KB, above the 255- and 511-byte caps
# that some drivers and PAM modules apply).
_REALISTIC_PADDING_CLAIMS = {
    "idtyp": "app",
    "ver": "1.0",
    "aio": "E2ZgYDj4sandboxPaddingClaimQwAAAA==",
    "rh": "0.AQEAsandbox-refresh-hint-padding-value-00000000000000000000AAA.",
    "xms_tcdt": 1600000000,
}


@dataclass(frozen=True)
class Identity:
    """A principal the sandbox issues tokens for.

    ``mysql_user`` is the user created on the server for it, as an Azure
    administrator would with ``CREATE AADUSER``.
    """

    mysql_user: str
    object_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    client_id: Optional[str] = None
    upn: Optional[str] = None

    def claims(self) -> dict[str, Any]:
        """Return the identity claims (``oid``, ``sub``, and ``appid`` or ``upn``)."""
        claims: dict[str, Any] = {"oid": self.object_id, "sub": self.object_id}
        if self.client_id is not None:
            claims["appid"] = self.client_id
        if self.upn is not None:
            claims["upn"] = self.upn
        return claims


def new_signing_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


class TokenAuthority:
    """Signs and validates sandbox access tokens; thread-safe.

    ``rotate_signing_key()`` replaces the key, after which tokens signed with
    the old key are rejected at login: the situation in which a client must
    force a token refresh.
    """

    def __init__(self, tenant_id: Optional[str] = None) -> None:
        self.tenant_id = tenant_id or str(uuid.uuid4())
        self.issuer = f"https://sts.windows.net/{self.tenant_id}/"
        self._lock = threading.Lock()
        self._signing_key = new_signing_key()
        self._identities: dict[str, Identity] = {}

    @property
    def identities(self) -> Mapping[str, Identity]:
        """Registered identities keyed by MySQL user name."""
        with self._lock:
            return dict(self._identities)

    def register(self, identity: Identity) -> None:
        with self._lock:
            self._identities[identity.mysql_user] = identity

    def rotate_signing_key(self) -> None:
        key = new_signing_key()
        with self._lock:
            self._signing_key = key

    def mint(
        self,
        identity: Identity,
        *,
        lifetime: float = 3600.0,
        audience: str = AZURE_MYSQL_AUDIENCE,
        issued_at: Optional[float] = None,
        signing_key: Optional[rsa.RSAPrivateKey] = None,
    ) -> tuple[str, int]:
        """Sign a token for ``identity``; return it and its expiry in epoch seconds.

        ``lifetime`` is in seconds and may be negative to mint an expired token.
        ``signing_key`` overrides the authority's key (a wrong-key token).
        """
        now = time.time() if issued_at is None else issued_at
        expires_on = int(now + lifetime)
        claims: dict[str, Any] = {
            "aud": audience,
            "iss": self.issuer,
            "tid": self.tenant_id,
            "iat": int(now),
            "nbf": int(now) - 60 if lifetime > 0 else int(now + lifetime) - 60,
            "exp": expires_on,
            "uti": uuid.uuid4().hex,
            **_REALISTIC_PADDING_CLAIMS,
            **identity.claims(),
        }
        with self._lock:
            key = signing_key or self._signing_key
        token = jwt.encode(claims, key, algorithm="RS256", headers={"kid": "sandbox"})
        return token, expires_on

    def validate(self, mysql_user: str, token: str) -> Optional[str]:
        """Validate a login; return None when accepted, else the reason for rejection.

        The reason never contains the token.
        """
        with self._lock:
            public_key = self._signing_key.public_key()
            identity = self._identities.get(mysql_user)

        try:
            claims = jwt.decode(
                token,
                public_key,
                algorithms=["RS256"],
                audience=AZURE_MYSQL_AUDIENCE,
                issuer=self.issuer,
                options={"require": ["exp", "nbf", "aud", "iss"]},
            )
        except jwt.InvalidTokenError as exc:
            return f"{type(exc).__name__}: {exc}"

        if not _identity_matches(mysql_user, identity, claims):
            return f"token identity does not match MySQL user {mysql_user!r}"
        return None


def _identity_matches(
    mysql_user: str, identity: Optional[Identity], claims: Mapping[str, Any]
) -> bool:
    presented = {str(claims[name]) for name in ("upn", "oid", "appid") if name in claims}
    if mysql_user in presented:
        return True
    if identity is None:
        return False
    expected: Iterable[Optional[str]] = (identity.object_id, identity.client_id, identity.upn)
    return any(value is not None and value in presented for value in expected)
