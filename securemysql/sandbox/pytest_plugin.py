"""pytest plugin: the sandbox as fixtures (registered through the ``pytest11`` entry point).

Fixtures:
    securemysql_sandbox: one running ``Sandbox`` for the whole test session.
    securemysql_sandbox_info: its ``SandboxInfo``.
    securemysql_sandbox_env: sets the identity endpoint's variables for one test.

Nothing starts unless a test requests one of these fixtures.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from securemysql.sandbox.core import Sandbox, SandboxInfo


@pytest.fixture(scope="session")
def securemysql_sandbox() -> Iterator[Sandbox]:
    """Start one sandbox for the test session and stop it at the end."""
    from securemysql.sandbox.core import Sandbox

    with Sandbox() as sandbox:
        yield sandbox


@pytest.fixture(scope="session")
def securemysql_sandbox_info(securemysql_sandbox: Sandbox) -> SandboxInfo:
    return securemysql_sandbox.info


@pytest.fixture
def securemysql_sandbox_env(
    securemysql_sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> dict[str, str]:
    """Point ``azure-identity`` at the sandbox's identity endpoint for one test."""
    variables = dict(securemysql_sandbox.identity.environment())
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    return variables
