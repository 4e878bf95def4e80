"""``securemysql check``: diagnose a connection stage by stage; ``securemysql token``.

The stages are name resolution, TCP connect, TLS, access token,
authentication, session and security posture (see :data:`STAGES` for their
exit codes). :func:`run_check` runs them and returns a :class:`CheckReport`,
which :func:`render_text` and :func:`render_json` turn into the report for
people and the JSON document (schema in ``securemysql/data/check-report.schema.json``).

Importing this package imports neither azure-identity nor a driver; the
functions that need them are imported on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from securemysql.check.commands import add_commands
from securemysql.check.model import (
    SCHEMA_VERSION,
    STAGES,
    CheckOptions,
    CheckReport,
    PostureItem,
    Problem,
    StageResult,
)

# Public name -> module that defines it, imported on first access.
_LAZY_EXPORTS = {
    "run_check": "securemysql.check.runner",
    "render_text": "securemysql.check.report",
    "render_json": "securemysql.check.report",
    "to_json_dict": "securemysql.check.report",
    "load_schema": "securemysql.check.report",
}

__all__ = [
    "SCHEMA_VERSION",
    "STAGES",
    "CheckOptions",
    "CheckReport",
    "PostureItem",
    "Problem",
    "StageResult",
    "add_commands",
    "load_schema",
    "render_json",
    "render_text",
    "run_check",
    "to_json_dict",
]

if TYPE_CHECKING:
    from securemysql.check.report import load_schema as load_schema
    from securemysql.check.report import render_json as render_json
    from securemysql.check.report import render_text as render_text
    from securemysql.check.report import to_json_dict as to_json_dict
    from securemysql.check.runner import run_check as run_check


def __getattr__(name: str) -> Any:
    module_name = _LAZY_EXPORTS.get(name)
    if module_name is None:
        raise AttributeError(f"module 'securemysql.check' has no attribute {name!r}")
    value = getattr(importlib.import_module(module_name), name)
    globals()[name] = value
    return value
