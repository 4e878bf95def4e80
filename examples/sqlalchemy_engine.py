"""Three ways to give a SQLAlchemy engine Microsoft Entra ID token logins.

1. ``securemysql.sqlalchemy.create_engine(url, ...)``: the shortest.
2. The URL plugin ``?plugin=securemysql``: plain ``sqlalchemy.create_engine``, so
   a URL kept in configuration (Alembic, environment variables) is all that changes.
3. ``creator=ConnectionFactory(...)``: for code that already builds engines with
   a creator; add ``install_disconnect_handler`` so the pool replaces broken
   connections.

Every new connection the pool opens (first use, overflow, recycle, after a
failover) gets a current token, and the URL never contains a password.

Settings come from the environment, as in pymysql_basic.py:

    AZURE_MYSQL_HOST, AZURE_MYSQL_USER, AZURE_MYSQL_PORT (default 3306),
    AZURE_MYSQL_DATABASE (optional), AZURE_MYSQL_SSL_CA (optional CA file)
"""

from __future__ import annotations

import os
from typing import Optional

import sqlalchemy
from sqlalchemy import URL, Engine, text

import securemysql
from securemysql.sqlalchemy import create_engine, install_disconnect_handler

HOST = os.environ["AZURE_MYSQL_HOST"]
USER = os.environ["AZURE_MYSQL_USER"]
PORT = int(os.environ.get("AZURE_MYSQL_PORT", "3306"))
DATABASE: Optional[str] = os.environ.get("AZURE_MYSQL_DATABASE")
SSL_CA: Optional[str] = os.environ.get("AZURE_MYSQL_SSL_CA")


def engine_from_url() -> Engine:
    """Build an engine with securemysql's create_engine: a URL without password, plus options."""
    url = URL.create("mysql+pymysql", username=USER, host=HOST, port=PORT, database=DATABASE)
    return create_engine(url, ssl_ca=SSL_CA, pool_size=5, max_overflow=5)


def engine_from_plugin_url() -> Engine:
    """Build an engine with plain sqlalchemy.create_engine and the plugin named in the URL.

    The URL also carries the plugin's options.

    As a string: mysql+pymysql://USER@HOST:3306/DB?plugin=securemysql&ssl_ca=/path/ca.pem
    """
    query = {"plugin": "securemysql"}
    if SSL_CA:
        query["ssl_ca"] = SSL_CA
    url = URL.create(
        "mysql+pymysql", username=USER, host=HOST, port=PORT, database=DATABASE, query=query
    )
    return sqlalchemy.create_engine(url, pool_size=5, max_overflow=5)


def engine_from_creator() -> Engine:
    """Build an engine with a ConnectionFactory as the pool's creator.

    The URL only names the dialect.
    """
    factory = securemysql.ConnectionFactory(HOST, USER, port=PORT, database=DATABASE, ssl_ca=SSL_CA)
    engine = sqlalchemy.create_engine(
        "mysql+pymysql://", creator=factory, pool_pre_ping=True, pool_recycle=1800
    )
    install_disconnect_handler(engine)
    return engine


def main() -> None:
    for name, build in (
        ("securemysql.sqlalchemy.create_engine", engine_from_url),
        ("URL plugin", engine_from_plugin_url),
        ("creator", engine_from_creator),
    ):
        engine = build()
        try:
            with engine.connect() as connection:
                user = connection.execute(text("SELECT CURRENT_USER()")).scalar_one()
                tls = connection.execute(text("SHOW SESSION STATUS LIKE 'Ssl_version'")).one()[1]
        finally:
            engine.dispose()
        print(f"{name}: connected as {user} over {tls}")


if __name__ == "__main__":
    main()
