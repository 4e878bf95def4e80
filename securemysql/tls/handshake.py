"""The client side of MySQL's exchange before TLS: greeting, SSLRequest, then the handshake.

MySQL negotiates TLS inside its own protocol. The server sends a greeting
packet. The client replies with a 32-byte SSLRequest packet with sequence id 1:
capability flags, maximum packet size and character set, but no user name or
password. Both then run a TLS handshake on the same socket. The functions here
cover the steps up to that handshake, and the caller wraps the socket. Nothing
here sends a credential.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass
from typing import Optional

# Capability flags of the MySQL client/server protocol.
CLIENT_LONG_PASSWORD = 1 << 0
CLIENT_PROTOCOL_41 = 1 << 9
CLIENT_SSL = 1 << 11
CLIENT_SECURE_CONNECTION = 1 << 15

_UTF8MB4_GENERAL_CI = 45
_MAX_PACKET_SIZE = 16 * 1024 * 1024
_MAX_GREETING = 64 * 1024


@dataclass(frozen=True)
class Greeting:
    """The parts of the server's initial handshake packet (protocol version 10) that callers use.

    Attributes:
        protocol_version: always 10.
        server_version: the server's version string, for example ``"8.0.36"``.
        connection_id: the server's id for this connection.
        capabilities: the server's capability flags, all 32 bits when it sent them.
    """

    protocol_version: int
    server_version: str
    connection_id: int
    capabilities: int

    @property
    def offers_tls(self) -> bool:
        """True when the server sets CLIENT_SSL, that is, accepts an SSLRequest."""
        return bool(self.capabilities & CLIENT_SSL)


class ServerErrorPacket(ValueError):
    """The server sent an error packet (0xFF) instead of a greeting.

    A ValueError subclass, so callers that treat any unexpected greeting as a
    ValueError keep doing so.
    """

    def __init__(self, error_number: int, message: str) -> None:
        super().__init__(f"{error_number}: {message}")
        self.error_number = error_number
        self.message = message


def parse_greeting(payload: bytes) -> Greeting:
    """Parse a protocol version 10 greeting (the only one MySQL 5.0+ and MariaDB send).

    Args:
        payload: the packet's payload, without the 4-byte packet header.

    Raises:
        ServerErrorPacket: the payload is an error packet (0xFF).
        ValueError: the payload is neither, or is truncated.
    """
    if payload[:1] == b"\xff" and len(payload) >= 3:
        (error_number,) = struct.unpack_from("<H", payload, 1)
        message = payload[3:].decode("utf-8", "replace")
        if message.startswith("#") and len(message) >= 6:
            message = message[6:]  # drop "#" and the SQLSTATE
        raise ServerErrorPacket(error_number, message)

    if not payload or payload[0] != 10:
        raise ValueError("the server's first packet is not a MySQL protocol version 10 greeting")

    version_end = payload.find(b"\0", 1)
    if version_end < 0:
        raise ValueError("the server's greeting has no version string")
    server_version = payload[1:version_end].decode("utf-8", "replace")

    # version NUL, 4-byte connection id, 8 scramble bytes, 1 filler byte, 2 capability bytes
    position = version_end + 1
    if len(payload) < position + 4 + 8 + 1 + 2:
        raise ValueError("the server's greeting is truncated")
    (connection_id,) = struct.unpack_from("<I", payload, position)
    position += 4 + 8 + 1
    (capabilities,) = struct.unpack_from("<H", payload, position)
    position += 2

    # character set (1), status flags (2), then the upper 16 capability bits
    if len(payload) >= position + 5:
        (upper,) = struct.unpack_from("<H", payload, position + 3)
        capabilities |= upper << 16

    return Greeting(
        protocol_version=10,
        server_version=server_version,
        connection_id=connection_id,
        capabilities=capabilities,
    )


def read_greeting(sock: socket.socket) -> Greeting:
    """Read and parse the server's greeting packet from a new connection.

    Raises:
        ConnectionError: the server closed the connection before the greeting ended.
        OSError: the read failed or timed out.
        ServerErrorPacket: the server sent an error packet instead.
        ValueError: the first packet is not a greeting (or longer than 64 KiB).
    """
    header = _receive_exactly(sock, 4)
    length = int.from_bytes(header[:3], "little")
    if length > _MAX_GREETING:
        raise ValueError(f"the server's first packet is {length} bytes, too long for a greeting")
    return parse_greeting(_receive_exactly(sock, length))


def ssl_request_packet() -> bytes:
    """Return the SSLRequest packet: header with sequence id 1, then 32 bytes without secrets."""
    payload = struct.pack(
        "<IIB23s",
        CLIENT_LONG_PASSWORD | CLIENT_PROTOCOL_41 | CLIENT_SSL | CLIENT_SECURE_CONNECTION,
        _MAX_PACKET_SIZE,
        _UTF8MB4_GENERAL_CI,
        b"",
    )
    return len(payload).to_bytes(3, "little") + b"\x01" + payload


def open_for_tls_upgrade(host: str, port: int, *, timeout: float) -> Optional[socket.socket]:
    """Connect, read the greeting and send the SSLRequest; return the socket ready for TLS.

    The caller owns the returned socket and passes it to
    :meth:`ssl.SSLContext.wrap_socket`. Only the SSLRequest packet is written,
    never a user name, password or token.

    Args:
        host: server address to connect to.
        port: TCP port.
        timeout: seconds allowed for connecting and for each read or write; the
            returned socket keeps this time-out.

    Returns:
        The connected socket, or None (connection closed) when the server does
        not offer TLS.

    Raises:
        OSError: the connection failed or timed out; the socket is closed.
        ValueError: the greeting is not MySQL protocol version 10 (ServerErrorPacket
            for an error packet); the socket is closed.
    """
    sock = socket.create_connection((host, port), timeout=timeout)
    try:
        if not read_greeting(sock).offers_tls:
            sock.close()
            return None
        sock.sendall(ssl_request_packet())
    except BaseException:
        sock.close()
        raise
    return sock


def _receive_exactly(sock: socket.socket, count: int) -> bytes:
    data = bytearray()
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        if not chunk:
            raise ConnectionError("the server closed the connection before its greeting ended")
        data += chunk
    return bytes(data)
