"""Errors of the sandbox (the local Azure-like test server)."""

from __future__ import annotations

from securemysql.errors import SecureMySQLError


class SandboxError(SecureMySQLError):
    """The sandbox could not be set up, started or controlled; the message says how to fix it."""
