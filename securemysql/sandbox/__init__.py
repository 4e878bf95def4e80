"""A local server that behaves like Azure Database for MySQL, for tests and demos.

Needs the ``sandbox`` extra (``pip install securemysql[sandbox]``), MariaDB and
``libpam-script`` installed, and root to register a PAM service.
"""

from __future__ import annotations

from securemysql.sandbox.certs import TLSMode
from securemysql.sandbox.core import Sandbox, SandboxInfo
from securemysql.sandbox.errors import SandboxError
from securemysql.sandbox.identity import Fault

__all__ = ["Fault", "Sandbox", "SandboxError", "SandboxInfo", "TLSMode"]
