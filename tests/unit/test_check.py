"""``securemysql check`` and ``securemysql token`` without the sandbox.

The TLS stage runs against the fake MySQL server from tests/fakeserver.py, which
records every byte it receives, so these tests also show that the stage sends
nothing but the SSLRequest packet. Nothing here reaches an identity endpoint:
runs end before the token stage.
"""

from __future__ import annotations

import io
import json
import logging
import socket
import struct
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import jsonschema
import pytest
import trustme
from cryptography import x509

from securemysql.check import certinfo, login, network, posture, runner, tlsprobe
from securemysql.check.model import (
    FAIL,
    NOT_VISIBLE,
    PASS,
    SKIPPED,
    STAGES,
    WARN,
    CheckOptions,
    CheckReport,
    Fact,
    StageResult,
)
from securemysql.check.report import (
    load_schema,
    render_json,
    render_text,
    to_json_dict,
    use_colour,
)
from securemysql.check.stage import FactRecorder, RunState, StageFailed
from securemysql.cli import main
from securemysql.tokens import CLOUD_SCOPES, resolve_scope
from tests.fakeserver import FakeMySQLServer

ENVIRONMENT = (
    "SECUREMYSQL_HOST",
    "SECUREMYSQL_PORT",
    "SECUREMYSQL_USER",
    "SECUREMYSQL_DATABASE",
    "SECUREMYSQL_DRIVER",
    "SECUREMYSQL_SSL_CA",
    "SECUREMYSQL_CLIENT_ID",
    "SECUREMYSQL_SCOPE",
    "SECUREMYSQL_TIMEOUT",
    "SECUREMYSQL_JSON",
    "SECUREMYSQL_STRICT",
)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (*ENVIRONMENT, "NO_COLOR", "TERM"):
        monkeypatch.delenv(name, raising=False)


def validate(document: dict[str, Any]) -> None:
    validator = jsonschema.Draft202012Validator(
        load_schema(), format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )
    validator.validate(document)


def run_json(capsys: pytest.CaptureFixture[str], *arguments: str) -> tuple[int, dict[str, Any]]:
    code = main(["check", "--json", *arguments])
    document = json.loads(capsys.readouterr().out)
    validate(document)
    return code, document


def stage(document: dict[str, Any], name: str) -> dict[str, Any]:
    return next(item for item in document["stages"] if item["name"] == name)


def closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# --- MySQL protocol pieces ------------------------------------------------------------


def greeting_payload(*, capabilities: int, version: bytes = b"8.0.36") -> bytes:
    return (
        b"\x0a"
        + version
        + b"\x00"
        + struct.pack("<I", 77)
        + b"12345678"
        + b"\x00"
        + struct.pack("<H", capabilities & 0xFFFF)
        + bytes([45])
        + struct.pack("<H", 2)
        + struct.pack("<H", capabilities >> 16)
        + b"\x15"
        + b"\x00" * 10
    )


def test_greeting_parsed_with_tls_flag() -> None:
    greeting = tlsprobe.parse_greeting(greeting_payload(capabilities=(1 << 11) | (1 << 19)))

    assert greeting.server_version == "8.0.36"
    assert greeting.connection_id == 77
    assert greeting.offers_tls
    assert greeting.capabilities & (1 << 19)


def test_greeting_without_tls_flag() -> None:
    greeting = tlsprobe.parse_greeting(greeting_payload(capabilities=1 << 9))

    assert not greeting.offers_tls


def test_error_packet_instead_of_greeting() -> None:
    payload = b"\xff" + struct.pack("<H", 1040) + b"Too many connections"

    with pytest.raises(tlsprobe.ServerErrorPacket) as raised:
        tlsprobe.parse_greeting(payload)

    assert raised.value.error_number == 1040
    assert raised.value.message == "Too many connections"


def test_non_mysql_greeting_rejected() -> None:
    with pytest.raises(ValueError, match="not a MySQL protocol version 10 greeting"):
        tlsprobe.parse_greeting(b"HTTP/1.1 400 Bad Request\r\n")


def test_ssl_request_has_no_credentials() -> None:
    packet = tlsprobe.ssl_request_packet()

    assert len(packet) == 4 + 32
    assert int.from_bytes(packet[:3], "little") == 32
    assert packet[3] == 1  # sequence id after the greeting
    capabilities, _max_packet, charset = struct.unpack_from("<IIB", packet, 4)
    assert capabilities & (1 << 11)  # CLIENT_SSL
    assert charset == 45
    assert packet[13:] == b"\x00" * 23


# --- Name resolution helpers -----------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.4", "private"),
        ("192.168.10.20", "private"),
        ("fd12:3456::1", "private"),
        ("::ffff:10.0.0.5", "private"),
        ("20.62.1.5", "public"),
        ("2603:1030::5", "public"),
        ("100.64.0.1", "special"),
    ],
)
def test_address_kinds(address: str, kind: str) -> None:
    assert network.classify_address(address) == kind


def test_endpoint_kind_of_addresses() -> None:
    assert network.endpoint_kind(["private", "private"]) == "private"
    assert network.endpoint_kind(["public"]) == "public"
    assert network.endpoint_kind(["private", "public"]) == "mixed"


def resolve_to_loopback(monkeypatch: pytest.MonkeyPatch, host: str) -> None:
    """Make the resolution stage find ``host`` at 127.0.0.1 without asking a DNS server."""

    def loopback_lookup(*_args: object, **_kwargs: object) -> list[Any]:
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, host, ("127.0.0.1", 3306))]

    monkeypatch.setattr(network.socket, "getaddrinfo", loopback_lookup)


@pytest.mark.parametrize(
    ("host", "cloud", "scope_text"),
    [
        ("myserver.mysql.database.azure.com", "public", "for the public cloud"),
        ("MyServer.MySQL.Database.Azure.com.", "public", "for the public cloud"),
        ("myserver.mysql.database.chinacloudapi.cn", "china", "for the china cloud"),
        ("myserver.mysql.database.usgovcloudapi.net", "usgovernment", "for the usgovernment cloud"),
        ("db.example.com", None, "public cloud, the default"),
    ],
)
def test_resolution_records_cloud_and_scope(
    monkeypatch: pytest.MonkeyPatch, host: str, cloud: str | None, scope_text: str
) -> None:
    resolve_to_loopback(monkeypatch, host)
    state = RunState(options=CheckOptions(host=host, user="app"))
    facts = FactRecorder()

    network.run_resolution(state, facts)

    recorded = {fact.key: fact for fact in facts.facts}
    expected_scope = CLOUD_SCOPES[cloud or "public"]
    assert recorded["cloud"].value == cloud
    assert recorded["scope"].value == expected_scope
    assert state.scope == expected_scope
    assert scope_text in recorded["scope"].text


def test_resolution_scope_option_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    host = "myserver.mysql.database.chinacloudapi.cn"

    resolve_to_loopback(monkeypatch, host)
    state = RunState(options=CheckOptions(host=host, user="app", scope="api://custom/.default"))
    facts = FactRecorder()

    network.run_resolution(state, facts)

    recorded = {fact.key: fact for fact in facts.facts}
    assert recorded["cloud"].value == "china"
    assert recorded["scope"].value == "api://custom/.default"
    assert "from --scope" in recorded["scope"].text


# --- Certificates ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("hostname", "names", "expected"),
    [
        ("db.example.com", ["db.example.com"], True),
        ("DB.Example.com.", ["db.example.com"], True),
        ("db.example.com", ["*.example.com"], True),
        ("a.db.example.com", ["*.example.com"], False),
        ("example.com", ["*.example.com"], False),
        ("db.example.com", ["other.example.com", "db.example.com"], True),
        ("127.0.0.1", ["localhost", "127.0.0.1"], True),
        ("127.0.0.1", ["localhost"], False),
        ("::1", ["0:0:0:0:0:0:0:1"], True),
        ("localhost", ["127.0.0.1"], False),
        ("db.example.com", [], False),
    ],
)
def test_hostname_matching(hostname: str, names: list[str], expected: bool) -> None:
    assert certinfo.hostname_matches(hostname, names) is expected


def load_chain(leaf: trustme.LeafCert) -> list[x509.Certificate]:
    return [x509.load_pem_x509_certificate(blob.bytes()) for blob in leaf.cert_chain_pems]


def load_ca(ca: trustme.CA) -> x509.Certificate:
    return x509.load_pem_x509_certificate(ca.cert_pem.bytes())


NOW = datetime.now(timezone.utc)


def test_chain_through_intermediate_verifies() -> None:
    root = trustme.CA()
    leaf = root.create_child_ca().issue_cert("db.example.com")

    chain, error = certinfo.build_chain(load_chain(leaf), [load_ca(root)], NOW)

    assert error is None
    assert len(chain) == 3
    assert chain[-1] == load_ca(root)


def test_chain_from_other_ca_fails() -> None:
    leaf = trustme.CA().issue_cert("db.example.com")

    chain, error = certinfo.build_chain(load_chain(leaf), [load_ca(trustme.CA())], NOW)

    assert error is not None
    assert "no trusted CA issued" in error
    assert len(chain) == 1


def test_expired_leaf_fails_chain_check() -> None:
    root = trustme.CA()
    leaf = root.issue_cert(
        "db.example.com",
        not_before=NOW - timedelta(days=30),
        not_after=NOW - timedelta(days=1),
    )

    _chain, error = certinfo.build_chain(load_chain(leaf), [load_ca(root)], NOW)

    assert error is not None
    assert "outside its validity period" in error


def test_certificate_description() -> None:
    leaf = trustme.CA().issue_cert(
        "db.example.com", "10.0.0.4", not_after=NOW + timedelta(days=40, hours=1)
    )
    certificate = load_chain(leaf)[0]

    described = certinfo.describe_certificate(certificate, NOW)

    assert described["names"] == ["db.example.com", "10.0.0.4"]
    assert described["days_until_expiry"] == 40
    assert len(described["sha256"].split(":")) == 32
    assert described["issuer"] == certificate.issuer.rfc4514_string()


# --- Posture ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("function", "variables", "status"),
    [
        (posture.require_secure_transport_item, {"require_secure_transport": "ON"}, PASS),
        (posture.require_secure_transport_item, {"require_secure_transport": "OFF"}, FAIL),
        (posture.require_secure_transport_item, {}, NOT_VISIBLE),
        (posture.tls_version_item, {"tls_version": "TLSv1.2,TLSv1.3"}, PASS),
        (posture.tls_version_item, {"tls_version": "TLSv1.2"}, PASS),
        (posture.tls_version_item, {"tls_version": "TLSv1.1,TLSv1.2"}, FAIL),
        (posture.tls_version_item, {"tls_version": "TLSv1,TLSv1.1,TLSv1.2"}, FAIL),
        (posture.tls_version_item, {"tls_version": ""}, NOT_VISIBLE),
        (posture.entra_only_item, {"aad_auth_only": "ON"}, PASS),
        (posture.entra_only_item, {"aad_auth_only": "OFF"}, FAIL),
        (posture.entra_only_item, {}, NOT_VISIBLE),
        (posture.audit_log_item, {"audit_log_enabled": "ON"}, PASS),
        (posture.audit_log_item, {"audit_log_enabled": "OFF"}, FAIL),
        (posture.audit_log_item, {}, NOT_VISIBLE),
    ],
)
def test_posture_item_status(function: Any, variables: dict[str, str], status: str) -> None:
    item = function(variables)

    assert item.status == status
    if status != PASS:
        assert item.where_to_check is not None
        assert "az mysql flexible-server parameter show" in item.where_to_check


def test_posture_item_read_error_named() -> None:
    item = posture.audit_log_item({}, "access denied; you need the PROCESS privilege")

    assert item.status == NOT_VISIBLE
    assert "access denied" in item.detail


@pytest.mark.parametrize(
    ("kind", "status"),
    [("private", PASS), ("public", FAIL), ("loopback", NOT_VISIBLE), ("mixed", NOT_VISIBLE)],
)
def test_private_endpoint_item(kind: str, status: str) -> None:
    assert posture.private_endpoint_item(kind).status == status


def test_invisible_items_say_where_to_check() -> None:
    names = {item.name for item in posture.INVISIBLE_ITEMS}

    assert names == {"threat_protection", "customer_managed_keys", "firewall_rules"}
    for item in posture.INVISIBLE_ITEMS:
        assert item.status == NOT_VISIBLE
        assert item.value is None
        assert item.where_to_check is not None
        assert "az mysql flexible-server" in item.where_to_check


# --- 1045 causes --------------------------------------------------------------------------


def test_single_server_user_form_flagged() -> None:
    state = RunState(options=CheckOptions(host="srv.mysql.database.azure.com", user="app@srv"))
    state.scope = resolve_scope(host=state.options.host)

    causes = login._access_denied_causes(state)

    assert len(causes) == 4
    assert causes[0].startswith("No MySQL user 'app@srv' exists")
    assert "Flexible Server expects 'app'" in causes[3]


def test_upn_user_not_taken_for_single_server_form() -> None:
    state = RunState(options=CheckOptions(host="h", user="alice@contoso.com"))

    causes = login._access_denied_causes(state)

    assert "unlikely here" in causes[3]


# --- Credential name from azure-identity's log -------------------------------------------


@pytest.fixture
def azure_logger() -> Iterator[tuple[logging.Logger, list[logging.LogRecord]]]:
    logger = logging.getLogger("azure.identity._credentials.chained")
    records: list[logging.LogRecord] = []

    class ListHandler(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = ListHandler()
    previous_level, previous_propagate = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING)
    logger.propagate = False
    yield logger, records
    logger.removeHandler(handler)
    logger.setLevel(previous_level)
    logger.propagate = previous_propagate


def test_credential_name_read_from_info_record(
    azure_logger: tuple[logging.Logger, list[logging.LogRecord]],
) -> None:
    logger, records = azure_logger

    with login._credential_names() as names:
        logger.info("%s acquired a token from %s", "DefaultAzureCredential", "AzureCliCredential")
        logger.warning("a warning passes")

    assert names == ["AzureCliCredential"]
    assert [record.getMessage() for record in records] == ["a warning passes"]
    assert logger.level == logging.WARNING
    assert logger.filters == []


# --- Reports ------------------------------------------------------------------------------


def sample_report(*, failed: bool) -> CheckReport:
    options = CheckOptions(host="db.example.com", user="app", database="appdb")
    resolution = StageResult(
        spec=STAGES[0],
        status=PASS,
        duration_ms=0.4,
        summary="db.example.com resolves to 1 address (private)",
        facts=(
            Fact(
                "addresses", "addresses", [{"address": "10.0.0.4", "kind": "private"}], "10.0.0.4"
            ),
            Fact("endpoint", "endpoint", "private", "private addresses only"),
        ),
    )
    tcp = StageResult(
        spec=STAGES[1],
        status=FAIL if failed else PASS,
        duration_ms=10.0,
        summary="connection to port 3306 timed out" if failed else "connected",
        problem=(
            StageFailed("timed out", cause="No answer.", fix="Open the firewall.").problem
            if failed
            else None
        ),
    )
    rest = [
        StageResult(
            spec=spec,
            status=SKIPPED if failed else PASS,
            duration_ms=None if failed else 1.0,
            summary="",
        )
        for spec in STAGES[2:]
    ]
    if not failed:
        rest[-1] = StageResult(spec=STAGES[6], status=WARN, duration_ms=1.0, summary="1 fail")
    return CheckReport(
        options=options,
        generated_at="2026-01-01T00:00:00+00:00",
        stages=(resolution, tcp, *rest),
        version="0.1.0",
    )


def test_report_exit_codes() -> None:
    assert sample_report(failed=True).exit_code == 11
    assert sample_report(failed=False).exit_code == 0


def test_json_report_matches_schema() -> None:
    for failed in (True, False):
        document = to_json_dict(sample_report(failed=failed))
        validate(document)
        assert document["schema_version"] == 1


def test_schema_rejects_failed_stage_without_problem() -> None:
    document = to_json_dict(sample_report(failed=True))
    document["stages"][1]["problem"] = None

    with pytest.raises(jsonschema.ValidationError):
        validate(document)


def test_schema_rejects_unknown_detail() -> None:
    document = to_json_dict(sample_report(failed=False))
    document["stages"][0]["details"]["token"] = "x"

    with pytest.raises(jsonschema.ValidationError):
        validate(document)


def test_text_report_marks_and_problem() -> None:
    text = render_text(sample_report(failed=True), colour=False, width=100)

    assert "[PASS] 1. Name resolution" in text
    assert "[FAIL] 2. TCP connect" in text
    assert "[SKIP] 3. TLS" in text
    assert "cause                No answer." in text
    assert "fix                  Open the firewall." in text
    assert "Exit code 11." in text
    assert "\033[" not in text


def test_text_report_colour_codes() -> None:
    text = render_text(sample_report(failed=True), colour=True, width=100)

    assert "\033[32m[PASS]\033[0m" in text
    assert "\033[31m[FAIL]\033[0m" in text


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_colour_only_on_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    assert use_colour(FakeTerminal())
    assert not use_colour(io.StringIO())

    monkeypatch.setenv("NO_COLOR", "1")
    assert not use_colour(FakeTerminal())

    monkeypatch.setenv("NO_COLOR", "")
    monkeypatch.setenv("TERM", "dumb")
    assert not use_colour(FakeTerminal())


def test_json_rendering_is_one_document() -> None:
    text = render_json(sample_report(failed=True))

    assert json.loads(text)["result"]["failed_stage"] == "tcp"
    assert text.endswith("}\n")


# --- Command line ---------------------------------------------------------------------------


def test_check_help_lists_environment_and_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as raised:
        main(["check", "--help"])

    out = capsys.readouterr().out
    assert raised.value.code == 0
    for name in ENVIRONMENT:
        assert name in out
    for code in ("10", "11", "12", "13", "14", "15", "16"):
        assert f"  {code}  stage" in out
    assert "--strict" in out


def test_token_help_documents_client_options(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["token", "--help"])

    out = capsys.readouterr().out
    for option in (
        "--enable-cleartext-plugin",
        "--ssl-ca",
        "--ssl-verify-server-cert",
        "MYSQL_PWD",
    ):
        assert option in out


def test_missing_host_is_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as raised:
        main(["check", "--user", "app"])

    assert raised.value.code == 2
    assert "--host" in capsys.readouterr().err


def test_invalid_port_from_environment(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SECUREMYSQL_PORT", "99999")

    with pytest.raises(SystemExit) as raised:
        main(["check", "--host", "127.0.0.1", "--user", "app"])

    assert raised.value.code == 2
    assert "port must be from 1 to 65535" in capsys.readouterr().err


def test_invalid_boolean_environment(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SECUREMYSQL_JSON", "maybe")

    code = main(["check", "--host", "127.0.0.1", "--user", "app"])

    assert code == 2
    assert "SECUREMYSQL_JSON" in capsys.readouterr().err


def test_missing_ca_file_is_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["check", "--host", "127.0.0.1", "--user", "app", "--ssl-ca", "/no/such/ca.pem"])

    assert code == 2
    assert "CA file not found: /no/such/ca.pem" in capsys.readouterr().err


def test_unresolvable_host_from_environment(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def fail_lookup(*_args: object, **_kwargs: object) -> list[Any]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    # No real lookup: a name that does not exist would be sent to the DNS server.
    monkeypatch.setattr(network.socket, "getaddrinfo", fail_lookup)
    monkeypatch.setenv("SECUREMYSQL_HOST", "nosuchserver.mysql.database.azure.com")
    monkeypatch.setenv("SECUREMYSQL_USER", "app")
    monkeypatch.setenv("SECUREMYSQL_JSON", "yes")

    code = main(["check"])
    document = json.loads(capsys.readouterr().out)

    validate(document)
    assert code == 10
    resolution = stage(document, "resolution")
    assert resolution["status"] == FAIL
    assert "nosuchserver.mysql.database.azure.com" in resolution["problem"]["cause"]
    assert "privatelink.mysql.database.azure.com" in resolution["problem"]["fix"]
    assert resolution["details"]["cloud"] == "public"
    assert [item["status"] for item in document["stages"][1:]] == [SKIPPED] * 6


def test_refused_port_fails_tcp_stage(capsys: pytest.CaptureFixture[str]) -> None:
    port = closed_port()

    code, document = run_json(capsys, "--host", "127.0.0.1", "--port", str(port), "--user", "app")

    assert code == 11
    tcp = stage(document, "tcp")
    assert tcp["details"]["failed_addresses"] == [
        {"address": "127.0.0.1", "error": "connection refused"}
    ]
    assert f"127.0.0.1:{port}" in tcp["problem"]["cause"]
    assert "server is running" in tcp["problem"]["fix"]
    assert stage(document, "resolution")["details"]["endpoint"] == "loopback"


def test_unexpected_error_reported_as_stage_failure(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def broken(state: RunState, facts: FactRecorder) -> None:
        raise KeyError("missing piece")

    monkeypatch.setitem(runner._FUNCTIONS, "tcp", broken)

    code, document = run_json(capsys, "--host", "127.0.0.1", "--user", "app")

    assert code == 11
    assert "Unexpected KeyError" in stage(document, "tcp")["problem"]["cause"]


# --- TLS stage against the fake server -----------------------------------------------------


def no_credentials_sent(server: FakeMySQLServer) -> None:
    assert server.connections, "the check never connected"
    for record in server.connections:
        assert record.username is None
        assert record.auth_responses == []
        assert bytes(record.plaintext) in (b"", tlsprobe.ssl_request_packet())


def test_tls_stage_passes_against_trusted_server() -> None:
    with FakeMySQLServer("tls_ok") as server:
        state = RunState(
            options=CheckOptions(
                host="127.0.0.1", port=server.port, user="app", ssl_ca=server.ca_file
            )
        )
        facts = FactRecorder()
        network.run_resolution(state, FactRecorder())
        network.run_tcp(state, FactRecorder())
        tlsprobe.run_tls(state, facts)
        state.close()

        values = {fact.key: fact.value for fact in facts.facts}
        assert values["chain_verified"] is True
        assert values["hostname_verified"] is True
        assert values["protocol"] in ("TLSv1.2", "TLSv1.3")
        assert values["chain"]["source"] == "verified"
        assert values["certificate"]["names"] == ["localhost", "127.0.0.1", "::1"]
        no_credentials_sent(server)
        assert len(server.connections) == 1


def test_tls_stage_rejects_untrusted_certificate(capsys: pytest.CaptureFixture[str]) -> None:
    with FakeMySQLServer("tls_untrusted") as server:
        code, document = run_json(
            capsys,
            "--host", "127.0.0.1", "--port", str(server.port), "--user", "app",
            "--ssl-ca", server.ca_file,
        )  # fmt: skip

        no_credentials_sent(server)
        assert len(server.connections) == 2  # the verified attempt and the certificate read

    tls = stage(document, "tls")
    assert code == 12
    assert tls["details"]["chain_verified"] is False
    assert tls["details"]["hostname_verified"] is True
    assert tls["details"]["chain"]["source"] == "presented"
    assert server.ca_file in tls["problem"]["cause"]
    assert "--ssl-ca" in tls["problem"]["fix"]


def test_tls_stage_rejects_wrong_host(capsys: pytest.CaptureFixture[str]) -> None:
    with FakeMySQLServer("tls_wrong_host") as server:
        code, document = run_json(
            capsys,
            "--host", "127.0.0.1", "--port", str(server.port), "--user", "app",
            "--ssl-ca", server.ca_file,
        )  # fmt: skip
        no_credentials_sent(server)

    tls = stage(document, "tls")
    assert code == 12
    assert tls["details"]["chain_verified"] is True
    assert tls["details"]["hostname_verified"] is False
    assert tls["details"]["certificate"]["names"] == ["db.other.invalid"]
    assert "does not name '127.0.0.1'" in tls["problem"]["cause"]
    assert "db.other.invalid" in tls["problem"]["cause"]


def test_tls_stage_rejects_server_without_tls(capsys: pytest.CaptureFixture[str]) -> None:
    with FakeMySQLServer("no_tls") as server:
        code, document = run_json(
            capsys, "--host", "127.0.0.1", "--port", str(server.port), "--user", "app"
        )
        no_credentials_sent(server)

    tls = stage(document, "tls")
    assert code == 12
    assert tls["details"]["tls_offered"] is False
    assert "does not offer TLS" in tls["problem"]["cause"]
    assert stage(document, "token")["status"] == SKIPPED


def test_tenant_cause_when_audience_matches() -> None:
    from securemysql.check.login import _tenant_or_audience_cause

    audience = "https://ossrdbms-aad.database.windows.net"

    matching = _tenant_or_audience_cause({"tid": "t-1", "aud": audience}, audience)
    other = _tenant_or_audience_cause({"tid": "t-1", "aud": "https://x"}, audience)

    assert "only the tenant can be wrong" in matching
    assert "t-1" in matching
    assert "another tenant or audience" in other
    assert "https://x" in other
