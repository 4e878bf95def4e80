"""Packaging and container files stay consistent with the code."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from securemysql.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]


def _entrypoint() -> list[str]:
    text = (ROOT / "docker" / "sandbox.Dockerfile").read_text()
    match = re.search(r"^ENTRYPOINT (\[.*?\])$", text.replace("\\\n", ""), re.MULTILINE | re.DOTALL)
    assert match is not None
    arguments: list[str] = json.loads(match.group(1))
    return arguments


def test_dockerfile_entrypoint_parses_with_cli() -> None:
    arguments = _entrypoint()

    parsed = build_parser().parse_args(arguments[1:])

    assert arguments[0].endswith("/securemysql")
    assert parsed.sandbox_command == "up"
    assert parsed.foreground
    assert parsed.bind_address == "0.0.0.0"  # noqa: S104 - inside the container only
    assert parsed.export_dir == "/export"


def test_compose_ports_match_entrypoint() -> None:
    compose = (ROOT / "docker-compose.yml").read_text()
    parsed = build_parser().parse_args(_entrypoint()[1:])

    assert f"127.0.0.1:{parsed.port}:{parsed.port}" in compose
    assert f"127.0.0.1:{parsed.identity_port}:{parsed.identity_port}" in compose


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose not installed")
def test_docker_compose_config_is_valid() -> None:
    result = subprocess.run(
        ["docker-compose", "-f", str(ROOT / "docker-compose.yml"), "config"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip

    assert result.returncode == 0, result.stderr
    assert "docker/sandbox.Dockerfile" in result.stdout


def test_console_script_and_plugins_registered() -> None:
    from importlib import metadata

    entry_points = metadata.entry_points()
    scripts = {entry.name: entry.value for entry in entry_points.select(group="console_scripts")}
    plugins = {entry.name for entry in entry_points.select(group="sqlalchemy.plugins")}
    pytest_plugins = {entry.value for entry in entry_points.select(group="pytest11")}

    assert scripts["securemysql"] == "securemysql.cli:main"
    assert "securemysql" in plugins
    assert "securemysql.sandbox.pytest_plugin" in pytest_plugins


def test_py_typed_marker_shipped() -> None:
    assert (ROOT / "securemysql" / "py.typed").exists()


def test_ca_bundle_command_writes_azure_roots(tmp_path: Path) -> None:
    from securemysql.cli import main
    from securemysql.tls import AZURE_ROOT_CAS, iter_pem_fingerprints

    output = tmp_path / "bundle.pem"

    code = main(["ca-bundle", "--output", str(output)])

    fingerprints = set(iter_pem_fingerprints(output.read_text()))
    assert code == 0
    for name, fingerprint in AZURE_ROOT_CAS.items():
        assert fingerprint in fingerprints, name
