"""securemysql: passwordless, TLS-verified connections to Azure Database for MySQL.

Public names are imported lazily, so that ``import securemysql`` stays cheap and
neither ``azure-identity`` nor a database driver is imported before first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# Public name -> module that defines it.
_EXPORTS = {
    "connect": "securemysql.factory",
    "ConnectionFactory": "securemysql.factory",
    "TokenProvider": "securemysql.tokens",
    "AccessToken": "securemysql.tokens",
    "TLSConfig": "securemysql.tls",
    "RetryPolicy": "securemysql.retry",
    "is_transient": "securemysql.retry",
    "connection_tls_info": "securemysql.drivers",
}

__all__ = sorted([*_EXPORTS, "__version__"])

if TYPE_CHECKING:
    from securemysql.drivers import connection_tls_info as connection_tls_info
    from securemysql.factory import ConnectionFactory as ConnectionFactory
    from securemysql.factory import connect as connect
    from securemysql.retry import RetryPolicy as RetryPolicy
    from securemysql.retry import is_transient as is_transient
    from securemysql.tls import TLSConfig as TLSConfig
    from securemysql.tokens import AccessToken as AccessToken
    from securemysql.tokens import TokenProvider as TokenProvider


def __getattr__(name: str) -> Any:
    module_name = _EXPORTS.get(name)
    if module_name is None:
        raise AttributeError(f"module 'securemysql' has no attribute {name!r}")
    value = getattr(importlib.import_module(module_name), name)
    globals()[name] = value
    return value
