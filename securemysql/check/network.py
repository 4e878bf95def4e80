"""Stages 1 and 2: resolve the host name and open a TCP connection to the port."""

from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import Sequence
from typing import Any

from securemysql import tokens
from securemysql.check.stage import FactRecorder, ResolvedAddress, RunState, StageFailed

LOOPBACK = "loopback"
PRIVATE = "private"
PUBLIC = "public"
SPECIAL = "special"
MIXED = "mixed"

_FIX_FIREWALL = (
    "For a public endpoint, allow this client's public IP address in the server's firewall "
    "rules (Azure portal: server > Networking, or az mysql flexible-server firewall-rule "
    "create); for a private endpoint, check network security groups, routes and peering "
    "between this network and the endpoint's."
)


def classify_address(address: str) -> str:
    """Return ``"loopback"``, ``"private"``, ``"public"`` or ``"special"`` for an IP address.

    "private" covers every range that is not routed on the internet, such as
    RFC 1918, unique local IPv6 and link-local addresses. "special" covers
    reserved ranges that are neither, such as 100.64.0.0/10 (carrier-grade NAT).
    IPv4-mapped IPv6 addresses are judged by their IPv4 address.
    """
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped

    if ip.is_loopback:
        return LOOPBACK
    if ip.is_private:
        return PRIVATE
    if ip.is_global:
        return PUBLIC
    return SPECIAL


def endpoint_kind(kinds: list[str]) -> str:
    """Sum up the kinds of all addresses: the common kind, or ``"mixed"``."""
    distinct = set(kinds)
    return distinct.pop() if len(distinct) == 1 else MIXED


def run_resolution(state: RunState, facts: FactRecorder) -> None:
    """Resolve the host name; record the addresses, their kinds and the implied cloud."""
    options = state.options
    try:
        infos = socket.getaddrinfo(
            options.host, options.port, type=socket.SOCK_STREAM, flags=socket.AI_CANONNAME
        )
    except (socket.gaierror, UnicodeError) as exc:
        _record_cloud(state, facts)
        raise StageFailed(
            f"{options.host} does not resolve",
            cause=f"The host name {options.host!r} could not be resolved ({exc}).",
            fix=(
                "Check the spelling of --host (Azure Database for MySQL names end in "
                ".mysql.database.azure.com). For a private endpoint, check that the private "
                "DNS zone privatelink.mysql.database.azure.com is linked to this client's "
                "virtual network, or that this client's DNS server forwards to Azure DNS."
            ),
        ) from exc

    canonical_name = next((info[3] for info in infos if info[3]), None)
    facts.add("canonical_name", "canonical name", canonical_name)

    state.addresses = _unique_addresses(infos)
    facts.add(
        "addresses",
        "addresses",
        [{"address": item.address, "kind": item.kind} for item in state.addresses],
        ", ".join(f"{item.address} ({item.kind})" for item in state.addresses),
    )

    state.endpoint_kind = endpoint_kind([item.kind for item in state.addresses])
    facts.add("endpoint", "endpoint", state.endpoint_kind, _describe_endpoint(state.endpoint_kind))
    _record_cloud(state, facts)
    count = len(state.addresses)
    facts.summary = (
        f"{options.host} resolves to {count} address{'es' if count != 1 else ''} "
        f"({state.endpoint_kind})"
    )


def _record_cloud(state: RunState, facts: FactRecorder) -> None:
    options = state.options
    cloud = tokens.cloud_for_host(options.host)
    if cloud is None:
        cloud_text = "not recognised: the host name has no Azure Database for MySQL suffix"
    else:
        cloud_text = f"{cloud} (from the host name suffix)"
    facts.add("cloud", "cloud", cloud, cloud_text)

    state.scope = tokens.resolve_scope(scope=options.scope, host=options.host)
    if options.scope is not None:
        scope_text = f"{state.scope} (from --scope)"
    elif cloud is None:
        scope_text = f"{state.scope} (public cloud, the default)"
    else:
        scope_text = f"{state.scope} (for the {cloud} cloud)"
    facts.add("scope", "token scope", state.scope, scope_text)


def _unique_addresses(
    infos: Sequence[tuple[int, int, int, str, tuple[Any, ...]]],
) -> list[ResolvedAddress]:
    addresses: list[ResolvedAddress] = []
    seen: set[str] = set()
    for family, _type, _proto, _canonical, sockaddr in infos:
        address = str(sockaddr[0])
        if address in seen:
            continue
        seen.add(address)
        addresses.append(
            ResolvedAddress(
                family=family,
                sockaddr=sockaddr,
                address=address,
                kind=classify_address(address),
            )
        )
    return addresses


def _describe_endpoint(kind: str) -> str:
    descriptions = {
        LOOPBACK: "loopback: the server runs on this machine, or a tunnel forwards to it",
        PRIVATE: "private addresses only: the sign of a private endpoint or VNet integration",
        PUBLIC: "public addresses: the server is reached over its public endpoint",
        SPECIAL: "reserved addresses that are neither private nor public",
        MIXED: "a mix of address kinds",
    }
    return descriptions[kind]


def run_tcp(state: RunState, facts: FactRecorder) -> None:
    """Connect to the port, trying each resolved address in order; keep the first connection."""
    options = state.options
    failures: list[dict[str, str]] = []

    for candidate in state.addresses:
        sock = socket.socket(candidate.family, socket.SOCK_STREAM)
        sock.settimeout(options.timeout)
        started = time.perf_counter()
        try:
            sock.connect(candidate.sockaddr)
        except OSError as exc:
            sock.close()
            failures.append({"address": candidate.address, "error": _describe_os_error(exc)})
            continue

        elapsed_ms = (time.perf_counter() - started) * 1000.0
        state.connected = candidate
        state.tcp_socket = sock
        facts.add(
            "address", "connected to", candidate.address, f"{candidate.address}:{options.port}"
        )
        facts.add("connect_ms", "connect time", round(elapsed_ms, 3), f"{elapsed_ms:.1f} ms")
        _record_failures(facts, failures)
        facts.summary = f"connected to {candidate.address}:{options.port} in {elapsed_ms:.1f} ms"
        return

    _record_failures(facts, failures)
    raise _tcp_failure(options.host, options.port, options.timeout, failures)


def _record_failures(facts: FactRecorder, failures: list[dict[str, str]]) -> None:
    if failures:
        facts.add(
            "failed_addresses",
            "failed addresses",
            failures,
            "; ".join(f"{item['address']}: {item['error']}" for item in failures),
        )


def _describe_os_error(exc: OSError) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return "timed out"
    return exc.strerror or str(exc) or type(exc).__name__


def _tcp_failure(
    host: str, port: int, timeout: float, failures: list[dict[str, str]]
) -> StageFailed:
    errors = {item["error"] for item in failures}
    where = ", ".join(f"{item['address']}:{port}" for item in failures) or f"{host}:{port}"

    if errors == {"connection refused"}:
        return StageFailed(
            f"connection to port {port} refused",
            cause=f"Nothing accepts connections at {where}: the connection was refused.",
            fix=(
                "Check that the server is running and that --port is right (Azure Database "
                "for MySQL listens on 3306). A stopped Azure server refuses connections "
                "until it is started (az mysql flexible-server start)."
            ),
        )

    if errors == {"timed out"}:
        return StageFailed(
            f"connection to port {port} timed out",
            cause=f"No answer from {where} within {timeout:g} s: a firewall drops the packets.",
            fix=_FIX_FIREWALL,
        )

    return StageFailed(
        f"connection to port {port} failed",
        cause=f"The TCP connection to {where} failed: {', '.join(sorted(errors))}.",
        fix="Check the route to the server from this client. " + _FIX_FIREWALL,
    )
