"""Keep the test process on loopback: connects and name lookups elsewhere fail at once.

Tests and the code under test may talk only to 127.0.0.0/8 and ::1. An
azure-identity credential may fall back to the instance metadata address, and a
lookup of a made-up host name would reach the machine's DNS server. Both are
stopped here with an OSError naming the address, so the test fails instead of
sending traffic. Subprocesses and C extensions (libmysqlclient) are not covered.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

_LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})
_INTERNET_FAMILIES = (socket.AF_INET, socket.AF_INET6)

_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex
_real_getaddrinfo = socket.getaddrinfo


class NonLoopbackAccessError(ConnectionRefusedError):
    """A test tried to reach an address outside the loopback range."""


def _is_loopback_host(host: object) -> bool:
    if host is None:
        return True
    text = host.decode() if isinstance(host, bytes) else str(host)
    if text.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(text.split("%")[0]).is_loopback
    except ValueError:
        return False


def _check_address(sock: socket.socket, address: Any) -> None:
    if sock.family in _INTERNET_FAMILIES and not _is_loopback_host(address[0]):
        raise NonLoopbackAccessError(f"test network guard: connect to {address[0]!r} blocked")


def _guarded_connect(self: socket.socket, address: Any) -> None:
    _check_address(self, address)
    _real_connect(self, address)


def _guarded_connect_ex(self: socket.socket, address: Any) -> int:
    _check_address(self, address)
    return _real_connect_ex(self, address)


def _guarded_getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
    if not _is_loopback_host(host):
        raise socket.gaierror(socket.EAI_NONAME, f"test network guard: lookup of {host!r} blocked")
    return _real_getaddrinfo(host, *args, **kwargs)


def install() -> None:
    """Patch socket connects and lookups for the rest of the process."""
    socket.socket.connect = _guarded_connect  # type: ignore[method-assign]
    socket.socket.connect_ex = _guarded_connect_ex  # type: ignore[method-assign]
    socket.getaddrinfo = _guarded_getaddrinfo
