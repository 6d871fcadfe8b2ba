"""Fixtures for the protocol tests (`tests.support.protocol`): `env`, one `AuthServer`
over the memory store, and `env_with(...)` for one with other settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.protocol import Env, EnvFactory, build_env


@pytest.fixture
def env(tmp_path: Path) -> Env:
    return build_env(tmp_path)


@pytest.fixture
def env_with(tmp_path: Path) -> EnvFactory:
    """`env_with(tokens={"refresh_grace": 5.0})`: an `Env` with other settings."""
    return lambda **sections: build_env(tmp_path, **sections)
