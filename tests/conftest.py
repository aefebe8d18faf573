"""Shared test fixtures.

Integration tests run against a real stack started by the project's own
``funnel stack up`` on ports of their own (so a developer's `make run` stack is
left alone) and torn down at the end of the session.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import TEST_ENV


@pytest.fixture(scope="session")
def stack_env() -> dict[str, str]:
    return {**os.environ, **TEST_ENV}


@pytest.fixture(scope="session")
def stack(stack_env):
    """The real local stack (Kafka, Redis, Prometheus, Alertmanager) for the session."""
    funnel = [sys.executable, "-m", "stream"]
    if os.environ.get("FUNNEL_KEEP_STACK") != "1":
        # Start from empty data so topics and groups of earlier runs do not leak in.
        down = [*funnel, "stack", "down", "--purge"]
        subprocess.run(down, env=stack_env, capture_output=True, text=True)
    up = subprocess.run([*funnel, "stack", "up"], env=stack_env, capture_output=True, text=True)
    print(up.stdout, up.stderr, file=sys.stderr)
    if up.returncode != 0:
        pytest.fail(f"funnel stack up failed:\n{up.stdout}\n{up.stderr}")
    yield Path(stack_env["FUNNEL_RUN_DIR"])
    if os.environ.get("FUNNEL_KEEP_STACK") != "1":
        down = [*funnel, "stack", "down", "--purge"]
        subprocess.run(down, env=stack_env, capture_output=True, text=True)
