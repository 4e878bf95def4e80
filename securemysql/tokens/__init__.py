"""Microsoft Entra ID access tokens for Azure Database for MySQL.

Azure Database for MySQL accepts an Entra ID access token as the MySQL password.
This package picks the scope for the server's cloud (:mod:`.scopes`) and checks a
token's JWT shape, audience and expiry before it is sent (:mod:`.claims`).
:class:`TokenProvider` (:mod:`.provider`, with its cache policy in :mod:`.cache`)
caches tokens and shares one ``azure-identity`` credential call (:mod:`.credential`)
among all concurrent callers. :mod:`.failures` turns a failed call into an error
that names the likely fix.

The public API is what this package exports; the submodules are its
implementation. All log records go to the ``securemysql.tokens`` logger.

Times are in seconds: ``expires_on`` and ``fetched_at`` are Unix epoch seconds
(UTC); margins, gaps and time-outs are durations in seconds.

Nothing in this package logs, formats or raises an access token: :class:`AccessToken`
hides it from ``repr`` and ``str``, and error messages carry only claims
(``aud``, ``exp``, ``oid``, ...) and the credential's own message passed through
:func:`securemysql.redaction.redact`. Importing the package does not import
``azure.identity``.
"""

from __future__ import annotations

from securemysql.tokens.claims import AccessToken, check_token, decode_claims
from securemysql.tokens.provider import TokenProvider
from securemysql.tokens.scopes import (
    CLOUD_SCOPES,
    SCOPE_CHINA,
    SCOPE_PUBLIC,
    SCOPE_US_GOVERNMENT,
    audience_for_scope,
    cloud_for_host,
    resolve_scope,
)

__all__ = [
    "CLOUD_SCOPES",
    "SCOPE_CHINA",
    "SCOPE_PUBLIC",
    "SCOPE_US_GOVERNMENT",
    "AccessToken",
    "TokenProvider",
    "audience_for_scope",
    "check_token",
    "cloud_for_host",
    "decode_claims",
    "resolve_scope",
]
