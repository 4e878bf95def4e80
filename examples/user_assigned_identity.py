"""Connect as a user-assigned managed identity, selected by its client ID.

A resource can carry several user-assigned managed identities, and the client
ID selects the one that requests the token. The MySQL user is the one created on the
server for that identity (its name as given to CREATE AADUSER on Azure).

Two equivalent ways are shown:

1. ``managed_identity_client_id=``: securemysql creates DefaultAzureCredential
   for that identity (which also works with the Azure CLI on a developer machine).
2. ``credential=ManagedIdentityCredential(client_id=...)``: a credential you
   build yourself, for full control; securemysql never closes it.

Settings come from the environment:

    AZURE_MYSQL_HOST       server host name
    AZURE_MYSQL_UAMI_USER  MySQL user created for the user-assigned identity
    AZURE_MYSQL_CLIENT_ID  client ID of the user-assigned managed identity
    AZURE_MYSQL_PORT, AZURE_MYSQL_DATABASE, AZURE_MYSQL_SSL_CA  as in pymysql_basic.py
"""

from __future__ import annotations

import os
from typing import Any

from azure.identity import ManagedIdentityCredential

import securemysql


def current_user(connection: Any) -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT CURRENT_USER()")
        (user,) = cursor.fetchone()
    return str(user)


def main() -> None:
    host = os.environ["AZURE_MYSQL_HOST"]
    user = os.environ["AZURE_MYSQL_UAMI_USER"]
    client_id = os.environ["AZURE_MYSQL_CLIENT_ID"]
    settings: dict[str, Any] = {
        "port": int(os.environ.get("AZURE_MYSQL_PORT", "3306")),
        "database": os.environ.get("AZURE_MYSQL_DATABASE"),
        "ssl_ca": os.environ.get("AZURE_MYSQL_SSL_CA"),
    }

    connection = securemysql.connect(host, user, managed_identity_client_id=client_id, **settings)
    try:
        print(f"managed_identity_client_id: connected as {current_user(connection)}")
    finally:
        connection.close()

    with ManagedIdentityCredential(client_id=client_id) as credential:
        connection = securemysql.connect(host, user, credential=credential, **settings)
        try:
            print(f"ManagedIdentityCredential: connected as {current_user(connection)}")
        finally:
            connection.close()


if __name__ == "__main__":
    main()
