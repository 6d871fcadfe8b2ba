"""oauthd/cli/migrate.py: `oauthd migrate` (the runs against a server are in
tests/test_postgres_store.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from oauthd.cli import main


@pytest.mark.parametrize("backend", ["memory", "file"])
def test_only_postgres_has_a_schema_to_migrate(
    backend: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "oauthd.toml"
    config.write_text(f'[storage]\nbackend = "{backend}"\n')
    assert main(["migrate", "--config", str(config)]) == 78
    assert capsys.readouterr().err == (
        f"oauthd: {config}: storage.backend is '{backend}': only the postgres backend has a "
        "schema to migrate\n"
    )
