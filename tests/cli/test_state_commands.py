"""oauthd/cli/state.py: `oauthd state inspect|verify|copy` before any store is opened, and
the progress line (the runs on real state are in tests/test_state_cli.py and
tests/test_state_copy.py)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest

from oauthd.cli import main
from oauthd.cli.state import COPY_TIMEOUT, ProgressLine
from oauthd.config import StorageConfig
from oauthd.store import Store


@pytest.mark.parametrize("action", ["inspect", "verify"])
def test_a_missing_state_dir_exits_1(
    action: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nothing"
    assert main(["state", action, "--state-dir", str(missing)]) == 1
    assert capsys.readouterr().err == f"oauthd: {missing}: no such state directory\n"


def test_an_empty_state_dir_verifies(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["state", "verify", "--state-dir", str(tmp_path)]) == 0
    assert capsys.readouterr().out == f"OK: {tmp_path}: 0 files verified, seq 0\n"


def write(path: Path, storage: str) -> Path:
    path.write_text(f"[storage]\n{storage}\n")
    return path


def test_copy_refuses_the_memory_backend(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    memory = write(tmp_path / "memory.toml", 'backend = "memory"')
    (tmp_path / "b").mkdir()
    target = write(tmp_path / "b.toml", 'path = "b"')
    assert main(["state", "copy", "--from", str(memory), "--to", str(target)]) == 78
    assert capsys.readouterr().err == (
        f"oauthd: {memory}: storage.backend is 'memory': it keeps no state to copy\n"
    )


def test_copy_refuses_a_source_and_target_on_the_same_storage(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "a").mkdir()
    one = write(tmp_path / "one.toml", 'path = "a"')
    other = write(tmp_path / "other.toml", 'path = "a"')
    assert main(["state", "copy", "--from", str(one), "--to", str(other)]) == 78
    assert capsys.readouterr().err == f"oauthd: {one} and {other} name the same storage\n"


def test_copy_needs_a_source_state_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = write(tmp_path / "a.toml", 'path = "a"')
    target = write(tmp_path / "b.toml", 'path = "b"')
    assert main(["state", "copy", "--from", str(source), "--to", str(target)]) == 78
    assert capsys.readouterr().err == (
        f"oauthd: {source}: {tmp_path / 'a'}: no such state directory\n"
    )


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_is_a_line_per_tenth_off_a_terminal() -> None:
    out = io.StringIO()
    progress = ProgressLine(out)
    for done in range(0, 101, 5):
        progress("grants", done, 100)
    lines = out.getvalue().splitlines()
    assert lines[0] == "grants        0/100" and lines[-1] == "grants        100/100"
    assert len(lines) == 11


def test_progress_rewrites_one_line_on_a_terminal() -> None:
    out = Terminal()
    progress = ProgressLine(out)
    progress("codes", 0, 2)
    progress("codes", 1, 2)
    progress("codes", 2, 2)
    assert out.getvalue() == "\rcodes         0/2\rcodes         1/2\rcodes         2/2\n"


def test_copy_opens_both_stores_without_a_read_cache_and_with_a_batch_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A copy reads each record once, and a cached store's writes wait for its listener."""
    import oauthd.store

    opened: list[tuple[int, float]] = []
    real = oauthd.store.open_store

    async def spy(storage: StorageConfig, *args: Any, **kwargs: Any) -> Store:
        opened.append((storage.cache_size, storage.timeout))
        return await real(storage, *args, **kwargs)

    monkeypatch.setattr(oauthd.store, "open_store", spy)
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    source = write(tmp_path / "a.toml", 'path = "a"\ncache_size = 500')
    target = write(tmp_path / "b.toml", 'path = "b"\ncache_size = 500')
    assert main(["state", "copy", "--from", str(source), "--to", str(target)]) == 0
    assert opened == [(0, COPY_TIMEOUT), (0, COPY_TIMEOUT)]
