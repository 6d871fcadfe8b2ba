"""`[pages] logo` (oauthd/config/logo.py): the file is read and checked when the config
loads; every problem names the key, and `check-config` and `serve` exit 78 on it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from oauthd.cli import main
from oauthd.config import ConfigError, load_config
from oauthd.config.logo import MAX_LOGO_BYTES, content_type
from tests.support.daemon import run_oauthd

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + b"\x00" * 17
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + b"\x00" * 20
WEBP = b"RIFF\x24\x00\x00\x00WEBPVP8 " + b"\x00" * 20
SVG = b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="8"></svg>\n'


def config_with_logo(tmp_path: Path, name: str, data: bytes | None) -> Path:
    if data is not None:
        (tmp_path / name).write_bytes(data)
    config = tmp_path / "oauthd.toml"
    config.write_text(f'[pages]\nlogo = "{name}"\n')
    return config


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        (PNG, "image/png"),
        (JPEG, "image/jpeg"),
        (WEBP, "image/webp"),
        (SVG, "image/svg+xml"),
        (b"\xef\xbb\xbf  <svg viewBox='0 0 1 1'/>", "image/svg+xml"),
        (b"<!-- made by hand -->\n<svg>" + "é".encode() * 3000, "image/svg+xml"),
        (b"GIF89a" + b"\x00" * 20, None),
        (b"<html><script>alert(1)</script></html>", None),
        (b"hello", None),
        (b"<svg" + b"\xff" * 10, None),
    ],
)
def test_the_type_comes_from_the_content(data: bytes, kind: str | None) -> None:
    assert content_type(data) == kind


def test_a_logo_is_read_relative_to_the_config_file(tmp_path: Path) -> None:
    config = load_config(config_with_logo(tmp_path, "logo.jpg", SVG))  # the name says nothing
    logo = config.pages.logo
    assert logo is not None and logo.path == tmp_path / "logo.jpg"
    assert (logo.content_type, logo.data) == ("image/svg+xml", SVG)
    assert len(logo.digest) == 16 and "data" not in repr(logo)


@pytest.mark.parametrize(
    ("name", "data", "problem"),
    [
        ("missing.png", None, "cannot read"),
        ("big.png", PNG + b"\x00" * MAX_LOGO_BYTES, "is larger than 256 KiB"),
        ("empty.png", b"", "is empty"),
        ("page.png", b"<html></html>", "is not a PNG, JPEG, WebP or SVG image"),
    ],
)
def test_a_bad_logo_is_a_config_error_naming_the_key(
    tmp_path: Path, name: str, data: bytes | None, problem: str
) -> None:
    config = config_with_logo(tmp_path, name, data)
    with pytest.raises(ConfigError, match=f"pages.logo: .*{problem}") as caught:
        load_config(config)
    assert str(tmp_path / name) in str(caught.value)


def test_a_directory_or_an_unreadable_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "dir.png").mkdir()
    with pytest.raises(ConfigError, match=r"pages\.logo: .* is not a regular file"):
        load_config(config_with_logo(tmp_path, "dir.png", None))
    os.mkfifo(tmp_path / "fifo.png")  # opened without blocking, refused
    with pytest.raises(ConfigError, match=r"pages\.logo: .* is not a regular file"):
        load_config(config_with_logo(tmp_path, "fifo.png", None))
    if os.geteuid() != 0:  # root reads whatever the mode says
        (tmp_path / "secret.png").write_bytes(PNG)
        (tmp_path / "secret.png").chmod(0)
        with pytest.raises(ConfigError, match=r"pages\.logo: cannot read .*Permission denied"):
            load_config(config_with_logo(tmp_path, "secret.png", None))


def test_check_config_reports_it_with_exit_78(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = config_with_logo(tmp_path, "logo.gif", b"GIF89a")
    assert main(["check-config", "--config", str(config)]) == 78
    err = capsys.readouterr().err
    assert f"{config}: pages.logo: " in err and "logo.gif" in err


async def test_serve_exits_78_on_it(tmp_path: Path) -> None:
    config = config_with_logo(tmp_path, "logo.png", PNG + b"\x00" * MAX_LOGO_BYTES)
    code, _, err = await run_oauthd("serve", "--config", str(config))
    assert code == 78 and "pages.logo: " in err and "Traceback" not in err
