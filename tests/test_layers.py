"""The import rules of design.md section 1, checked with `ast` over oauthd/**/*.py.

Every import counts, including those under `if TYPE_CHECKING:` or inside functions: a
type-only dependency on a lower room is still a dependency. Rooms that do not exist yet
have no files, so their rules pass vacuously until the first file appears.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

OUTER = ("oauthd.http", "oauthd.proxy", "oauthd.admin", "oauthd.daemon", "oauthd.cli")
FOUNDATIONS = ("oauthd/model.py", "oauthd/config.py", "oauthd/crypto.py", "oauthd/clock.py")


@dataclass(frozen=True, slots=True)
class Rule:
    """Files matching `where` (minus `unless`) must not import any of `forbidden`.

    A pattern ending in "/" matches every file below that directory; any other pattern is
    one file. A forbidden name matches that module and its submodules.
    """

    why: str
    where: tuple[str, ...]
    forbidden: tuple[str, ...]
    unless: tuple[str, ...] = ()


RULES = (
    Rule("the protocol does no I/O", ("oauthd/oauth/",), ("aiohttp", *OUTER)),
    Rule(
        "persistence knows bytes, not OAuth",
        ("oauthd/persist/",),
        ("aiohttp", "oauthd.store", "oauthd.oauth", "oauthd.model", "oauthd.metrics", *OUTER),
    ),
    Rule(
        "metrics are a leaf that every room may use",
        ("oauthd/metrics.py",),
        ("aiohttp", "oauthd.persist", "oauthd.store", "oauthd.oauth", *OUTER),
    ),
    Rule(
        "prometheus stays in the metrics room",
        ("oauthd/",),
        ("prometheus_client",),
        unless=("oauthd/metrics.py",),
    ),
    Rule(
        "the store is below the protocol", ("oauthd/store/",), ("aiohttp", "oauthd.oauth", *OUTER)
    ),
    Rule(
        "foundations import no room",
        FOUNDATIONS,
        ("aiohttp", "oauthd.persist", "oauthd.store", "oauthd.oauth", *OUTER),
    ),
    Rule(
        "the admin socket drives the protocol, not the web side",
        ("oauthd/admin/",),
        ("aiohttp", "oauthd.http", "oauthd.proxy", "oauthd.daemon", "oauthd.cli"),
    ),
    Rule(
        "only the command line reaches the composition root",
        ("oauthd/",),
        ("oauthd.cli", "oauthd.daemon"),
        unless=("oauthd/cli.py", "oauthd/__main__.py"),
    ),
    Rule(
        "aiohttp stays at the edge",
        ("oauthd/",),
        ("aiohttp",),
        unless=("oauthd/http/", "oauthd/proxy/", "oauthd/daemon.py", "oauthd/cli.py"),
    ),
)


def matches(path: str, patterns: tuple[str, ...]) -> bool:
    return any(path.startswith(p) if p.endswith("/") else path == p for p in patterns)


def package_of(path: str) -> str:
    """The package a file's relative imports start from: `oauthd/store/file.py` -> oauthd.store."""
    return ".".join(path.split("/")[:-1])


def imports(source: str, package: str) -> list[tuple[int, str]]:
    """(line, absolute name) of every import; `from a import b` yields a.b (module or not)."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0]
                base = f"{anchor}.{base}" if base else anchor
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
    return sorted(found)


def is_under(module: str, forbidden: str) -> bool:
    return module == forbidden or module.startswith(forbidden + ".")


def violations(repo: Path) -> list[str]:
    found: list[str] = []
    for file in sorted((repo / "oauthd").rglob("*.py")):
        path = file.relative_to(repo).as_posix()
        rules = [r for r in RULES if matches(path, r.where) and not matches(path, r.unless)]
        for line, module in imports(file.read_text(encoding="utf-8"), package_of(path)):
            broken = [(r, f) for r in rules for f in r.forbidden if is_under(module, f)]
            if broken:
                rule, bad = broken[0]
                found.append(f"{path}:{line}: imports {module} ({rule.why}: no {bad})")
    return found


def test_imports_follow_the_rooms() -> None:
    problems = violations(REPO)
    assert not problems, "forbidden imports:\n" + "\n".join(problems)


def test_checker_finds_each_kind_of_violation(tmp_path: Path) -> None:
    files = {
        "oauthd/__init__.py": "",
        "oauthd/oauth/__init__.py": "from ..http import errors\n",
        "oauthd/oauth/token.py": (
            "from typing import TYPE_CHECKING\n"
            "if TYPE_CHECKING:\n"
            "    from aiohttp import web\n"
            "from oauthd import daemon\n"
        ),
        "oauthd/persist/journal.py": "import oauthd.model\n",
        "oauthd/store/file.py": "from .. import oauth\nfrom . import memory\n",
        "oauthd/clock.py": "def f() -> None:\n    import oauthd.store.memory\n",
        "oauthd/http/app.py": "import aiohttp.web\nfrom oauthd.oauth import AuthServer\n",
        "oauthd/cli.py": "from oauthd import daemon\nimport aiohttp\n",
        "oauthd/__main__.py": "from oauthd.cli import main\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    where = [p.split(" (")[0] for p in violations(tmp_path)]
    assert where == [
        "oauthd/clock.py:2: imports oauthd.store.memory",
        "oauthd/oauth/__init__.py:1: imports oauthd.http.errors",
        "oauthd/oauth/token.py:3: imports aiohttp.web",
        "oauthd/oauth/token.py:4: imports oauthd.daemon",
        "oauthd/persist/journal.py:1: imports oauthd.model",
        "oauthd/store/file.py:1: imports oauthd.oauth",
    ]
    assert violations(tmp_path)[2].endswith("(the protocol does no I/O: no aiohttp)")
