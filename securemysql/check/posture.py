"""Stage 7: the server's security settings, as far as a logged-in client can see them.

Each item is pass, fail or not visible from a client. Items that only the
Azure control plane records (threat protection, customer-managed keys,
firewall rules) are always listed as not visible, with where to check them.
They are never guessed from what the client can observe.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Optional

from securemysql import redaction
from securemysql.check.model import FAIL, NOT_VISIBLE, PASS, PostureItem
from securemysql.check.network import LOOPBACK, PRIVATE, PUBLIC
from securemysql.check.stage import FactRecorder, RunState, StageFailed

logger = logging.getLogger("securemysql.check")

_VARIABLES = ("require_secure_transport", "tls_version", "aad_auth_only", "audit_log_enabled")
_OLD_TLS_VERSIONS = {"tlsv1", "tlsv1.0", "tlsv1.1"}

_PARAMETER_SHOW = (
    "az mysql flexible-server parameter show --resource-group RG --server-name SERVER --name {name}"
)

#: Settings a client cannot see, with where to check them instead.
INVISIBLE_ITEMS = (
    PostureItem(
        name="threat_protection",
        title="Threat protection (Microsoft Defender)",
        status=NOT_VISIBLE,
        value=None,
        detail="Set in the Azure control plane; a database session cannot see it.",
        where_to_check=(
            "Azure portal: the server's Microsoft Defender for Cloud page, or "
            "az mysql flexible-server advanced-threat-protection-setting show "
            "--resource-group RG --name SERVER"
        ),
    ),
    PostureItem(
        name="customer_managed_keys",
        title="Data encryption with customer-managed keys",
        status=NOT_VISIBLE,
        value=None,
        detail="Set in the Azure control plane; a database session cannot see it.",
        where_to_check=(
            "Azure portal: the server's Data encryption page, or "
            "az mysql flexible-server show --resource-group RG --name SERVER "
            "--query dataEncryption"
        ),
    ),
    PostureItem(
        name="firewall_rules",
        title="Firewall rules",
        status=NOT_VISIBLE,
        value=None,
        detail=(
            "Set in the Azure control plane; a successful connection only shows that this "
            "client is allowed, not which other addresses are."
        ),
        where_to_check=(
            "Azure portal: the server's Networking page, or "
            "az mysql flexible-server firewall-rule list --resource-group RG --name SERVER"
        ),
    ),
)


def run_posture(state: RunState, facts: FactRecorder) -> None:
    """Judge the posture items; fail only with ``--strict``, else warn about failed items."""
    variables, read_error = _read_variables(state.connection)
    items = [
        require_secure_transport_item(variables, read_error),
        tls_version_item(variables, read_error),
        entra_only_item(variables, read_error),
        audit_log_item(variables, read_error),
        private_endpoint_item(state.endpoint_kind),
        *INVISIBLE_ITEMS,
    ]
    state.posture = items

    counts = {status: sum(item.status == status for item in items) for status in _STATUSES}
    facts.add(
        "counts",
        "items",
        counts,
        f"{counts[PASS]} pass, {counts[FAIL]} fail, "
        f"{counts[NOT_VISIBLE]} not visible from a client",
    )
    failed = [item.name for item in items if item.status == FAIL]
    facts.summary = f"{counts[PASS]} pass, {counts[FAIL]} fail, {counts[NOT_VISIBLE]} not visible"
    if not failed:
        return

    if state.options.strict:
        raise StageFailed(
            f"{len(failed)} posture item{'s' if len(failed) != 1 else ''} failed (--strict)",
            cause=f"These security settings fail: {', '.join(failed)}.",
            fix="Change the settings as each item describes, or run without --strict.",
        )
    facts.warning = True


_STATUSES = (PASS, FAIL, NOT_VISIBLE)


def _read_variables(connection: Any) -> tuple[dict[str, str], Optional[str]]:
    """Read the posture variables; return them and the error text if reading failed."""
    placeholders = ", ".join(f"'{name}'" for name in _VARIABLES)
    try:
        cursor = connection.cursor()
        try:
            cursor.execute(f"SHOW GLOBAL VARIABLES WHERE Variable_name IN ({placeholders})")
            rows = cursor.fetchall()
        finally:
            cursor.close()
    except Exception as exc:
        text = redaction.redact(str(exc)) or type(exc).__name__
        logger.warning("reading the server's global variables failed: %s", text)
        return {}, text
    return {_text(name).lower(): _text(value) for name, value in rows}, None


def _text(value: Any) -> str:
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", "replace")
    return str(value)


def _missing(name: str, title: str, read_error: Optional[str], where: str) -> PostureItem:
    if read_error is not None:
        detail = f"Could not read the server's variables: {read_error}."
    else:
        detail = f"This server has no {name} variable, so a client cannot see the setting."
    return PostureItem(
        name=name,
        title=title,
        status=NOT_VISIBLE,
        value=None,
        detail=detail,
        where_to_check=where,
    )


def require_secure_transport_item(
    variables: Mapping[str, str], read_error: Optional[str] = None
) -> PostureItem:
    """Pass when the server rejects connections without TLS (require_secure_transport=ON)."""
    name = "require_secure_transport"
    title = "Server requires TLS"
    where = _PARAMETER_SHOW.format(name=name)
    value = variables.get(name)
    if value is None:
        return _missing(name, title, read_error, where)

    if value.upper() in ("ON", "1"):
        detail = "The server rejects connections that do not use TLS."
        return PostureItem(name, title, PASS, value, detail)

    detail = (
        "The server accepts connections without TLS, so other clients may send passwords in "
        "clear text. Set require_secure_transport=ON (az mysql flexible-server parameter set "
        "--name require_secure_transport --value ON)."
    )
    return PostureItem(name, title, FAIL, value, detail, where)


def tls_version_item(variables: Mapping[str, str], read_error: Optional[str] = None) -> PostureItem:
    """Pass when the server allows only TLS 1.2 and newer."""
    name = "tls_version"
    title = "TLS versions allowed"
    where = _PARAMETER_SHOW.format(name=name)
    value = variables.get(name)
    if value is None or not value.strip():
        return _missing(name, title, read_error, where)

    versions = [part.strip() for part in value.split(",") if part.strip()]
    old = [version for version in versions if version.lower() in _OLD_TLS_VERSIONS]
    if not old:
        return PostureItem(name, title, PASS, value, "Only TLS 1.2 and newer are allowed.")

    detail = (
        f"The server still allows {', '.join(old)}, which are deprecated (RFC 8996). "
        "Set tls_version to TLSv1.2,TLSv1.3."
    )
    return PostureItem(name, title, FAIL, value, detail, where)


def entra_only_item(variables: Mapping[str, str], read_error: Optional[str] = None) -> PostureItem:
    """Pass when only Microsoft Entra authentication is allowed (aad_auth_only=ON)."""
    name = "aad_auth_only"
    title = "Microsoft Entra authentication only"
    where = _PARAMETER_SHOW.format(name=name)
    value = variables.get(name)
    if value is None:
        return _missing(name, title, read_error, where)

    if value.upper() in ("ON", "1"):
        return PostureItem(name, title, PASS, value, "MySQL passwords are not accepted.")

    detail = (
        "MySQL password logins are still accepted next to Entra tokens. Set aad_auth_only=ON "
        "once every client uses Entra authentication."
    )
    return PostureItem(name, title, FAIL, value, detail, where)


def audit_log_item(variables: Mapping[str, str], read_error: Optional[str] = None) -> PostureItem:
    """Pass when the audit log is on (audit_log_enabled=ON)."""
    name = "audit_log_enabled"
    title = "Audit log"
    where = _PARAMETER_SHOW.format(name=name)
    value = variables.get(name)
    if value is None:
        return _missing(name, title, read_error, where)

    if value.upper() in ("ON", "1"):
        return PostureItem(name, title, PASS, value, "Connections and queries are audited.")

    detail = "The audit log is off. Set audit_log_enabled=ON and choose audit_log_events."
    return PostureItem(name, title, FAIL, value, detail, where)


def private_endpoint_item(kind: Optional[str]) -> PostureItem:
    """Judge the endpoint from the addresses the host name resolved to (stage 1)."""
    name = "private_endpoint"
    title = "Private endpoint"
    where = (
        "Azure portal: the server's Networking page, or "
        "az mysql flexible-server show --resource-group RG --name SERVER --query network"
    )
    if kind == PRIVATE:
        detail = "The host name resolves to private addresses only."
        return PostureItem(name, title, PASS, kind, detail)

    if kind == PUBLIC:
        detail = (
            "The host name resolves to public addresses, so the server is reached over its "
            "public endpoint. Use a private endpoint or VNet integration to keep it off the "
            "internet."
        )
        return PostureItem(name, title, FAIL, kind, detail, where)

    if kind == LOOPBACK:
        detail = (
            "The host name resolves to a loopback address (a local server or a tunnel), so the "
            "server's own endpoint cannot be seen from here."
        )
    else:
        detail = f"The host name resolves to {kind or 'no'} addresses; no conclusion is possible."
    return PostureItem(name, title, NOT_VISIBLE, kind, detail, where)
