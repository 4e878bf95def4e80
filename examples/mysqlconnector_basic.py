"""Connect with mysql-connector-python and a Microsoft Entra ID token, then run one query.

Settings come from the environment, as in pymysql_basic.py:

    AZURE_MYSQL_HOST      server host name, e.g. myserver.mysql.database.azure.com
    AZURE_MYSQL_USER      MySQL user created for the Entra identity
    AZURE_MYSQL_PORT      default 3306
    AZURE_MYSQL_DATABASE  optional
    AZURE_MYSQL_SSL_CA    optional CA file; default: certifi plus the Azure roots
    AZURE_MYSQL_USE_PURE  1: pure-Python mode, 0: C extension, unset: the C
                          extension when it can be used, else pure Python
"""

from __future__ import annotations

# mysql-connector-python 26.x wheels bring their own OpenSSL for the C
# extension, which then imports only if it is loaded before Python's ssl
# module. Import it first; without it, securemysql uses the pure-Python mode.
import contextlib

with contextlib.suppress(ImportError):
    import _mysql_connector  # noqa: F401

import os
from typing import Optional

from mysql.connector.connection import MySQLConnection

import securemysql


def use_pure_from_environment() -> Optional[bool]:
    value = os.environ.get("AZURE_MYSQL_USE_PURE", "").strip().lower()
    if not value:
        return None
    return value in ("1", "true", "yes", "on")


def main() -> None:
    connection = securemysql.connect(
        os.environ["AZURE_MYSQL_HOST"],
        os.environ["AZURE_MYSQL_USER"],
        port=int(os.environ.get("AZURE_MYSQL_PORT", "3306")),
        database=os.environ.get("AZURE_MYSQL_DATABASE"),
        ssl_ca=os.environ.get("AZURE_MYSQL_SSL_CA"),
        driver="mysql.connector",
        use_pure=use_pure_from_environment(),
    )
    try:
        cursor = connection.cursor()
        cursor.execute("SELECT CURRENT_USER(), @@version")
        user, version = cursor.fetchone()
        cursor.close()
        tls = securemysql.connection_tls_info(connection)
        pure = isinstance(connection, MySQLConnection)
        print(f"Connected as {user} to {version} over {tls.version if tls else 'TLS'}")
        print(f"mysql-connector mode: {'pure Python' if pure else 'C extension'}")
    finally:
        connection.close()


if __name__ == "__main__":
    main()
