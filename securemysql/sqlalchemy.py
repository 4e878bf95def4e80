"""SQLAlchemy integration: access-token logins, verified TLS and retries for engines.

Every way in ends at one :class:`~securemysql.factory.ConnectionFactory`, which
opens each new physical connection (pool fill, overflow, recycle, invalidation,
pre-ping reconnect) with a current access token:

- :func:`create_engine`: ``create_engine("mysql+pymysql://user@host/db", **options)``
  takes a normal SQLAlchemy MySQL URL without a password.
- The URL plugin: ``sqlalchemy.create_engine("mysql+pymysql://user@host/db?plugin=securemysql")``
  loads :class:`SecureMySQLPlugin` through the ``sqlalchemy.plugins`` entry point, so
  Alembic configurations and URLs read from environment variables need no code change.
- The creator hook: ``sqlalchemy.create_engine("mysql+pymysql://", creator=factory)``
  with a ``ConnectionFactory``. Call :func:`install_disconnect_handler` on that engine
  too. SQLAlchemy does not add ``CLIENT.FOUND_ROWS`` to connections from a creator, so
  pass ``client_flag=pymysql.constants.CLIENT.FOUND_ROWS`` (PyMySQL) to the factory
  where code relies on ``rowcount`` counting matched rather than changed rows.

Supported URL schemes: ``mysql+pymysql``, ``mysql+mysqlconnector`` and their
``mariadb+`` forms. URL query options that configure securemysql are listed in
``URL_OPTIONS``; they are removed from the URL before the dialect and the driver see it.

Pool defaults of :func:`create_engine` and the plugin, overridable by passing the
argument: ``pool_pre_ping=True``, so that a connection the server or the network
closed is replaced at checkout, and ``pool_recycle=1800`` seconds. MySQL closes a
connection idle for ``wait_timeout`` seconds, 28800 by default (MySQL 8.0 Reference
Manual, "Server System Variables"). Azure Database for MySQL Flexible Server lets
administrators change it, and its server-parameters page states no other default.
Recycling after 30 minutes stays below any ``wait_timeout`` of 30 minutes or more,
and pre-ping catches connections closed sooner. The recycle time is deliberately not
tied to the token lifetime: the server checks the token only at login, so an open
session outlives its token.

Importing this module requires SQLAlchemy 2.0 or newer (``pip install
'securemysql[sqlalchemy]'``); ``import securemysql`` alone never imports SQLAlchemy.
"""

from __future__ import annotations

import logging
import ssl
import weakref
from collections.abc import Mapping
from typing import Any, Callable, NoReturn, Optional, Union

from securemysql.errors import ConfigurationError
from securemysql.factory import DEFAULT_PORT, ConnectionFactory
from securemysql.redaction import redact
from securemysql.retry import RetryPolicy, error_number, is_transient
from securemysql.tokens import TokenProvider

_INSTALL_HINT = "Install it with: pip install 'securemysql[sqlalchemy]'"

try:
    import sqlalchemy
    from sqlalchemy import event
    from sqlalchemy.dialects import plugins as _plugin_registry
    from sqlalchemy.engine import URL, CreateEnginePlugin, Engine, make_url
    from sqlalchemy.engine.interfaces import Dialect, ExceptionContext
    from sqlalchemy.pool import ConnectionPoolEntry, Pool
except ImportError as exc:
    raise ImportError(
        f"securemysql.sqlalchemy needs SQLAlchemy 2.0 or newer, which cannot be imported. "
        f"{_INSTALL_HINT}"
    ) from exc

if int(sqlalchemy.__version__.split(".")[0]) < 2:
    raise ImportError(
        f"securemysql.sqlalchemy needs SQLAlchemy 2.0 or newer, found {sqlalchemy.__version__}. "
        f"{_INSTALL_HINT}"
    )

__all__ = [
    "DEFAULT_POOL_RECYCLE",
    "PLUGIN_NAME",
    "URL_OPTIONS",
    "SecureMySQLPlugin",
    "connection_factory",
    "create_async_engine",
    "create_engine",
    "install_disconnect_handler",
]

logger = logging.getLogger("securemysql.sqlalchemy")

PLUGIN_NAME = "securemysql"

DEFAULT_POOL_RECYCLE = 1800
"""Seconds after which the pool replaces a connection; below MySQL's default wait_timeout."""

# SQLAlchemy driver name -> securemysql driver= value.
_DRIVERS: Mapping[str, str] = {"pymysql": "pymysql", "mysqlconnector": "mysql.connector"}
_BACKENDS = ("mysql", "mariadb")
_ASYNC_DRIVERS = ("aiomysql", "asyncmy")

# ConnectionFactory keywords that create_engine() and ``securemysql_options`` accept.
_FACTORY_OPTIONS = frozenset(
    {
        "credential",
        "token_provider",
        "scope",
        "cloud",
        "managed_identity_client_id",
        "token_timeout",
        "ssl_ca",
        "ssl_capath",
        "ssl_context",
        "use_system_trust_store",
        "server_hostname",
        "retry",
    }
)

# Keyword argument of sqlalchemy.create_engine() that the plugin consumes: a mapping
# of _FACTORY_OPTIONS, for values a URL cannot carry (credential objects, contexts).
_OPTIONS_KEYWORD = "securemysql_options"

_PASSWORD_ARGUMENTS = ("password", "passwd", "password1", "password2", "password3")


def _parse_text(name: str, value: str) -> str:
    if not value.strip():
        raise ConfigurationError(f"URL query option {name} is empty; give a value or remove it.")
    return value.strip()


def _parse_seconds(name: str, value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = float("nan")
    if not seconds > 0 or seconds == float("inf"):
        raise ConfigurationError(
            f"URL query option {name} must be a positive number of seconds, got {value!r}."
        )
    return seconds


def _parse_count(name: str, value: str) -> int:
    if not value.strip().isdigit() or int(value) < 1:
        raise ConfigurationError(
            f"URL query option {name} must be a whole number of at least 1, got {value!r}."
        )
    return int(value)


def _parse_bool(name: str, value: str) -> bool:
    normalized = value.strip().lower()
    if normalized in ("1", "true", "yes", "on"):
        return True
    if normalized in ("0", "false", "no", "off"):
        return False
    raise ConfigurationError(
        f"URL query option {name} must be true or false (also 1/0, yes/no, on/off), got {value!r}."
    )


URL_OPTIONS: Mapping[str, tuple[str, Callable[[str, str], Any]]] = {
    "azure_client_id": ("managed_identity_client_id", _parse_text),
    "managed_identity_client_id": ("managed_identity_client_id", _parse_text),
    "scope": ("scope", _parse_text),
    "cloud": ("cloud", _parse_text),
    "ssl_ca": ("ssl_ca", _parse_text),
    "ssl_capath": ("ssl_capath", _parse_text),
    "use_system_trust_store": ("use_system_trust_store", _parse_bool),
    "server_hostname": ("server_hostname", _parse_text),
    "token_timeout": ("token_timeout", _parse_seconds),
    "retry_max_attempts": ("retry_max_attempts", _parse_count),
    "retry_deadline": ("retry_deadline", _parse_seconds),
}
"""URL query options consumed by securemysql: query name -> (setting, parser).

``azure_client_id`` and ``managed_identity_client_id`` are the client ID of a
user-assigned managed identity. ``token_timeout`` and ``retry_deadline`` are
seconds. ``retry_max_attempts`` and ``retry_deadline`` build the RetryPolicy.
The other names are the ``ConnectionFactory`` arguments of the same name.
"""


# --- URL checks -----------------------------------------------------------------


def _safe_url(url: URL) -> str:
    """Render ``url`` without password and query, for messages."""
    bare = URL.create(url.drivername, url.username, None, url.host, url.port, url.database)
    return bare.render_as_string(hide_password=True)


def _driver_for_url(url: URL) -> str:
    """Return the securemysql driver name for the URL's ``backend+driver`` scheme."""
    backend, _, driver = url.drivername.partition("+")
    if backend in _BACKENDS and driver in _DRIVERS:
        return _DRIVERS[driver]

    supported = ", ".join(f"mysql+{name}://" for name in _DRIVERS)
    if backend in _BACKENDS and driver in _ASYNC_DRIVERS:
        raise ConfigurationError(
            f"The URL scheme {url.drivername}:// is an asyncio driver, which securemysql does "
            f"not support yet (see create_async_engine). Use {supported} with a regular engine."
        )
    if backend in _BACKENDS and not driver:
        raise ConfigurationError(
            f"The URL scheme {url.drivername}:// does not name a driver. Name one: {supported}."
        )
    raise ConfigurationError(
        f"The URL scheme {url.drivername}:// is not supported by securemysql; use {supported} "
        "(or the mariadb+ forms)."
    )


def _check_url(url: URL) -> None:
    """Reject a URL with a password, or without user or host. Messages never show a password."""
    if url.password:
        raise ConfigurationError(
            f"The database URL {_safe_url(url)} contains a password. securemysql sends a "
            "Microsoft Entra ID access token as the password; remove the password from the URL."
        )
    for name in _PASSWORD_ARGUMENTS:
        if name in url.query:
            raise ConfigurationError(
                f"The database URL {_safe_url(url)} sets {name}= in its query. securemysql "
                f"sends a Microsoft Entra ID access token as the password; remove {name}=."
            )
    if not url.username:
        raise ConfigurationError(
            f"The database URL {_safe_url(url)} has no user name. Give the MySQL user created "
            "for the Entra identity: mysql+pymysql://USER@host/database."
        )
    if not url.host:
        raise ConfigurationError(
            f"The database URL {_safe_url(url)} has no host. Give the server's host name: "
            "mysql+pymysql://user@HOST/database."
        )


def _url_options(url: URL) -> dict[str, Any]:
    """Parse the securemysql options in the URL query into ConnectionFactory keywords."""
    parsed: dict[str, Any] = {}
    for query_name, (setting, parse) in URL_OPTIONS.items():
        raw = url.query.get(query_name)
        if raw is None:
            continue
        if not isinstance(raw, str):
            raise ConfigurationError(
                f"URL query option {query_name} is given {len(raw)} times; give it once."
            )
        _store_option(parsed, setting, parse(query_name, raw), source=f"URL option {query_name}")

    max_attempts = parsed.pop("retry_max_attempts", None)
    deadline = parsed.pop("retry_deadline", None)
    if max_attempts is not None or deadline is not None:
        defaults = RetryPolicy()
        parsed["retry"] = RetryPolicy(
            max_attempts=max_attempts if max_attempts is not None else defaults.max_attempts,
            deadline=deadline if deadline is not None else defaults.deadline,
        )
    return parsed


def _store_option(options: dict[str, Any], name: str, value: Any, *, source: str) -> None:
    """Set ``options[name]``, rejecting a second, different value for the same setting."""
    if name in options and options[name] != value:
        raise ConfigurationError(
            f"securemysql setting {name} is given twice with different values ({source} "
            "conflicts with an earlier one). Give it once."
        )
    options[name] = value


def _checked_factory_options(options: Mapping[str, Any], source: str) -> dict[str, Any]:
    unknown = sorted(set(options) - _FACTORY_OPTIONS)
    if unknown:
        raise ConfigurationError(
            f"Unknown securemysql option(s) in {source}: {', '.join(unknown)}. "
            f"Valid options: {', '.join(sorted(_FACTORY_OPTIONS))}."
        )
    return dict(options)


def _reject_password_arguments(arguments: Mapping[str, Any], source: str) -> None:
    for name in _PASSWORD_ARGUMENTS:
        if name in arguments:
            raise ConfigurationError(
                f"{source} sets {name}=. securemysql sends a Microsoft Entra ID access token "
                f"as the password; remove {name}=."
            )


# --- Building the factory from the dialect's connection arguments -----------------


def _pop_single(arguments: dict[str, Any], names: tuple[str, ...]) -> Any:
    """Remove the first of ``names`` present; reject differing values under two names."""
    found = [(name, arguments.pop(name)) for name in names if name in arguments]
    if not found:
        return None
    first_name, first_value = found[0]
    for other_name, other_value in found[1:]:
        if other_value != first_value:
            raise ConfigurationError(
                f"Connection arguments {first_name}= and {other_name}= conflict; give only one."
            )
    return first_value


def _copy_containers(value: Any) -> Any:
    """Copy plain dicts, lists, tuples and sets recursively; share every other object.

    Drivers may change a container they are given (mysql-connector-python 26.10
    adds its default attributes to the ``conn_attrs`` dict it receives), so the
    factory keeps containers of its own and the caller's stay unchanged.
    """
    if type(value) is dict:
        return {key: _copy_containers(item) for key, item in value.items()}
    if type(value) in (list, tuple, set, frozenset):
        return type(value)(_copy_containers(item) for item in value)
    return value


def _build_factory(
    dialect: Dialect,
    url: URL,
    connect_args: Mapping[str, Any],
    driver: str,
    options: Mapping[str, Any],
) -> ConnectionFactory:
    """Build the factory from what SQLAlchemy itself would pass to the driver.

    The dialect turns the URL into driver arguments (adding, for example,
    ``CLIENT.FOUND_ROWS``), and ``connect_args`` is merged on top, as
    ``sqlalchemy.create_engine`` does. Host, port, user, database, time-out and
    program name become factory settings. Keys named like a factory option (such as
    ``ssl_ca``) set that option, and the rest are driver arguments.
    """
    _cargs, dialect_arguments = dialect.create_connect_args(url)
    arguments: dict[str, Any] = _copy_containers({**dialect_arguments, **connect_args})
    factory_options = dict(options)
    for name in sorted(_FACTORY_OPTIONS & set(arguments)):
        _store_option(factory_options, name, arguments.pop(name), source=f"connect_args {name}")
    for name in _PASSWORD_ARGUMENTS:
        arguments.pop(name, None)

    host = _pop_single(arguments, ("host",))
    user = _pop_single(arguments, ("user", "username"))
    database = _pop_single(arguments, ("database", "db"))
    port = _pop_single(arguments, ("port",))
    connect_timeout = _pop_single(arguments, ("connect_timeout", "connection_timeout"))
    program_name = _pop_single(arguments, ("program_name",))
    if connect_timeout is not None:
        factory_options["connect_timeout"] = float(connect_timeout)
    if driver == "mysql.connector" and "use_pure" in arguments:
        factory_options["use_pure"] = arguments.pop("use_pure")

    return ConnectionFactory(
        host,
        user,
        database=database,
        port=int(port) if port is not None else DEFAULT_PORT,
        driver=driver,
        program_name=program_name,
        **factory_options,
        **arguments,
    )


# --- Engine wiring -----------------------------------------------------------------

_engine_factories: weakref.WeakKeyDictionary[Engine, ConnectionFactory] = (
    weakref.WeakKeyDictionary()
)


def _install(engine: Engine, factory: ConnectionFactory) -> None:
    """Route every physical connect of ``engine`` through ``factory``."""

    def connect_with_token(
        dialect: Dialect,
        connection_record: Optional[ConnectionPoolEntry],
        cargs: list[Any],
        cparams: dict[str, Any],
    ) -> Any:
        # cargs and cparams are SQLAlchemy's per-connect copies and are deliberately not
        # read: the factory was built from the same arguments, and a password another
        # listener may have put there is never sent.
        return factory()

    event.listen(engine, "do_connect", connect_with_token)
    install_disconnect_handler(engine)
    _engine_factories[engine] = factory


def connection_factory(engine: Engine) -> Optional[ConnectionFactory]:
    """Return the factory that opens ``engine``'s connections, or None if securemysql did not."""
    return _engine_factories.get(engine)


def _mark_transient_disconnect(context: ExceptionContext) -> None:
    """Treat errors that ``securemysql.is_transient`` accepts as disconnects.

    SQLAlchemy then invalidates the connection (and, outside pre-ping, the pool's
    older connections), so the pool opens a new one instead of handing out a
    broken one again. Errors the dialect already calls disconnects are left alone.
    """
    if context.is_disconnect:
        return
    original = context.original_exception
    if not is_transient(original):
        return

    context.is_disconnect = True
    number = error_number(original)
    text = " ".join(redact(str(original)).split())[:200]
    logger.info(
        "treating %s as a disconnect so that the pool replaces the connection%s: %s",
        f"MySQL error {number}" if number is not None else type(original).__name__,
        " (pre-ping)" if context.is_pre_ping else "",
        text,
    )


def install_disconnect_handler(engine: Engine) -> None:
    """Make ``engine``'s pool replace connections broken by transient errors.

    Adds a ``handle_error`` listener that sets ``is_disconnect`` for every error
    that :func:`securemysql.is_transient` classifies as transient, for statements
    and for pool pre-ping. These are network errors and the transient numbers in
    ``securemysql.retry.ERROR_TABLE``, such as 1053, 1927, 2006, 2013 and 2055.
    SQLAlchemy's MySQL dialects call only some of them disconnects (not 1053, for
    example), so without this listener the pool would hand such a connection out again.
    :func:`create_engine` and the plugin call it; call it for an engine built with
    ``creator=``. Calling it twice on one engine adds the listener once.
    """
    if not event.contains(engine, "handle_error", _mark_transient_disconnect):
        event.listen(engine, "handle_error", _mark_transient_disconnect)


def _apply_pool_defaults(pool_class: type[Pool], pool_args: dict[str, Any]) -> None:
    if not issubclass(pool_class, Pool):
        return
    pool_args.setdefault("pre_ping", True)
    pool_args.setdefault("recycle", DEFAULT_POOL_RECYCLE)


class SecureMySQLPlugin(CreateEnginePlugin):
    """SQLAlchemy engine plugin ``securemysql``: access-token logins over verified TLS.

    Enabled by ``?plugin=securemysql`` in the URL or ``plugins=["securemysql"]``. It
    consumes the ``URL_OPTIONS`` from the URL query and the ``securemysql_options``
    keyword argument of ``sqlalchemy.create_engine`` (a mapping of ConnectionFactory
    options such as ``credential``). It adds the pool defaults described in the module
    documentation, and installs a ``do_connect`` listener that opens every connection
    through one ConnectionFactory, plus :func:`install_disconnect_handler`.

    The factory is built when the engine is created, from the arguments SQLAlchemy
    would give the driver: the dialect's reading of the URL plus ``connect_args``,
    copied once. ``cargs`` and ``cparams`` of each connect are not read, so changes
    that other ``do_connect`` listeners make to them have no effect. The engine's
    listeners registered after this one are not called, because this one returns the
    connection.

    Raises ConfigurationError (while ``create_engine`` runs) for a URL with a
    password, an unsupported driver, invalid options, or ``creator=``/``pool=``, which
    would bypass the listener.
    """

    def __init__(self, url: URL, kwargs: dict[str, Any]) -> None:
        super().__init__(url, kwargs)
        _check_url(url)
        self._driver = _driver_for_url(url)
        for name in ("creator", "pool"):
            if kwargs.get(name) is not None:
                raise ConfigurationError(
                    f"The securemysql plugin opens connections itself and cannot be combined "
                    f"with {name}=. Remove {name}= or the plugin."
                )

        keyword_options = kwargs.pop(_OPTIONS_KEYWORD, None) or {}
        self._options = _url_options(url)
        extra = _checked_factory_options(keyword_options, _OPTIONS_KEYWORD)
        for name, value in extra.items():
            _store_option(self._options, name, value, source=f"{_OPTIONS_KEYWORD}[{name!r}]")

        connect_args = kwargs.get("connect_args") or {}
        _reject_password_arguments(connect_args, "connect_args")
        # A shallow copy, so that the caller changing its dict later changes nothing here.
        self._connect_args: dict[str, Any] = dict(connect_args)

    def update_url(self, url: URL) -> URL:
        """Return the URL without securemysql's query options."""
        return url.difference_update_query(list(URL_OPTIONS))

    def handle_pool_kwargs(self, pool_cls: type[Pool], pool_args: dict[str, Any]) -> None:
        """Default to ``pre_ping=True`` and ``recycle=DEFAULT_POOL_RECYCLE``."""
        _apply_pool_defaults(pool_cls, pool_args)

    def engine_created(self, engine: Engine) -> None:
        """Build the ConnectionFactory and install the connect and error listeners."""
        factory = _build_factory(
            engine.dialect, engine.url, self._connect_args, self._driver, self._options
        )
        _install(engine, factory)
        logger.debug("securemysql plugin installed on engine for %s", _safe_url(engine.url))


# Registered by name as well as through the entry point, so that create_engine() below
# also works when the package runs from a source tree without installed metadata.
_plugin_registry.register(PLUGIN_NAME, __name__, "SecureMySQLPlugin")


def create_engine(
    url: Union[str, URL],
    *,
    credential: Any = None,
    token_provider: Optional[TokenProvider] = None,
    scope: Optional[str] = None,
    cloud: Optional[str] = None,
    managed_identity_client_id: Optional[str] = None,
    token_timeout: Optional[float] = None,
    ssl_ca: Optional[str] = None,
    ssl_capath: Optional[str] = None,
    ssl_context: Optional[ssl.SSLContext] = None,
    use_system_trust_store: Optional[bool] = None,
    server_hostname: Optional[str] = None,
    retry: Optional[RetryPolicy] = None,
    **engine_options: Any,
) -> Engine:
    """Create a SQLAlchemy engine whose connections log in with Microsoft Entra ID tokens.

    Args:
        url: a SQLAlchemy MySQL URL without a password, for example
            ``mysql+pymysql://user@server.mysql.database.azure.com/db?charset=utf8mb4``.
            The query may hold the options in ``URL_OPTIONS``; other query options and
            ``connect_args`` go to the driver, except those that would weaken TLS.
        credential, token_provider, scope, cloud, managed_identity_client_id,
            token_timeout, ssl_ca, ssl_capath, ssl_context, use_system_trust_store,
            server_hostname, retry: as for ``ConnectionFactory``; ``None`` leaves the
            setting to the URL or the factory's default.
        engine_options: passed to ``sqlalchemy.create_engine``. ``pool_pre_ping``
            defaults to True and ``pool_recycle`` to ``DEFAULT_POOL_RECYCLE`` seconds.

    Raises:
        ConfigurationError: the URL has a password, an unsupported scheme, no user or
            host, or an option is invalid or given twice with different values.
        securemysql.errors.InsecureConfigurationError: a driver argument would weaken TLS.
    """
    keywords = {
        "credential": credential,
        "token_provider": token_provider,
        "scope": scope,
        "cloud": cloud,
        "managed_identity_client_id": managed_identity_client_id,
        "token_timeout": token_timeout,
        "ssl_ca": ssl_ca,
        "ssl_capath": ssl_capath,
        "ssl_context": ssl_context,
        "use_system_trust_store": use_system_trust_store,
        "server_hostname": server_hostname,
        "retry": retry,
    }
    options = {name: value for name, value in keywords.items() if value is not None}
    extra = engine_options.pop(_OPTIONS_KEYWORD, None) or {}
    for name, value in _checked_factory_options(extra, _OPTIONS_KEYWORD).items():
        _store_option(options, name, value, source=f"{_OPTIONS_KEYWORD}[{name!r}]")

    parsed = make_url(url)
    plugins = list(engine_options.pop("plugins", None) or [])
    url_plugins = parsed.query.get("plugin", ())
    url_plugins = (url_plugins,) if isinstance(url_plugins, str) else url_plugins
    if PLUGIN_NAME not in plugins and PLUGIN_NAME not in url_plugins:
        plugins.append(PLUGIN_NAME)

    return sqlalchemy.create_engine(
        parsed, plugins=plugins, **{_OPTIONS_KEYWORD: options}, **engine_options
    )


def create_async_engine(url: Union[str, URL], **options: Any) -> NoReturn:
    """Not supported yet: raises NotImplementedError explaining what is missing.

    NOTE: an async engine needs an asyncio driver (aiomysql or asyncmy), and neither
    is a dependency. The token path could stay the same: the same TokenProvider,
    with ``get_token`` run in a thread executor, and the same SSLContext. The TLS
    guard could not, because aiomysql 0.3.2 upgrades to TLS only when the server
    offers it. Otherwise it sends the login packet, password included, in clear
    text (``_request_authentication`` in aiomysql/connection.py). Missing: a driver
    module that stops the login on a socket without verified TLS, as
    ``securemysql.drivers.pymysql.GuardedConnection`` does for PyMySQL, an
    ``async_creator`` built on it, and sandbox tests with aiomysql and greenlet.
    asyncmy's TLS fallback was not checked.
    """
    raise NotImplementedError(
        "securemysql does not support asyncio engines yet: no asyncio driver module keeps "
        "the access token off a connection without verified TLS (aiomysql falls back to "
        "clear text when the server offers no TLS). Use securemysql.sqlalchemy."
        "create_engine() with mysql+pymysql:// or mysql+mysqlconnector://, and run blocking "
        "calls in a thread (asyncio.to_thread)."
    )
