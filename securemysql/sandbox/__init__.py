"""A local server that behaves like Azure Database for MySQL, for tests and demos.

Needs the ``sandbox`` extra (``pip install securemysql[sandbox]``), MariaDB and
``libpam-script`` installed, and root to register a PAM service.

Names are imported on first use, so that pytest loading the sandbox plugin
imports neither trustme, PyJWT nor ``ssl`` in test suites that never start a
sandbox.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "Fault": "securemysql.sandbox.identity",
    "Sandbox": "securemysql.sandbox.core",
    "SandboxError": "securemysql.sandbox.errors",
    "SandboxInfo": "securemysql.sandbox.core",
    "TLSMode": "securemysql.sandbox.certs",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from securemysql.sandbox.certs import TLSMode as TLSMode
    from securemysql.sandbox.core import Sandbox as Sandbox
    from securemysql.sandbox.core import SandboxInfo as SandboxInfo
    from securemysql.sandbox.errors import SandboxError as SandboxError
    from securemysql.sandbox.identity import Fault as Fault


def __getattr__(name: str) -> Any:
    module_name = _EXPORTS.get(name)
    if module_name is None:
        raise AttributeError(f"module 'securemysql.sandbox' has no attribute {name!r}")
    value = getattr(importlib.import_module(module_name), name)
    globals()[name] = value
    return value
