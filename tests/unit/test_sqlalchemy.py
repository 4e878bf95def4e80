"""securemysql.sqlalchemy without a server: URL checks, option mapping, pool defaults, errors.

Creating an engine opens no connection, so these tests build engines and inspect the
ConnectionFactory behind them. The disconnect handler is tested with fake DB-API
connections.
"""

from __future__ import annotations

import copy
import importlib.metadata
import logging
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from typing import Any, Optional

import certifi
import pymysql
import pytest
import sqlalchemy
import sqlalchemy.exc

import securemysql.sqlalchemy as secure_sa
from securemysql.errors import ConfigurationError, InsecureConfigurationError
from securemysql.factory import ConnectionFactory
from securemysql.retry import RetryPolicy
from securemysql.tokens import SCOPE_CHINA, SCOPE_PUBLIC, TokenProvider

CA_FILE = certifi.where()
BASE_URL = "mysql+pymysql://app-user@db.example.com/appdb"
FOUND_ROWS = pymysql.constants.CLIENT.FOUND_ROWS


def _factory(engine: sqlalchemy.Engine) -> ConnectionFactory:
    factory = secure_sa.connection_factory(engine)
    assert factory is not None
    return factory


def _plugin_url(query: str = "") -> str:
    return f"{BASE_URL}?plugin=securemysql" + (f"&{query}" if query else "")


class FakeCredential:
    """Never called: engines in these tests open no connection."""

    def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        raise AssertionError("no token is requested while an engine is only created")


# --- URL checks --------------------------------------------------------------------


@pytest.mark.parametrize(
    "create",
    [
        lambda url: sqlalchemy.create_engine(url + "?plugin=securemysql"),
        lambda url: secure_sa.create_engine(url),
    ],
    ids=["plugin", "helper"],
)
def test_url_password_rejected_without_echo(create: Any) -> None:
    with pytest.raises(ConfigurationError) as info:
        create("mysql+pymysql://app-user:Pa55-word-secret@db.example.com/appdb")

    message = str(info.value)
    assert "contains a password" in message
    assert "Pa55-word-secret" not in message
    assert "mysql+pymysql://app-user@db.example.com/appdb" in message


def test_empty_url_password_accepted() -> None:
    engine = secure_sa.create_engine("mysql+pymysql://app-user:@db.example.com/appdb")

    assert _factory(engine).user == "app-user"


@pytest.mark.parametrize("name", ["password", "passwd"])
def test_query_password_rejected(name: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        secure_sa.create_engine(f"{BASE_URL}?{name}=hunter2-secret")

    assert f"{name}=" in str(info.value)
    assert "hunter2-secret" not in str(info.value)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("mysql://app-user@db.example.com/appdb", "does not name a driver"),
        ("mysql+mysqldb://app-user@db.example.com/appdb", "not supported"),
        ("postgresql+psycopg2://app-user@db.example.com/appdb", "not supported"),
        ("mysql+aiomysql://app-user@db.example.com/appdb", "asyncio driver"),
        ("mysql+asyncmy://app-user@db.example.com/appdb", "asyncio driver"),
    ],
)
def test_unsupported_scheme_rejected(url: str, expected: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        secure_sa.create_engine(url)

    assert expected in str(info.value)
    assert "mysql+pymysql://" in str(info.value)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("mysql+pymysql://db.example.com/appdb", "no user name"),
        ("mysql+pymysql://app-user@/appdb", "no host"),
    ],
)
def test_url_without_user_or_host_rejected(url: str, expected: str) -> None:
    with pytest.raises(ConfigurationError, match=expected):
        secure_sa.create_engine(url)


# --- URL options ---------------------------------------------------------------------


def test_plugin_consumes_url_options() -> None:
    engine = sqlalchemy.create_engine(
        _plugin_url(
            f"ssl_ca={CA_FILE}&cloud=china&server_hostname=db.internal.example"
            "&token_timeout=12.5&charset=utf8mb4"
        )
    )

    assert dict(engine.url.query) == {"charset": "utf8mb4"}
    factory = _factory(engine)
    assert factory.tls.ca_file == CA_FILE
    assert factory.tls.server_hostname == "db.internal.example"
    assert factory.tokens.scope == SCOPE_CHINA
    assert dict(factory.driver_kwargs) == {"charset": "utf8mb4", "client_flag": FOUND_ROWS}


def test_plugin_maps_url_parts() -> None:
    engine = sqlalchemy.create_engine(
        "mysql+pymysql://app-user@db.example.com:3307/appdb?plugin=securemysql"
    )

    factory = _factory(engine)
    assert factory.host == "db.example.com"
    assert factory.port == 3307
    assert factory.user == "app-user"
    assert factory.database == "appdb"
    assert factory.driver.name == "pymysql"
    assert factory.tokens.scope == SCOPE_PUBLIC


def test_mariadb_scheme_accepted() -> None:
    engine = secure_sa.create_engine("mariadb+pymysql://app-user@db.example.com/appdb")

    assert _factory(engine).driver.name == "pymysql"


def test_retry_options_build_policy() -> None:
    engine = sqlalchemy.create_engine(_plugin_url("retry_max_attempts=3&retry_deadline=12.5"))

    retry = _factory(engine).retry
    assert retry.max_attempts == 3
    assert retry.deadline == 12.5
    assert retry.enabled


def test_client_id_aliases_must_agree() -> None:
    with pytest.raises(ConfigurationError, match="managed_identity_client_id"):
        sqlalchemy.create_engine(
            _plugin_url("azure_client_id=11111111&managed_identity_client_id=22222222")
        )


def test_client_id_aliases_same_value_accepted() -> None:
    engine = sqlalchemy.create_engine(
        _plugin_url("azure_client_id=11111111&managed_identity_client_id=11111111")
    )

    assert secure_sa.connection_factory(engine) is not None


@pytest.mark.parametrize(
    ("query", "option"),
    [
        ("token_timeout=abc", "token_timeout"),
        ("token_timeout=-1", "token_timeout"),
        ("token_timeout=inf", "token_timeout"),
        ("retry_deadline=0", "retry_deadline"),
        ("retry_max_attempts=0", "retry_max_attempts"),
        ("retry_max_attempts=two", "retry_max_attempts"),
        ("use_system_trust_store=maybe", "use_system_trust_store"),
        ("scope=%20", "scope"),
        (f"ssl_ca={CA_FILE}&ssl_ca={CA_FILE}", "ssl_ca"),
    ],
)
def test_invalid_url_option_rejected(query: str, option: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        sqlalchemy.create_engine(_plugin_url(query))

    assert option in str(info.value)


def test_url_and_keyword_option_conflict() -> None:
    with pytest.raises(ConfigurationError, match="ssl_ca"):
        secure_sa.create_engine(f"{BASE_URL}?ssl_ca={CA_FILE}", ssl_ca="/elsewhere/ca.pem")


def test_url_and_keyword_same_option_accepted() -> None:
    engine = secure_sa.create_engine(f"{BASE_URL}?ssl_ca={CA_FILE}", ssl_ca=CA_FILE)

    assert _factory(engine).tls.ca_file == CA_FILE


def test_weakening_ssl_query_rejected() -> None:
    # The dialect turns ssl_key into an ssl={...} driver argument, which would replace
    # the verified TLS context.
    with pytest.raises(InsecureConfigurationError, match="ssl="):
        sqlalchemy.create_engine(_plugin_url("ssl_key=/tmp/client.key"))


# --- Keyword arguments and connect_args ---------------------------------------------


def test_helper_passes_factory_keywords() -> None:
    provider = TokenProvider(FakeCredential(), scope=SCOPE_PUBLIC)
    retry = RetryPolicy(max_attempts=2)

    engine = secure_sa.create_engine(BASE_URL, token_provider=provider, retry=retry)

    factory = _factory(engine)
    assert factory.tokens is provider
    assert factory.retry is retry


def test_plugin_takes_securemysql_options() -> None:
    engine = sqlalchemy.create_engine(
        _plugin_url(), securemysql_options={"credential": FakeCredential(), "ssl_ca": CA_FILE}
    )

    factory = _factory(engine)
    assert factory.tokens.credential_name == "FakeCredential"
    assert factory.tls.ca_file == CA_FILE


def test_unknown_securemysql_option_rejected() -> None:
    with pytest.raises(ConfigurationError, match="credentials"):
        sqlalchemy.create_engine(_plugin_url(), securemysql_options={"credentials": None})


def test_connect_args_mapped_onto_factory() -> None:
    connect_args = {
        "ssl_ca": CA_FILE,
        "server_hostname": "db.internal.example",
        "connect_timeout": 7,
        "program_name": "billing",
        "charset": "utf8mb4",
        "init_command": "SET @probe = 1",
    }

    engine = secure_sa.create_engine(BASE_URL, connect_args=connect_args)

    factory = _factory(engine)
    assert factory.tls.ca_file == CA_FILE
    assert factory.tls.server_hostname == "db.internal.example"
    assert dict(factory.driver_kwargs) == {
        "charset": "utf8mb4",
        "init_command": "SET @probe = 1",
        "client_flag": FOUND_ROWS,
    }


def test_query_client_flag_keeps_found_rows() -> None:
    multi = pymysql.constants.CLIENT.MULTI_STATEMENTS

    engine = secure_sa.create_engine(f"{BASE_URL}?client_flag={multi}")

    assert _factory(engine).driver_kwargs["client_flag"] == multi | FOUND_ROWS


@pytest.mark.parametrize("name", ["password", "passwd"])
def test_connect_args_password_rejected(name: str) -> None:
    with pytest.raises(ConfigurationError, match=f"connect_args sets {name}="):
        secure_sa.create_engine(BASE_URL, connect_args={name: "hunter2"})


def test_connect_args_left_unchanged_by_engine_creation() -> None:
    connect_args: dict[str, Any] = {
        "ssl_ca": CA_FILE,
        "charset": "utf8mb4",
        "conv": {246: float, 3: int},
        "init_command": "SET @probe = 1",
    }
    snapshot = copy.deepcopy(connect_args)

    secure_sa.create_engine(BASE_URL, connect_args=connect_args)
    sqlalchemy.create_engine(_plugin_url(), connect_args=connect_args)

    assert connect_args == snapshot


def test_factory_keeps_own_nested_arguments() -> None:
    attributes = {"app": "billing"}

    engine = secure_sa.create_engine(BASE_URL, connect_args={"conv": attributes})
    factory_attributes = _factory(engine).driver_kwargs["conv"]

    assert factory_attributes == attributes
    assert factory_attributes is not attributes


def test_later_change_to_connect_args_ignored() -> None:
    connect_args = {"charset": "utf8mb4"}

    engine = secure_sa.create_engine(BASE_URL, connect_args=connect_args)
    connect_args["charset"] = "latin1"

    assert _factory(engine).driver_kwargs["charset"] == "utf8mb4"


@pytest.mark.parametrize("name", ["creator", "pool"])
def test_plugin_rejects_creator_and_pool(name: str) -> None:
    creator: Any = lambda: None  # noqa: E731
    value = creator if name == "creator" else sqlalchemy.pool.NullPool(creator)

    with pytest.raises(ConfigurationError, match=f"{name}="):
        sqlalchemy.create_engine(_plugin_url(), **{name: value})


def test_helper_installs_plugin_once() -> None:
    engine = secure_sa.create_engine(_plugin_url())

    assert len(list(engine.dialect.dispatch.do_connect)) == 1


# --- Pool defaults -------------------------------------------------------------------


@pytest.mark.parametrize(
    "create",
    [lambda: sqlalchemy.create_engine(_plugin_url()), lambda: secure_sa.create_engine(BASE_URL)],
    ids=["plugin", "helper"],
)
def test_pool_defaults(create: Any) -> None:
    engine = create()

    # The pool keeps both settings only in private attributes.
    assert engine.pool._pre_ping is True
    assert engine.pool._recycle == secure_sa.DEFAULT_POOL_RECYCLE


def test_engine_from_config_uses_plugin() -> None:
    configuration = {
        "sqlalchemy.url": _plugin_url(f"ssl_ca={CA_FILE}"),
        "sqlalchemy.pool_recycle": "600",
    }

    engine = sqlalchemy.engine_from_config(configuration, prefix="sqlalchemy.")

    assert _factory(engine).tls.ca_file == CA_FILE
    assert engine.pool._pre_ping is True
    assert engine.pool._recycle == 600


def test_pool_defaults_overridable() -> None:
    engine = secure_sa.create_engine(BASE_URL, pool_pre_ping=False, pool_recycle=600)

    assert engine.pool._pre_ping is False
    assert engine.pool._recycle == 600


def test_default_recycle_below_mysql_wait_timeout() -> None:
    mysql_default_wait_timeout = 28800

    assert 0 < secure_sa.DEFAULT_POOL_RECYCLE < mysql_default_wait_timeout


# --- Disconnect handling, with fake DB-API connections -------------------------------


class FakeCursor:
    def __init__(self, error: Optional[Exception]) -> None:
        self._error = error
        self.description = None
        self.rowcount = -1

    def execute(self, statement: str, parameters: Any = None) -> None:
        if self._error is not None:
            raise self._error

    def close(self) -> None:
        pass


class FakeConnection:
    """A DB-API connection whose ping and execute raise the given error."""

    def __init__(self, error: Optional[Exception]) -> None:
        self.error = error
        self.closed = False

    def ping(self, reconnect: bool = False) -> None:
        if self.error is not None:
            raise self.error

    def cursor(self) -> FakeCursor:
        return FakeCursor(self.error)

    def rollback(self) -> None:
        pass

    def commit(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True


class FakeConnections:
    """Creator that hands out fake connections; the first one fails with ``error``."""

    def __init__(self, error: Exception) -> None:
        self.error = error
        self.created: list[FakeConnection] = []

    def __call__(self) -> FakeConnection:
        connection = FakeConnection(self.error if not self.created else None)
        self.created.append(connection)
        return connection


def _fake_engine(creator: FakeConnections, *, handler: bool) -> sqlalchemy.Engine:
    # _initialize=False skips the dialect's first-connect queries, which a fake cannot run.
    engine = sqlalchemy.create_engine(
        "mysql+pymysql://", creator=creator, pool_pre_ping=True, _initialize=False
    )
    if handler:
        secure_sa.install_disconnect_handler(engine)
    return engine


def _server_shutdown_error() -> pymysql.err.OperationalError:
    # 1053 (ER_SERVER_SHUTDOWN) is transient for securemysql but not a disconnect
    # for SQLAlchemy's MySQL dialects.
    return pymysql.err.OperationalError(1053, "Server shutdown in progress")


def _pool_one_connection(engine: sqlalchemy.Engine) -> None:
    with engine.connect():
        pass


def test_pre_ping_replaces_transient_failure() -> None:
    creator = FakeConnections(_server_shutdown_error())
    engine = _fake_engine(creator, handler=True)
    _pool_one_connection(engine)

    with engine.connect() as connection:
        dbapi_connection: object = connection.connection.dbapi_connection
        assert dbapi_connection is creator.created[1]

    assert len(creator.created) == 2
    assert creator.created[0].closed


def test_pre_ping_raises_without_handler() -> None:
    creator = FakeConnections(_server_shutdown_error())
    engine = _fake_engine(creator, handler=False)
    _pool_one_connection(engine)

    with pytest.raises(sqlalchemy.exc.OperationalError, match="1053"):
        engine.connect()


def test_pre_ping_raises_permanent_error() -> None:
    creator = FakeConnections(pymysql.err.OperationalError(1044, "Access denied for user"))
    engine = _fake_engine(creator, handler=True)
    _pool_one_connection(engine)

    with pytest.raises(sqlalchemy.exc.OperationalError, match="1044"):
        engine.connect()
    assert len(creator.created) == 1


def test_statement_error_invalidates_connection() -> None:
    creator = FakeConnections(_server_shutdown_error())
    engine = _fake_engine(creator, handler=True)

    with engine.connect() as connection:
        with pytest.raises(sqlalchemy.exc.OperationalError) as info:
            connection.exec_driver_sql("SELECT 1")
        assert info.value.connection_invalidated
        assert connection.invalidated


def test_statement_error_without_handler_keeps_connection() -> None:
    creator = FakeConnections(_server_shutdown_error())
    engine = _fake_engine(creator, handler=False)

    with engine.connect() as connection:
        with pytest.raises(sqlalchemy.exc.OperationalError) as info:
            connection.exec_driver_sql("SELECT 1")
        assert not info.value.connection_invalidated


def test_handler_installed_once(caplog: pytest.LogCaptureFixture) -> None:
    creator = FakeConnections(_server_shutdown_error())
    engine = _fake_engine(creator, handler=True)
    secure_sa.install_disconnect_handler(engine)
    _pool_one_connection(engine)

    with caplog.at_level(logging.INFO, logger="securemysql.sqlalchemy"):
        engine.connect().close()

    records = [record for record in caplog.records if record.name == "securemysql.sqlalchemy"]
    assert len(records) == 1
    assert "MySQL error 1053" in records[0].getMessage()
    assert "pre-ping" in records[0].getMessage()


# --- Module and packaging -----------------------------------------------------------


def _run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_import_securemysql_skips_sqlalchemy() -> None:
    result = _run_python(
        """
        import sys
        import securemysql
        securemysql.ConnectionFactory
        print("sqlalchemy" in sys.modules)
        """
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_missing_sqlalchemy_gives_install_hint() -> None:
    result = _run_python(
        """
        import sys
        sys.modules["sqlalchemy"] = None
        try:
            import securemysql.sqlalchemy
        except ImportError as exc:
            print(exc)
        """
    )

    assert result.returncode == 0, result.stderr
    assert "pip install 'securemysql[sqlalchemy]'" in result.stdout


def test_old_sqlalchemy_gives_install_hint() -> None:
    result = _run_python(
        """
        import sqlalchemy
        sqlalchemy.__version__ = "1.4.54"
        try:
            import securemysql.sqlalchemy
        except ImportError as exc:
            print(exc)
        """
    )

    assert result.returncode == 0, result.stderr
    assert "found 1.4.54" in result.stdout
    assert "pip install 'securemysql[sqlalchemy]'" in result.stdout


def test_entry_point_registered() -> None:
    entry_points = importlib.metadata.entry_points(group="sqlalchemy.plugins")
    matches = [entry for entry in entry_points if entry.name == secure_sa.PLUGIN_NAME]

    assert len(matches) == 1
    assert matches[0].load() is secure_sa.SecureMySQLPlugin


def test_create_async_engine_not_supported() -> None:
    with pytest.raises(NotImplementedError, match="aiomysql"):
        secure_sa.create_async_engine("mysql+aiomysql://app-user@db.example.com/appdb")


@pytest.fixture(autouse=True)
def _no_identity_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Keep azure-identity off the network should a test ever request a token."""
    monkeypatch.setenv("IDENTITY_ENDPOINT", "http://127.0.0.1:9/msi/token")
    monkeypatch.setenv("IDENTITY_HEADER", "unit-test")
    yield
