"""The test process cannot reach anything but loopback."""

from __future__ import annotations

import socket

import pytest

from tests.netguard import NonLoopbackAccessError


def test_metadata_address_blocked() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(1)
        with pytest.raises(NonLoopbackAccessError):
            sock.connect(("169.254.169.254", 80))


def test_name_lookup_blocked() -> None:
    with pytest.raises(socket.gaierror, match="blocked"):
        socket.getaddrinfo("db.example.com", 3306)


def test_loopback_allowed() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        with socket.create_connection(server.getsockname(), timeout=5):
            pass
    assert socket.getaddrinfo("localhost", 80)
