"""The import rules of design.md section 1, checked with `ast` over oauthd/**/*.py.

Every import counts, including those under `if TYPE_CHECKING:` or inside functions: a
type-only dependency on a lower room is still a dependency. Rooms that do not exist yet
have no files, so their rules pass vacuously until the first file appears.

The door (issue #10): `AuthServer` is the protocol's one door. `http/`, `proxy/` and
`admin/` import only the names `oauthd/oauth/__init__.py` exports, never a submodule;
`proxy/` and `admin/` type it as a narrow Protocol of their own. The services are built
in one place, `oauthd/assembly.py`; `http/` only mounts routes. No import circle anywhere.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

OUTER = (
    "oauthd.http",
    "oauthd.proxy",
    "oauthd.admin",
    "oauthd.outbound",
    "oauthd.assembly",
    "oauthd.daemon",
    "oauthd.cli",
)
FOUNDATIONS = (
    "oauthd/model.py",
    "oauthd/config/",
    "oauthd/passwords.py",
    "oauthd/crypto.py",
    "oauthd/clock.py",
    "oauthd/exits.py",
    "oauthd/peers.py",
    "oauthd/scopes.py",
    "oauthd/policy.py",
    "oauthd/tracing.py",
    "oauthd/audit/",
)
# What `http/` may import of oauthd: the protocol's and the proxy's doors (the packages'
# exported names, never a submodule), its own modules, the foundations, and the one store
# error it renders. "x.*" is x and everything below it; any other entry is one module or
# one name.
HTTP_MAY_IMPORT = (
    "oauthd.http.*",
    "oauthd.oauth",
    "oauthd.proxy",
    "oauthd.store.Unavailable",
    "oauthd.audit.reasons",  # the reason codes (constants) of the refusals it renders
    "oauthd.config",
    "oauthd.model",
    "oauthd.crypto",
    "oauthd.clock",
    "oauthd.exits",
    "oauthd.peers",
    "oauthd.scopes",
    "oauthd.policy",
    "oauthd.log",
    "oauthd.metrics",
    "oauthd.metrics_requests",
    "oauthd.metrics_census",
    "oauthd.tracing",
    "oauthd.keyring",
)


@dataclass(frozen=True, slots=True)
class Rule:
    """Files matching `where` (minus `unless`) must not import any of `forbidden`; if
    `only` is given, they import nothing of oauthd but what it allows; and they never
    import a submodule of a `sealed` package (only the names its `__init__` exports).

    A pattern ending in "/" matches every file below that directory; any other pattern is
    one file. A forbidden name matches that module and its submodules.
    """

    why: str
    where: tuple[str, ...]
    forbidden: tuple[str, ...] = ()
    unless: tuple[str, ...] = ()
    only: tuple[str, ...] = ()
    sealed: tuple[str, ...] = ()


RULES = (
    Rule("the protocol does no I/O", ("oauthd/oauth/",), ("aiohttp", *OUTER)),
    Rule(
        "persistence knows bytes, not OAuth",
        ("oauthd/persist/",),
        ("aiohttp", "oauthd.store", "oauthd.oauth", "oauthd.model", "oauthd.metrics", *OUTER),
    ),
    Rule(
        "metrics are a leaf that every room may use",
        (
            "oauthd/metrics.py",
            "oauthd/metrics_requests.py",
            "oauthd/metrics_loop.py",
            "oauthd/metrics_census.py",
        ),
        ("aiohttp", "oauthd.persist", "oauthd.store", "oauthd.oauth", *OUTER),
    ),
    Rule(
        "prometheus stays in the metrics room",
        ("oauthd/",),
        ("prometheus_client",),
        unless=(
            "oauthd/metrics.py",
            "oauthd/metrics_requests.py",
            "oauthd/metrics_loop.py",
            "oauthd/metrics_census.py",
        ),
    ),
    Rule(
        "the store is below the protocol", ("oauthd/store/",), ("aiohttp", "oauthd.oauth", *OUTER)
    ),
    Rule(
        "foundations import no room",
        FOUNDATIONS,
        ("aiohttp", "oauthd.persist", "oauthd.store", "oauthd.oauth", *OUTER),
    ),
    Rule("foundations do not import users", FOUNDATIONS, ("oauthd.users",)),
    Rule(
        "the admin socket drives the protocol, not the web side",
        ("oauthd/admin/",),
        ("aiohttp", "oauthd.http", "oauthd.proxy", "oauthd.outbound", "oauthd.assembly"),
    ),
    Rule(
        "http/ mounts routes: it builds no service and reaches no room behind the doors",
        ("oauthd/http/",),
        only=HTTP_MAY_IMPORT,
    ),
    Rule(
        "AuthServer is the one door: the outer rooms import only oauth's exported names",
        ("oauthd/http/", "oauthd/proxy/", "oauthd/admin/"),
        sealed=("oauthd.oauth",),
    ),
    Rule(
        "outbound clients serve the protocol, not the web side",
        ("oauthd/outbound/",),
        ("oauthd.http", "oauthd.proxy", "oauthd.admin"),
    ),
    Rule(
        "only the command line reaches the daemon",
        ("oauthd/",),
        ("oauthd.cli", "oauthd.daemon"),
        unless=("oauthd/cli/", "oauthd/__main__.py"),
    ),
    Rule(
        "only the daemon reaches the composition root",
        ("oauthd/",),
        ("oauthd.assembly",),
        unless=("oauthd/daemon.py",),
    ),
    Rule(
        "opentelemetry stays in the tracing leaf, imported there only when tracing is on",
        ("oauthd/",),
        ("opentelemetry",),
        unless=("oauthd/tracing.py",),
    ),
    Rule(
        "aiohttp stays at the edge",
        ("oauthd/",),
        ("aiohttp",),
        unless=(
            "oauthd/http/",
            "oauthd/proxy/",
            "oauthd/outbound/",
            "oauthd/assembly.py",
            "oauthd/daemon.py",
            "oauthd/cli/",
        ),
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


def module_of(repo: Path, name: str) -> str | None:
    """The oauthd module an imported name lives in (`oauthd.oauth.AuthServer` ->
    oauthd.oauth, `oauthd.oauth.server` -> itself); None outside oauthd."""
    parts = name.split(".")
    while parts and parts[0] == "oauthd":
        base = repo.joinpath(*parts)
        if base.with_suffix(".py").is_file() or (base / "__init__.py").is_file():
            return ".".join(parts)
        parts.pop()
    return None


def allowed(name: str, module: str, patterns: tuple[str, ...]) -> bool:
    return any(
        is_under(module, p[:-2]) if p.endswith(".*") else p in (name, module) for p in patterns
    )


def broken_by(rule: Rule, name: str, module: str | None) -> str | None:
    """What of `rule` importing `name` (in oauthd `module`) breaks, or None."""
    bad = next((f for f in rule.forbidden if is_under(name, f)), None)
    if bad is not None:
        return f"no {bad}"
    if module is None:
        return None
    if rule.only and not allowed(name, module, rule.only):
        return f"not {module}"
    sealed = next((p for p in rule.sealed if module.startswith(p + ".")), None)
    return f"not a submodule of {sealed}" if sealed else None


def oauthd_files(repo: Path) -> list[tuple[str, Path]]:
    return [(f.relative_to(repo).as_posix(), f) for f in sorted((repo / "oauthd").rglob("*.py"))]


def violations(repo: Path, rules: tuple[Rule, ...] = RULES) -> list[str]:
    found: list[str] = []
    for path, file in oauthd_files(repo):
        mine = [r for r in rules if matches(path, r.where) and not matches(path, r.unless)]
        for line, name in imports(file.read_text(encoding="utf-8"), package_of(path)):
            module = module_of(repo, name)
            broken = [(r, why) for r in mine if (why := broken_by(r, name, module))]
            if broken:
                rule, why = broken[0]
                found.append(f"{path}:{line}: imports {name} ({rule.why}: {why})")
    return found


def module_name(path: str) -> str:
    """`oauthd/store/__init__.py` -> oauthd.store; `oauthd/store/file.py` -> oauthd.store.file."""
    name = path.removesuffix(".py").replace("/", ".")
    return name.removesuffix(".__init__")


def import_graph(repo: Path) -> dict[str, set[str]]:
    """Module -> the oauthd modules it imports (every import counted, as above; a parent
    package is not counted as imported by its submodules' import)."""
    graph: dict[str, set[str]] = {}
    for path, file in oauthd_files(repo):
        source = file.read_text(encoding="utf-8")
        targets = {module_of(repo, name) for _, name in imports(source, package_of(path))}
        graph[module_name(path)] = {t for t in targets if t is not None}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import circles: each strongly connected set of more than one module (or a
    module importing itself), sorted (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            members = []
            while True:
                member = stack.pop()
                members.append(member)
                if member == node:
                    break
            if len(members) > 1 or node in graph.get(node, ()):
                found.append(sorted(members))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def test_imports_follow_the_rooms() -> None:
    problems = violations(REPO)
    assert not problems, "forbidden imports:\n" + "\n".join(problems)


def test_no_import_cycle() -> None:
    found = cycles(import_graph(REPO))
    assert found == [], "import cycles:\n" + "\n".join(" <-> ".join(c) for c in found)


def write_tree(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)


def test_checker_finds_each_kind_of_violation(tmp_path: Path) -> None:
    files = {
        "oauthd/__init__.py": "",
        "oauthd/oauth/__init__.py": "from ..http import errors\n",
        "oauthd/oauth/server.py": "",
        "oauthd/oauth/token.py": (
            "from typing import TYPE_CHECKING\n"
            "if TYPE_CHECKING:\n"
            "    from aiohttp import web\n"
            "from oauthd import daemon\n"
        ),
        "oauthd/persist/journal.py": "import oauthd.model\n",
        "oauthd/store/__init__.py": "",
        "oauthd/store/file.py": "from .. import oauth\nfrom . import memory\n",
        "oauthd/clock.py": "def f() -> None:\n    import oauthd.store.memory\n",
        "oauthd/model.py": "from oauthd.users import Users\n",
        "oauthd/users.py": "",
        "oauthd/http/app.py": "import aiohttp.web\nfrom oauthd.oauth import AuthServer\n",
        "oauthd/http/pages.py": (
            "from oauthd.store import Unavailable\n"
            "from oauthd.store import Store\n"
            "from oauthd import users\n"
            "from . import app\n"
            "from oauthd.oauth.server import AuthServer\n"
        ),
        "oauthd/proxy/relay.py": "from oauthd.oauth import server\nfrom oauthd.oauth import Flow\n",
        "oauthd/admin/operations.py": "import oauthd.oauth.server\n",
        "oauthd/outbound/cimd.py": "from oauthd.http import app\nfrom oauthd.oauth import Flow\n",
        "oauthd/daemon.py": "from oauthd.assembly import create_app\n",
        "oauthd/assembly.py": "from oauthd.http import app\nimport aiohttp\n",
        "oauthd/cli/__init__.py": (
            "from oauthd import daemon\nimport aiohttp\nfrom oauthd import assembly\n"
        ),
        "oauthd/__main__.py": "from oauthd.cli import main\n",
    }
    write_tree(tmp_path, files)
    where = [p.split(" (")[0] for p in violations(tmp_path)]
    assert where == [
        "oauthd/admin/operations.py:1: imports oauthd.oauth.server",
        "oauthd/cli/__init__.py:3: imports oauthd.assembly",
        "oauthd/clock.py:2: imports oauthd.store.memory",
        "oauthd/http/pages.py:2: imports oauthd.store.Store",
        "oauthd/http/pages.py:3: imports oauthd.users",
        "oauthd/http/pages.py:5: imports oauthd.oauth.server.AuthServer",
        "oauthd/model.py:1: imports oauthd.users.Users",
        "oauthd/oauth/__init__.py:1: imports oauthd.http.errors",
        "oauthd/oauth/token.py:3: imports aiohttp.web",
        "oauthd/oauth/token.py:4: imports oauthd.daemon",
        "oauthd/outbound/cimd.py:1: imports oauthd.http.app",
        "oauthd/persist/journal.py:1: imports oauthd.model",
        "oauthd/proxy/relay.py:1: imports oauthd.oauth.server",
        "oauthd/store/file.py:1: imports oauthd.oauth",
    ]
    found = violations(tmp_path)
    assert found[8].endswith("(the protocol does no I/O: no aiohttp)")
    assert found[3].endswith(": not oauthd.store)")
    assert found[12].endswith(": not a submodule of oauthd.oauth)")
    assert found[6].endswith("(foundations do not import users: no oauthd.users)")


def test_cycle_finder_finds_circles(tmp_path: Path) -> None:
    write_tree(
        tmp_path,
        {
            "oauthd/__init__.py": "",
            "oauthd/config.py": "from oauthd.users import parse\n",
            "oauthd/users.py": "def f() -> None:\n    from oauthd import config\n",
            "oauthd/store/__init__.py": "from oauthd.store.file import FileStore\n",
            "oauthd/store/file.py": "from oauthd.store import base\n",
            "oauthd/store/base.py": "import oauthd.config\n",
            "oauthd/log.py": "import oauthd.log\n",
        },
    )
    assert cycles(import_graph(tmp_path)) == [["oauthd.config", "oauthd.users"], ["oauthd.log"]]
