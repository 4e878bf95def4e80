"""Connect with PyMySQL and a Microsoft Entra ID token, then run one query.

Settings come from the environment, so the same script runs against Azure and
against the local sandbox (`securemysql sandbox up` prints the values):

    AZURE_MYSQL_HOST      server host name, e.g. myserver.mysql.database.azure.com
    AZURE_MYSQL_USER      MySQL user created for the Entra identity
    AZURE_MYSQL_PORT      default 3306
    AZURE_MYSQL_DATABASE  optional
    AZURE_MYSQL_SSL_CA    optional CA file; default: certifi plus the Azure roots

The token comes from DefaultAzureCredential (managed identity, Azure CLI, ...).
"""

from __future__ import annotations

import os

import securemysql


def main() -> None:
    connection = securemysql.connect(
        os.environ["AZURE_MYSQL_HOST"],
        os.environ["AZURE_MYSQL_USER"],
        port=int(os.environ.get("AZURE_MYSQL_PORT", "3306")),
        database=os.environ.get("AZURE_MYSQL_DATABASE"),
        ssl_ca=os.environ.get("AZURE_MYSQL_SSL_CA"),
    )
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT CURRENT_USER(), @@version")
            user, version = cursor.fetchone()
        tls = securemysql.connection_tls_info(connection)
        print(f"Connected as {user} to {version} over {tls.version if tls else 'TLS'}")
    finally:
        connection.close()


if __name__ == "__main__":
    main()
