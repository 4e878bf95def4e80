"""Classify connection errors and retry transient ones with capped, jittered backoff.

``classify`` sorts an exception into one of three outcomes:

- ``TRANSIENT``: the server or the network was unavailable, and a new connection
  may succeed later (a restart, a high-availability failover, a full connection table).
- ``AUTHENTICATION``: the server rejected the credentials. The caller decides
  whether to refresh the access token and try once more.
- ``PERMANENT``: everything else, including every error this package does not
  recognise, because retrying an error that is not understood only delays the report.

The package has one module per concept:

- ``table``: ``Outcome``, ``ErrorRule``, ``ERROR_TABLE`` and ``SQLSTATE_TABLE``,
  with the error lists that define each number.
- ``classification``: ``error_number``, ``sqlstate``, ``classify`` and
  ``is_transient``, which walk an exception's chain and recognise TLS failures.
- ``policy``: ``RetryPolicy``, which retries transient failures through tenacity.
"""

from __future__ import annotations

from securemysql.retry.classification import classify, error_number, is_transient, sqlstate
from securemysql.retry.policy import RetryPolicy
from securemysql.retry.table import ERROR_TABLE, SQLSTATE_TABLE, ErrorRule, Outcome

__all__ = [
    "ERROR_TABLE",
    "SQLSTATE_TABLE",
    "ErrorRule",
    "Outcome",
    "RetryPolicy",
    "classify",
    "error_number",
    "is_transient",
    "sqlstate",
]
