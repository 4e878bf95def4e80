"""A fake MySQL server that records everything a client sends, for downgrade tests.

It speaks enough of the MySQL client/server protocol (protocol version 10,
``HandshakeV10``) to make PyMySQL and mysql-connector-python send a password,
and it always tries to get that password in clear text. It requests the
``mysql_clear_password`` auth plugin, either in the initial handshake or with
an AuthSwitchRequest. Tests then ask :meth:`FakeMySQLServer.contains` whether
a secret ever reached it.

Modes (what the server offers):

``no_tls``
    No ``CLIENT_SSL`` capability: a client that sends the password anyway
    sends it in clear text.
``tls_ok``
    TLS with a certificate for ``localhost``/``127.0.0.1``/``::1`` issued by
    :attr:`FakeMySQLServer.ca`, which tests may give to the client
    (``ca_file``). The password arrives over TLS and is decrypted and recorded.
``tls_untrusted``
    TLS with a certificate for the right names, issued by a CA that the test
    cannot reach. A client that trusts ``ca_file`` must reject it.
``tls_wrong_host``
    TLS with a certificate issued by :attr:`ca` for ``db.other.invalid`` only.
``tls_legacy``
    TLS limited to version 1.1 or older, with a certificate from :attr:`ca`.
    Only possible where the local OpenSSL still allows TLS 1.1 on a server
    (check :func:`legacy_tls_available`).

The server binds 127.0.0.1 on a free port, handles each connection in its
own thread, applies a timeout to every socket operation, and stops its
threads on :meth:`close` (also at the end of a ``with`` block).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import ssl
import struct
import tempfile
import threading
import warnings
from dataclasses import dataclass, field
from types import TracebackType
from typing import Literal, Optional

import trustme

Mode = Literal["no_tls", "tls_ok", "tls_untrusted", "tls_wrong_host", "tls_legacy"]
ClearPasswordVia = Literal["handshake", "auth_switch", "never"]
AuthResult = Literal["ok", "error"]

MODES: tuple[Mode, ...] = ("no_tls", "tls_ok", "tls_untrusted", "tls_wrong_host", "tls_legacy")
TLS_MODES: tuple[Mode, ...] = MODES[1:]

CLEAR_PASSWORD_PLUGIN = b"mysql_clear_password"
NATIVE_PASSWORD_PLUGIN = b"mysql_native_password"
WRONG_HOST_NAME = "db.other.invalid"

# Capability flags (MySQL include/mysql_com.h).
CLIENT_LONG_PASSWORD = 1
CLIENT_FOUND_ROWS = 1 << 1
CLIENT_LONG_FLAG = 1 << 2
CLIENT_CONNECT_WITH_DB = 1 << 3
CLIENT_PROTOCOL_41 = 1 << 9
CLIENT_SSL = 1 << 11
CLIENT_TRANSACTIONS = 1 << 13
CLIENT_SECURE_CONNECTION = 1 << 15
CLIENT_MULTI_STATEMENTS = 1 << 16
CLIENT_MULTI_RESULTS = 1 << 17
CLIENT_PS_MULTI_RESULTS = 1 << 18
CLIENT_PLUGIN_AUTH = 1 << 19
CLIENT_CONNECT_ATTRS = 1 << 20
CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA = 1 << 21

BASE_CAPABILITIES = (
    CLIENT_LONG_PASSWORD
    | CLIENT_FOUND_ROWS
    | CLIENT_LONG_FLAG
    | CLIENT_CONNECT_WITH_DB
    | CLIENT_PROTOCOL_41
    | CLIENT_TRANSACTIONS
    | CLIENT_SECURE_CONNECTION
    | CLIENT_MULTI_STATEMENTS
    | CLIENT_MULTI_RESULTS
    | CLIENT_PS_MULTI_RESULTS
    | CLIENT_PLUGIN_AUTH
    | CLIENT_CONNECT_ATTRS
    | CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA
)

COM_QUIT = 0x01
COM_QUERY = 0x03
SERVER_STATUS_AUTOCOMMIT = 0x0002
SSL_REQUEST_LENGTH = 32  # capabilities, max packet size, character set, 23 filler bytes
UTF8MB4_GENERAL_CI = 45
MYSQL_TYPE_VAR_STRING = 0xFD
ER_ACCESS_DENIED_ERROR = 1045
MAX_CONNECTIONS = 32  # a client that retries forever must not make the server grow without bound


class _ClientClosed(Exception):
    """The client closed the connection."""


@dataclass
class ConnectionRecord:
    """What one client connection sent and how the exchange went.

    ``raw`` contains every byte read from the socket (TLS records included).
    ``plaintext`` contains the bytes the MySQL protocol layer saw: the bytes
    before TLS started plus the decrypted bytes after the TLS handshake.
    """

    raw: bytearray = field(default_factory=bytearray)
    plaintext: bytearray = field(default_factory=bytearray)
    client_requested_tls: bool = False
    tls_version: Optional[str] = None
    tls_cipher: Optional[str] = None
    tls_error: Optional[str] = None
    username: Optional[bytes] = None
    client_plugin: Optional[bytes] = None
    auth_responses: list[bytes] = field(default_factory=list)
    sent_auth_switch: bool = False
    error: Optional[str] = None


class _Channel:
    """One client socket, plain or TLS, that records what it reads."""

    def __init__(self, sock: socket.socket, record: ConnectionRecord) -> None:
        self._sock = sock
        self._record = record
        self._buffer = bytearray()
        self._tls: Optional[ssl.SSLObject] = None
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()

    def read_packet(self) -> tuple[int, bytes]:
        header = self._read_exact(4)
        length = int.from_bytes(header[:3], "little")
        return header[3], self._read_exact(length)

    def send_packet(self, sequence_id: int, payload: bytes) -> None:
        header = len(payload).to_bytes(3, "little") + bytes([sequence_id & 0xFF])
        self._send(header + payload)

    def start_tls(self, context: ssl.SSLContext) -> None:
        """Run the server side of a TLS handshake; raise ssl.SSLError if it fails."""
        # Bytes read past the SSLRequest already belong to the TLS handshake.
        self._incoming.write(bytes(self._buffer))
        self._buffer.clear()

        tls = context.wrap_bio(self._incoming, self._outgoing, server_side=True)
        while True:
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                self._flush_tls()
                self._incoming.write(self._recv_raw())
            except ssl.SSLError:
                self._flush_tls()  # deliver the alert, so the client sees why
                raise
        # Record success before flushing: a client that only wanted the certificate
        # may already have closed, and the TLS 1.3 session tickets then hit a closed socket.
        self._tls = tls
        self._record.tls_version = tls.version()
        cipher = tls.cipher()
        self._record.tls_cipher = cipher[0] if cipher else None
        self._flush_tls()

    def drain(self) -> None:
        """Read and record whatever the client still sends, until it closes or times out."""
        try:
            while True:
                if self._tls is not None:
                    self._fill_tls()
                else:
                    self._record.plaintext += self._recv_raw()
        except (_ClientClosed, OSError):
            return

    def _read_exact(self, count: int) -> bytes:
        while len(self._buffer) < count:
            if self._tls is not None:
                self._fill_tls()
            else:
                # Read no further than needed: the next bytes may start a TLS handshake.
                chunk = self._recv_raw(count - len(self._buffer))
                self._record.plaintext += chunk
                self._buffer += chunk
        data = bytes(self._buffer[:count])
        del self._buffer[:count]
        return data

    def _fill_tls(self) -> None:
        assert self._tls is not None
        while True:
            try:
                data = self._tls.read(65536)
            except ssl.SSLWantReadError:
                self._incoming.write(self._recv_raw())
                continue
            except ssl.SSLZeroReturnError:
                raise _ClientClosed() from None
            if not data:
                raise _ClientClosed()
            self._record.plaintext += data
            self._buffer += data
            return

    def _recv_raw(self, limit: int = 65536) -> bytes:
        data = self._sock.recv(limit)
        if not data:
            raise _ClientClosed()
        self._record.raw += data
        return data

    def _send(self, data: bytes) -> None:
        if self._tls is None:
            self._sock.sendall(data)
            return
        self._tls.write(data)
        self._flush_tls()

    def _flush_tls(self) -> None:
        pending = self._outgoing.read()
        if pending:
            self._sock.sendall(pending)


class FakeMySQLServer:
    """Threaded fake MySQL server on 127.0.0.1 that records every byte it receives.

    Args:
        mode: what the server offers (see the module docstring).
        clear_password_via: ``"handshake"`` names ``mysql_clear_password`` in
            the initial handshake (and follows up with an AuthSwitchRequest if
            the client's first response carries no password);
            ``"auth_switch"`` starts with ``mysql_native_password`` and then
            switches the client to ``mysql_clear_password``; ``"never"``
            takes the ``mysql_native_password`` response as it is (for tests
            that need a session without TLS and without a secret).
        auth_result: ``"error"`` replies to the password with ERR 1045
            (access denied). ``"ok"`` replies with OK, then replies OK to
            every command until the client quits, except a query for the
            ``Ssl_version`` status variable, which gets a result set with the
            negotiated TLS version and cipher (empty without TLS).
        timeout: seconds allowed for each socket operation.
    """

    host = "127.0.0.1"

    def __init__(
        self,
        mode: Mode = "no_tls",
        *,
        clear_password_via: ClearPasswordVia = "auth_switch",  # noqa: S107 - a mode, not a password
        auth_result: AuthResult = "error",
        timeout: float = 5.0,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; expected one of {MODES}")
        if clear_password_via not in ("handshake", "auth_switch", "never"):
            raise ValueError(f"unknown clear_password_via {clear_password_via!r}")
        if auth_result not in ("ok", "error"):
            raise ValueError(f"unknown auth_result {auth_result!r}")

        self.mode: Mode = mode
        self.clear_password_via: ClearPasswordVia = clear_password_via
        self.auth_result: AuthResult = auth_result
        self.timeout = timeout

        #: CA that tests may hand to the client; it issued the server
        #: certificate in ``tls_ok``, ``tls_wrong_host`` and ``tls_legacy``.
        self.ca = trustme.CA()
        self._directory = tempfile.mkdtemp(prefix="fake-mysql-")
        self.ca_file = os.path.join(self._directory, "ca.pem")
        self.ca.cert_pem.write_to_path(self.ca_file)

        self.certificate_der: Optional[bytes] = None
        self._server_context = self._make_server_context() if mode != "no_tls" else None

        self._records: list[ConnectionRecord] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._client_sockets: list[socket.socket] = []
        self._handlers: list[threading.Thread] = []
        self._listener: Optional[socket.socket] = None
        self._acceptor: Optional[threading.Thread] = None
        self.port = 0

    # --- lifecycle -------------------------------------------------------

    def start(self) -> FakeMySQLServer:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self.host, 0))
        listener.listen(8)
        listener.settimeout(0.05)  # accept() polls, so close() is noticed promptly
        self._listener = listener
        self.port = listener.getsockname()[1]

        self._acceptor = threading.Thread(
            target=self._accept_loop, name=f"fake-mysql-{self.port}", daemon=True
        )
        self._acceptor.start()
        return self

    def close(self) -> None:
        """Stop accepting, end every open connection and wait for the threads; idempotent."""
        self._stopping.set()
        with self._lock:
            sockets = list(self._client_sockets)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

        if self._acceptor is not None:
            self._acceptor.join(self.timeout)
        for handler in list(self._handlers):
            handler.join(self.timeout)
        if self._listener is not None:
            self._listener.close()
        shutil.rmtree(self._directory, ignore_errors=True)

    @property
    def running(self) -> bool:
        """True while the server thread or a connection thread is alive."""
        threads = [self._acceptor, *self._handlers]
        return any(thread is not None and thread.is_alive() for thread in threads)

    def __enter__(self) -> FakeMySQLServer:
        return self.start()

    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        traceback: Optional[TracebackType],
    ) -> None:
        self.close()

    # --- what was received ---------------------------------------------------

    @property
    def connections(self) -> list[ConnectionRecord]:
        """Records of the connections accepted so far, oldest first."""
        with self._lock:
            return list(self._records)

    @property
    def received(self) -> bytes:
        """Everything the protocol layer saw from all clients: plaintext and decrypted bytes."""
        return b"".join(bytes(record.plaintext) for record in self.connections)

    @property
    def raw_received(self) -> bytes:
        """Every byte read from all client sockets, TLS records included."""
        return b"".join(bytes(record.raw) for record in self.connections)

    def contains(self, secret: bytes | str) -> bool:
        """Tell whether ``secret`` reached the server in any readable form.

        True if it is in the bytes of one connection, either as read from the
        socket or as decrypted after a completed TLS handshake.
        """
        needle = secret.encode() if isinstance(secret, str) else secret
        return any(
            needle in record.raw or needle in record.plaintext for record in self.connections
        )

    # --- server side -------------------------------------------------------------

    def _make_server_context(self) -> ssl.SSLContext:
        issuer = trustme.CA() if self.mode == "tls_untrusted" else self.ca

        if self.mode == "tls_wrong_host":
            leaf = issuer.issue_cert(WRONG_HOST_NAME)
        else:
            leaf = issuer.issue_cert("localhost", "127.0.0.1", "::1")

        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        if self.mode == "tls_legacy":
            _allow_only_legacy_tls(context)
        leaf.configure_cert(context)
        self.certificate_der = ssl.PEM_cert_to_DER_cert(leaf.cert_chain_pems[0].bytes().decode())
        return context

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._stopping.is_set():
            try:
                client, _ = self._listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return

            with self._lock:
                if len(self._records) >= MAX_CONNECTIONS:
                    client.close()
                    continue
                record = ConnectionRecord()
                self._records.append(record)
                self._client_sockets.append(client)

            handler = threading.Thread(
                target=self._handle, args=(client, record), name=f"{self.port}-conn", daemon=True
            )
            self._handlers.append(handler)
            handler.start()

    def _handle(self, client: socket.socket, record: ConnectionRecord) -> None:
        client.settimeout(self.timeout)
        channel = _Channel(client, record)
        try:
            self._converse(channel, record)
            channel.drain()
        except ssl.SSLError as exc:
            record.tls_error = str(exc)
            channel.drain()
        except _ClientClosed:
            pass
        except (OSError, ValueError, IndexError, struct.error) as exc:
            record.error = f"{type(exc).__name__}: {exc}"
        finally:
            client.close()

    def _converse(self, channel: _Channel, record: ConnectionRecord) -> None:
        scramble = _scramble()
        channel.send_packet(0, self._handshake_packet(scramble))

        sequence_id, payload = channel.read_packet()
        if _is_ssl_request(payload):
            record.client_requested_tls = True
            if self._server_context is None:
                return  # the client asked for TLS that was not offered; it should not do that
            channel.start_tls(self._server_context)
            sequence_id, payload = channel.read_packet()

        response = _parse_handshake_response(payload)
        record.username = response.username
        record.client_plugin = response.plugin
        record.auth_responses.append(response.auth_data)

        if self._wants_switch(response):
            record.sent_auth_switch = True
            sequence_id += 1
            channel.send_packet(
                sequence_id, b"\xfe" + CLEAR_PASSWORD_PLUGIN + b"\0" + scramble + b"\0"
            )
            sequence_id, switch_response = channel.read_packet()
            record.auth_responses.append(switch_response)

        if self.auth_result == "error":
            channel.send_packet(sequence_id + 1, _err_packet(response.username))
            return

        channel.send_packet(sequence_id + 1, _ok_packet())
        self._answer_commands(channel, record)

    def _wants_switch(self, response: _HandshakeResponse) -> bool:
        if self.clear_password_via == "never":
            return False
        if self.clear_password_via == "auth_switch":
            return True
        # The handshake already asked for clear text; follow up only if no password came.
        return response.plugin != CLEAR_PASSWORD_PLUGIN or response.auth_data in (b"", b"\0")

    def _answer_commands(self, channel: _Channel, record: ConnectionRecord) -> None:
        while True:
            _, command = channel.read_packet()
            if not command or command[0] == COM_QUIT:
                return
            if command[0] == COM_QUERY and b"Ssl_version" in command:
                # What a server reports for SHOW SESSION STATUS ... 'Ssl_version', 'Ssl_cipher'.
                rows = [
                    ("Ssl_cipher", record.tls_cipher or ""),
                    ("Ssl_version", record.tls_version or ""),
                ]
                _send_result_set(channel, ("Variable_name", "Value"), rows)
                continue
            channel.send_packet(1, _ok_packet())

    def _handshake_packet(self, scramble: bytes) -> bytes:
        capabilities = BASE_CAPABILITIES | (CLIENT_SSL if self._server_context else 0)
        plugin = (
            CLEAR_PASSWORD_PLUGIN
            if self.clear_password_via == "handshake"
            else NATIVE_PASSWORD_PLUGIN
        )
        return b"".join(
            [
                b"\x0a",  # protocol version 10
                b"8.0.36-fake\0",
                struct.pack("<I", 1),  # connection id
                scramble[:8],
                b"\0",
                struct.pack("<H", capabilities & 0xFFFF),
                bytes([UTF8MB4_GENERAL_CI]),
                struct.pack("<H", SERVER_STATUS_AUTOCOMMIT),
                struct.pack("<H", capabilities >> 16),
                bytes([len(scramble) + 1]),
                b"\0" * 10,
                scramble[8:] + b"\0",
                plugin + b"\0",
            ]
        )


@dataclass(frozen=True)
class _HandshakeResponse:
    capabilities: int
    username: bytes
    auth_data: bytes
    plugin: Optional[bytes]


def _is_ssl_request(payload: bytes) -> bool:
    if len(payload) != SSL_REQUEST_LENGTH:
        return False
    (capabilities,) = struct.unpack_from("<I", payload)
    return bool(capabilities & CLIENT_SSL)


def _parse_handshake_response(payload: bytes) -> _HandshakeResponse:
    """Parse a HandshakeResponse41 packet."""
    (capabilities,) = struct.unpack_from("<I", payload)
    position = 32

    username, position = _read_null_terminated(payload, position)

    if capabilities & CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA:
        length, position = _read_length_encoded_int(payload, position)
        auth_data = payload[position : position + length]
        position += length
    elif capabilities & CLIENT_SECURE_CONNECTION:
        length = payload[position]
        auth_data = payload[position + 1 : position + 1 + length]
        position += 1 + length
    else:
        auth_data, position = _read_null_terminated(payload, position)

    if capabilities & CLIENT_CONNECT_WITH_DB and position < len(payload):
        _, position = _read_null_terminated(payload, position)

    plugin: Optional[bytes] = None
    if capabilities & CLIENT_PLUGIN_AUTH and position < len(payload):
        plugin, position = _read_null_terminated(payload, position)

    return _HandshakeResponse(capabilities, username, auth_data, plugin)


def _read_null_terminated(payload: bytes, position: int) -> tuple[bytes, int]:
    end = payload.index(b"\0", position)
    return payload[position:end], end + 1


def _read_length_encoded_int(payload: bytes, position: int) -> tuple[int, int]:
    first = payload[position]
    if first < 0xFB:
        return first, position + 1
    width = {0xFC: 2, 0xFD: 3, 0xFE: 8}[first]
    value = int.from_bytes(payload[position + 1 : position + 1 + width], "little")
    return value, position + 1 + width


def _scramble() -> bytes:
    # 20 random bytes without NUL, as a MySQL server sends.
    return bytes(secrets.choice(range(1, 128)) for _ in range(20))


def _ok_packet() -> bytes:
    return b"\x00\x00\x00" + struct.pack("<HH", SERVER_STATUS_AUTOCOMMIT, 0)


def _eof_packet() -> bytes:
    return b"\xfe" + struct.pack("<HH", 0, SERVER_STATUS_AUTOCOMMIT)


def _length_encoded_string(value: bytes) -> bytes:
    assert len(value) < 0xFB, "only short values are sent"
    return bytes([len(value)]) + value


def _column_definition(name: str) -> bytes:
    """Return a ColumnDefinition41 packet for a VARCHAR column of utf8mb4 text."""
    encoded = name.encode()
    return b"".join(
        [
            _length_encoded_string(b"def"),  # catalog
            _length_encoded_string(b""),  # schema
            _length_encoded_string(b""),  # table
            _length_encoded_string(b""),  # original table
            _length_encoded_string(encoded),
            _length_encoded_string(encoded),  # original name
            b"\x0c",  # length of the fixed-length fields that follow
            struct.pack("<HIBHB", UTF8MB4_GENERAL_CI, 1024, MYSQL_TYPE_VAR_STRING, 0, 0),
            b"\0\0",
        ]
    )


def _send_result_set(
    channel: _Channel, columns: tuple[str, ...], rows: list[tuple[str, ...]]
) -> None:
    """Send a text-protocol result set with EOF packets (the client lacks CLIENT_DEPRECATE_EOF)."""
    packets = [bytes([len(columns)])]
    packets += [_column_definition(name) for name in columns]
    packets.append(_eof_packet())
    packets += [b"".join(_length_encoded_string(value.encode()) for value in row) for row in rows]
    packets.append(_eof_packet())
    for sequence_id, payload in enumerate(packets, start=1):
        channel.send_packet(sequence_id, payload)


def _err_packet(username: bytes) -> bytes:
    message = b"Access denied for user '" + username + b"'@'localhost' (using password: YES)"
    return b"\xff" + struct.pack("<H", ER_ACCESS_DENIED_ERROR) + b"#28000" + message


def _allow_only_legacy_tls(context: ssl.SSLContext) -> None:
    # SECLEVEL 0 lets OpenSSL 3 use TLS 1.0/1.1 at all; the system policy may still forbid it.
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # deprecated is the point here
        context.minimum_version = ssl.TLSVersion.TLSv1
        context.maximum_version = ssl.TLSVersion.TLSv1_1


def legacy_tls_available() -> bool:
    """Tell whether this Python and OpenSSL can run the ``tls_legacy`` mode."""
    try:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        _allow_only_legacy_tls(context)
    except (ssl.SSLError, ValueError):
        return False
    return bool(ssl.HAS_TLSv1_1)
