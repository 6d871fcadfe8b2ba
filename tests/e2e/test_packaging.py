"""What a release is made of: the license, the metadata, dependency ranges with the tested
versions in constraints.txt (which CI and scripts/ install from), and an sdist that holds
the whole project."""

from __future__ import annotations

import re
import subprocess
import sys
import tarfile
import tomllib
from pathlib import Path

import pytest

from tests.support.configs import write_secret

REPO = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
PROJECT = PYPROJECT["project"]
# Which module each declared distribution provides, as oauthd (or the demo) imports it.
IMPORTED_AS = {
    "aiohttp": "aiohttp",
    "authlib": "authlib",
    "joserfc": "joserfc",
    "orjson": "orjson",
    "cryptography": "cryptography",
    "prometheus-client": "prometheus_client",
    "redis": "redis",
    "psycopg": "psycopg",
    "argon2-cffi": "argon2",
    "mcp": "mcp",
    "pyjwt": "jwt",
    "uvicorn": "uvicorn",
    "opentelemetry-api": "opentelemetry",
    "opentelemetry-sdk": "opentelemetry.sdk",
    "opentelemetry-exporter-otlp-proto-http": "opentelemetry.exporter.otlp.proto.http",
}
REQUIREMENT = re.compile(r"([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?\s*(.*)")


def requirements(extras: tuple[str, ...] = ()) -> list[tuple[str, str]]:
    """(name, version spec) of the runtime dependencies and of the named extras."""
    found = []
    lines = list(PROJECT["dependencies"])
    for extra in extras:
        lines += PROJECT["optional-dependencies"][extra]
    for line in lines:
        match = REQUIREMENT.fullmatch(line)
        assert match, line
        if match[1] != "oauthd":  # dev names the other extras as oauthd[...]
            found.append((match[1].lower(), match[3]))
    return found


def constraints() -> dict[str, str]:
    pins = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, sep, version = line.partition("==")
            assert sep and version, f"constraints.txt: not an exact pin: {line}"
            pins[name.lower().replace("_", "-")] = version
    return pins


def test_license_and_metadata() -> None:
    text = (REPO / "LICENSE").read_text()
    assert text.startswith("MIT License\n") and "Copyright (c) the oauthd authors" in text
    assert PROJECT["license"] == "MIT" and PROJECT["license-files"] == ["LICENSE"]
    assert "Programming Language :: Python :: 3.11" in PROJECT["classifiers"]
    assert PROJECT["urls"]["Documentation"].endswith("/share/doc/oauthd/README.md")


def test_dependencies_are_ranges_with_the_tested_versions_in_constraints() -> None:
    pins = constraints()
    every_extra = tuple(PROJECT["optional-dependencies"])
    for name, spec in requirements(every_extra):
        assert "==" not in spec, f"pyproject.toml pins {name}{spec}: declare a range"
        assert name in pins, f"constraints.txt has no tested version of {name}"
    dev = " ".join(PROJECT["optional-dependencies"]["dev"])
    assert "oauthd[redis,postgres,argon2,demo,otel]" in dev, "dev tests every extra"


def test_every_declared_dependency_is_imported() -> None:
    sources = [p.read_text() for p in (REPO / "oauthd").rglob("*.py")]
    sources.append((REPO / "examples/demo_server.py").read_text())
    for name, _ in requirements(("redis", "postgres", "argon2", "demo", "otel")):
        module = IMPORTED_AS[name]
        used = re.compile(rf"^\s*(import|from) {module}\b|import_module\(\"{module}\"\)", re.M)
        assert any(used.search(text) for text in sources), f"{name} is declared, never imported"


def test_ci_and_scripts_install_from_the_constraints() -> None:
    for script in (".ci/run", "scripts/test", "scripts/run-demo"):
        text = (REPO / script).read_text()
        installs = [line for line in text.splitlines() if "pip install" in line]
        assert installs, script
        for line in installs:
            assert "-c constraints.txt" in line, f"{script}: {line.strip()}"


def test_no_package_registry_host_is_named_anywhere() -> None:
    files = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True, timeout=30
    ).stdout.split(b"\0")
    hosts = re.compile(rb"pypi\.org|pythonhosted\.org|npmjs\.(org|com)|yarnpkg\.com")
    named = [f.decode() for f in files if f and hosts.search((REPO / f.decode()).read_bytes())]
    assert not named


def test_the_unit_documents_oauthd_with_the_installed_docs() -> None:
    """Documentation= names files the wheel installs (data-files, share/doc/oauthd) under
    the prefix of the unit's ExecStart, /usr/local."""
    unit = (REPO / "systemd/oauthd.service").read_text()
    docs = re.findall(r"^Documentation=(.*)$", unit, re.M)
    assert docs and "ExecStart=/usr/local/bin/oauthd " in unit
    installed = PYPROJECT["tool"]["setuptools"]["data-files"]["share/doc/oauthd"]
    for url in docs:
        assert url.startswith("file:///usr/local/share/doc/oauthd/"), url
        assert any(Path(f).name == url.rpartition("/")[2] for f in installed), url


def test_the_unit_does_not_restart_what_needs_an_operator() -> None:
    unit = (REPO / "systemd/oauthd.service").read_text()
    assert re.search(r"^RestartPreventExitStatus=64 78$", unit, re.M)


@pytest.mark.slow
def test_the_sdist_holds_every_tracked_file(tmp_path: Path) -> None:
    """Config example, unit, docs, tests and their support, examples, scripts, CI."""
    subprocess.run(
        [sys.executable, "-m", "build", "--sdist", "--outdir", str(tmp_path), str(REPO)],
        capture_output=True,
        check=True,
        timeout=300,
    )
    (sdist,) = tmp_path.glob("oauthd-*.tar.gz")
    with tarfile.open(sdist) as tar:
        held = {name.partition("/")[2] for name in tar.getnames()}
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True, timeout=30
    ).stdout.split()
    missing = sorted(set(tracked) - held)
    assert not missing, f"not in the sdist: {missing}"
    for needed in ("LICENSE", "constraints.txt", "config.example.toml", "systemd/oauthd.service"):
        assert needed in held
    assert not any("node_modules" in name or "__pycache__" in name for name in held)


def runtime_closure(requirements: list[str]) -> set[str]:
    """The distributions (of this venv) that `requirements` pull in, extras left out."""
    from importlib import metadata

    from packaging.requirements import Requirement

    seen: set[str] = set()
    todo = [Requirement(line) for line in requirements]
    while todo:
        req = todo.pop()
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        name = req.name.lower().replace("_", "-")
        if name in seen:
            continue
        seen.add(name)
        todo += [Requirement(line) for line in metadata.requires(name) or []]
    return seen


def link_distributions(names: set[str], into: Path) -> None:
    """Each distribution's top-level packages, modules and dist-info, linked into `into`."""
    from importlib import metadata

    into.mkdir()
    for name in names:
        dist = metadata.distribution(name)
        for top in {f.parts[0] for f in dist.files or [] if f.parts[0] != ".."}:
            source = Path(str(dist.locate_file(top)))
            if source.exists() and not (into / top).exists():
                (into / top).symlink_to(source)


@pytest.mark.slow
def test_a_wheel_without_extras_refuses_redis_in_one_line(tmp_path: Path) -> None:
    """Installed from a wheel into a clean venv with its runtime dependencies only (linked
    from this venv): `check-config` and `serve` on a Redis config say which extra is
    missing in one line and exit 78 (was: a 49-line traceback and exit 1)."""
    from importlib import metadata

    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), str(REPO)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = wheels.glob("oauthd-*.whl")
    venv = tmp_path / "venv"
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin/python"
    pip = [sys.executable, "-m", "pip", "--python", str(python)]
    subprocess.run(
        [*pip, "install", "-q", "--no-deps", "--no-index", str(wheel)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        check=True,
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout.strip()
    needed = runtime_closure(metadata.requires("oauthd") or [])
    assert "redis" not in needed and "aiohttp" in needed
    link_distributions(needed, tmp_path / "deps")
    Path(site, "runtime-deps.pth").write_text(str(tmp_path / "deps") + "\n")
    probe = "import oauthd.daemon, importlib.util as u; print(u.find_spec('redis'))"
    assert (
        subprocess.run(
            [python, "-c", probe], capture_output=True, text=True, check=True, timeout=60
        ).stdout
        == "None\n"
    ), "the clean venv must not see redis"

    write_secret(tmp_path / "key", "ab" * 32)
    config = tmp_path / "redis.toml"
    config.write_text(
        '[storage]\nbackend = "redis"\n[login]\nencryption_key = "file:key"\n'
        '[[login.users]]\nusername = "a"\npassword_hash = "'
        + subprocess.run(
            [python, "-m", "oauthd", "users", "hash-password", "--stdin"],
            input="pw\n",
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout.strip()
        + '"\n'
    )
    expected = (
        f'oauthd: {config}: storage.backend = "redis" needs the redis extra: '
        "pip install 'oauthd[redis]'\n"
    )
    for command in ("check-config", "serve"):
        done = subprocess.run(
            [venv / "bin/oauthd", command, "--config", str(config)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert (done.returncode, done.stderr) == (78, expected), (command, done.stderr)
    # tracing on without the otel extra: the key and the install command, never a traceback
    traced = tmp_path / "tracing.toml"
    traced.write_text(
        config.read_text().replace('backend = "redis"', 'backend = "memory"')
        + "[tracing]\nenabled = true\n"
    )
    expected = (
        f"oauthd: {traced}: tracing.enabled = true needs the otel extra: "
        "pip install 'oauthd[otel]'\n"
    )
    for command in ("check-config", "serve"):
        done = subprocess.run(
            [venv / "bin/oauthd", command, "--config", str(traced)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert (done.returncode, done.stderr) == (78, expected), (command, done.stderr)
    version = subprocess.run(
        [venv / "bin/oauthd", "--version"], capture_output=True, text=True, timeout=60
    )
    assert version.stdout.startswith("oauthd ")
    docs = venv / "share/doc/oauthd"
    assert {"README.md", "operations.md", "oauthd.service", "config.example.toml"} <= {
        p.name for p in docs.iterdir()
    }
    assert list(Path(site).glob("oauthd-*.dist-info/licenses/LICENSE"))
