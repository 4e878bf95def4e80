"""Azure clouds and the scope to request access tokens for in each.

Azure Database for MySQL accepts tokens for the scope of its cloud. The scope is
the resource (which is also the token's ``aud`` claim) followed by ``/.default``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Optional

from securemysql.errors import ConfigurationError

SCOPE_PUBLIC = "https://ossrdbms-aad.database.windows.net/.default"
SCOPE_CHINA = "https://ossrdbms-aad.database.chinacloudapi.cn/.default"
SCOPE_US_GOVERNMENT = "https://ossrdbms-aad.database.usgovcloudapi.net/.default"

#: Scope of Azure Database for MySQL per cloud name.
CLOUD_SCOPES: Mapping[str, str] = MappingProxyType(
    {
        "public": SCOPE_PUBLIC,
        "china": SCOPE_CHINA,
        "usgovernment": SCOPE_US_GOVERNMENT,
    }
)

# Accepted cloud names and aliases, compared after lower-casing and removing "-",
# "_" and spaces.
_CLOUD_ALIASES: Mapping[str, str] = MappingProxyType(
    {
        "public": "public",
        "azurecloud": "public",
        "azurepubliccloud": "public",
        "china": "china",
        "azurechinacloud": "china",
        "usgovernment": "usgovernment",
        "usgov": "usgovernment",
        "azureusgovernment": "usgovernment",
        "azureusgovernmentcloud": "usgovernment",
    }
)

# Host-name suffix of Azure Database for MySQL servers per cloud.
_HOST_SUFFIXES = (
    (".mysql.database.azure.com", "public"),
    (".mysql.database.chinacloudapi.cn", "china"),
    (".mysql.database.usgovcloudapi.net", "usgovernment"),
)

_DEFAULT_SUFFIX = "/.default"


def resolve_scope(
    *, scope: Optional[str] = None, cloud: Optional[str] = None, host: Optional[str] = None
) -> str:
    """Return the scope to request tokens for.

    An explicit ``scope`` wins, then ``cloud``, then the suffix of the server's
    ``host`` name. Anything else (an IP address, a custom DNS name, nothing)
    gets the public-cloud scope.

    Raises:
        ConfigurationError: ``cloud`` is not a known cloud name (checked even when
            ``scope`` is given), or ``scope`` is empty.
    """
    cloud_key = _cloud_key(cloud) if cloud is not None else None

    if scope is not None:
        if not isinstance(scope, str) or not scope.strip():
            raise ConfigurationError(f"scope must be a non-empty string, got {scope!r}")
        return scope.strip()

    if cloud_key is not None:
        return CLOUD_SCOPES[cloud_key]

    host_cloud = cloud_for_host(host) if host else None
    if host_cloud is not None:
        return CLOUD_SCOPES[host_cloud]

    return SCOPE_PUBLIC


def cloud_for_host(host: str) -> Optional[str]:
    """Return the cloud of an Azure Database for MySQL host name, a key of :data:`CLOUD_SCOPES`.

    Compares the name's suffix, ignoring case, surrounding spaces and a
    trailing dot. Returns None for any other host: an IP address, a custom DNS
    name (even a CNAME of the server) or an empty string.
    """
    normalized_host = host.strip().rstrip(".").lower()
    for suffix, host_cloud in _HOST_SUFFIXES:
        if normalized_host.endswith(suffix):
            return host_cloud
    return None


def _cloud_key(cloud: str) -> str:
    normalized = re.sub(r"[-_\s]", "", str(cloud)).lower()
    key = _CLOUD_ALIASES.get(normalized)
    if key is None:
        valid = ", ".join(CLOUD_SCOPES)
        raise ConfigurationError(
            f"unknown cloud {cloud!r}; valid values are {valid} "
            "(or AzureCloud, AzureChinaCloud, AzureUSGovernment)"
        )
    return key


def audience_for_scope(scope: str) -> str:
    """Return the ``aud`` claim of tokens for ``scope``: the scope without ``/.default``."""
    if scope.endswith(_DEFAULT_SUFFIX):
        return scope[: -len(_DEFAULT_SUFFIX)]
    return scope
