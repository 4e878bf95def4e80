"""Driver modules: one per supported database driver, imported on first use."""

from __future__ import annotations

import importlib

from securemysql.drivers.base import ConnectParams, Driver, connection_tls_info
from securemysql.errors import ConfigurationError

# driver= value -> (module, class). Aliases let users write the SQLAlchemy dialect names.
_DRIVERS = {
    "pymysql": ("securemysql.drivers.pymysql", "PyMySQLDriver"),
    "mysql.connector": ("securemysql.drivers.mysqlconnector", "MySQLConnectorDriver"),
    "mysqlconnector": ("securemysql.drivers.mysqlconnector", "MySQLConnectorDriver"),
    "mysql-connector": ("securemysql.drivers.mysqlconnector", "MySQLConnectorDriver"),
}

SUPPORTED_DRIVERS = ("pymysql", "mysql.connector")

__all__ = ["SUPPORTED_DRIVERS", "ConnectParams", "Driver", "connection_tls_info", "load_driver"]


def load_driver(name: str, **options: object) -> Driver:
    """Import the driver module for ``name`` and return a driver instance.

    Raises ConfigurationError for an unknown name and DriverNotAvailableError
    when the driver package cannot be imported.
    """
    entry = _DRIVERS.get(name.lower())
    if entry is None:
        raise ConfigurationError(
            f"Unknown driver {name!r}; use one of: {', '.join(SUPPORTED_DRIVERS)}."
        )
    module_name, class_name = entry
    module = importlib.import_module(module_name)
    driver_class: type[Driver] = getattr(module, class_name)
    return driver_class(**options)
