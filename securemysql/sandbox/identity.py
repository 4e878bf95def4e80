"""Loopback managed-identity endpoint in the App Service form.

``azure-identity``'s ``ManagedIdentityCredential`` calls it when the process has
``IDENTITY_ENDPOINT`` and ``IDENTITY_HEADER`` set: ``GET <endpoint>?api-version=
2019-08-01&resource=<resource>[&client_id=<id>]`` with the header
``X-IDENTITY-HEADER: <secret>``, and it expects JSON with ``access_token``,
``expires_on`` (epoch seconds as a string), ``resource`` and ``token_type``.

Faults can be injected to test clients: HTTP 500 and 429, a delay, malformed
JSON, a token for the wrong audience and an already-expired token.
"""

from __future__ import annotations

import contextlib
import enum
import json
import logging
import secrets
import threading
import time
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Optional
from urllib.parse import parse_qs, urlsplit

from securemysql.sandbox.authority import AZURE_MYSQL_AUDIENCE, Identity, TokenAuthority

logger = logging.getLogger("securemysql.sandbox.identity")

TOKEN_PATH = "/msi/token"


class Fault(enum.Enum):
    """Faults the endpoint can inject into its responses."""

    HTTP_500 = "http500"
    HTTP_429 = "http429"
    DELAY = "delay"
    MALFORMED_JSON = "malformed_json"
    WRONG_AUDIENCE = "wrong_audience"
    EXPIRED_TOKEN = "expired_token"


@dataclass
class _ActiveFault:
    fault: Fault
    remaining: Optional[int]
    until: Optional[float]
    delay: float


class IdentityEndpoint:
    """Thread-safe HTTP server that issues sandbox tokens to ``azure-identity``.

    ``identities`` maps a client id to a user-assigned identity; requests
    without a client id get ``system_identity``.
    """

    def __init__(
        self,
        authority: TokenAuthority,
        system_identity: Identity,
        user_assigned: Optional[dict[str, Identity]] = None,
        token_lifetime: float = 3600.0,
        bind_address: str = "127.0.0.1",
        port: int = 0,
        advertised_host: str = "127.0.0.1",
    ) -> None:
        self.authority = authority
        self._advertised_host = advertised_host
        self.system_identity = system_identity
        self.user_assigned = dict(user_assigned or {})
        self.secret = secrets.token_urlsafe(24)
        self._lock = threading.Lock()
        self._token_lifetime = token_lifetime
        self._fault: Optional[_ActiveFault] = None
        self._status_counts: Counter[int] = Counter()
        self._server = ThreadingHTTPServer((bind_address, port), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="securemysql-sandbox-identity", daemon=True
        )

    # --- lifecycle -------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    @property
    def url(self) -> str:
        port = self._server.server_address[1]
        return f"http://{self._advertised_host}:{port}{TOKEN_PATH}"

    def environment(self) -> dict[str, str]:
        """Environment variables that point ``azure-identity`` at this endpoint."""
        return {
            "IDENTITY_ENDPOINT": self.url,
            "IDENTITY_HEADER": self.secret,
            "AZURE_TOKEN_CREDENTIALS": "ManagedIdentityCredential",
        }

    # --- controls --------------------------------------------------------

    @property
    def token_lifetime(self) -> float:
        with self._lock:
            return self._token_lifetime

    @token_lifetime.setter
    def token_lifetime(self, seconds: float) -> None:
        if seconds <= 0:
            raise ValueError(f"token_lifetime must be positive seconds, got {seconds!r}")
        with self._lock:
            self._token_lifetime = seconds

    @property
    def request_count(self) -> int:
        """Token requests received, faulty responses included."""
        with self._lock:
            return sum(self._status_counts.values())

    def status_counts(self) -> dict[int, int]:
        """Requests received per HTTP status returned."""
        with self._lock:
            return dict(self._status_counts)

    def reset_counts(self) -> None:
        with self._lock:
            self._status_counts.clear()

    def inject_fault(
        self,
        fault: Fault | str,
        *,
        count: Optional[int] = None,
        duration: Optional[float] = None,
        delay: float = 30.0,
    ) -> None:
        """Respond to the next ``count`` requests, or all for ``duration`` seconds, with ``fault``.

        With neither limit the fault stays until ``clear_fault()``. ``delay`` is the
        response delay in seconds for ``Fault.DELAY``.
        """
        active = _ActiveFault(
            fault=Fault(fault),
            remaining=count,
            until=None if duration is None else time.monotonic() + duration,
            delay=delay,
        )
        with self._lock:
            self._fault = active

    def clear_fault(self) -> None:
        with self._lock:
            self._fault = None

    # --- request handling ------------------------------------------------

    def _take_fault(self) -> Optional[_ActiveFault]:
        with self._lock:
            active = self._fault
            if active is None:
                return None
            if active.until is not None and time.monotonic() >= active.until:
                self._fault = None
                return None
            if active.remaining is not None:
                active.remaining -= 1
                if active.remaining <= 0:
                    self._fault = None
            return active

    def _count(self, status: int) -> None:
        with self._lock:
            self._status_counts[status] += 1

    def _identity_for(self, query: dict[str, list[str]]) -> Optional[Identity]:
        client_ids = query.get("client_id")
        if not client_ids:
            return self.system_identity
        return self.user_assigned.get(client_ids[0])

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                status, body = endpoint._answer(self)
                endpoint._count(status)
                payload = body.encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                # The client may have given up already, for example after its own time-out.
                with contextlib.suppress(OSError):
                    self.wfile.write(payload)

            def log_message(self, format: str, *args: object) -> None:
                logger.debug("identity endpoint: " + format, *args)

        return Handler

    def _answer(self, request: BaseHTTPRequestHandler) -> tuple[int, str]:
        parts = urlsplit(request.path)
        query = parse_qs(parts.query)
        if parts.path != TOKEN_PATH:
            return 404, json.dumps({"error": "not_found"})
        if request.headers.get("X-IDENTITY-HEADER") != self.secret:
            return 401, json.dumps({"error": "invalid X-IDENTITY-HEADER"})

        resource = (query.get("resource") or [""])[0]
        identity = self._identity_for(query)
        if identity is None:
            message = "No managed identity with that client_id is assigned to this resource."
            return 400, json.dumps({"error": "invalid_request", "error_description": message})

        fault = self._take_fault()
        if fault is not None:
            answer = self._faulty_answer(fault, identity, resource)
            if answer is not None:
                return answer

        return 200, self._token_body(identity, resource, audience=resource or None)

    def _faulty_answer(
        self, fault: _ActiveFault, identity: Identity, resource: str
    ) -> Optional[tuple[int, str]]:
        logger.info("identity endpoint injects fault %s", fault.fault.value)
        if fault.fault is Fault.HTTP_500:
            return 500, json.dumps({"error": "internal_error"})
        if fault.fault is Fault.HTTP_429:
            return 429, json.dumps({"error": "too_many_requests"})
        if fault.fault is Fault.MALFORMED_JSON:
            return 200, '{"access_token": "truncated'
        if fault.fault is Fault.WRONG_AUDIENCE:
            return 200, self._token_body(
                identity, resource, audience="https://management.azure.com"
            )
        if fault.fault is Fault.EXPIRED_TOKEN:
            return 200, self._token_body(identity, resource, lifetime=-120.0)
        time.sleep(fault.delay)
        return None

    def _token_body(
        self,
        identity: Identity,
        resource: str,
        *,
        audience: Optional[str] = None,
        lifetime: Optional[float] = None,
    ) -> str:
        token, expires_on = self.authority.mint(
            identity,
            lifetime=self.token_lifetime if lifetime is None else lifetime,
            audience=audience or AZURE_MYSQL_AUDIENCE,
        )
        return json.dumps(
            {
                "access_token": token,
                "expires_on": str(expires_on),
                "resource": resource,
                "token_type": "Bearer",
                "client_id": identity.client_id or "",
            }
        )
