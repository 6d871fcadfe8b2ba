"""The shape of the tree. The tests mirror the package (docs/architecture.md,
tests/README.md): the test of `oauthd/X/y.py` is `tests/X/test_y.py` or
`tests/X/test_y_<topic>.py`, the test of a top-level `oauthd/y.py` is `tests/test_y.py`;
only the end-to-end folders and the checks of the package as a whole stand apart; a helper
module (any other file under tests/) holds no tests. And the package stays in small
pieces: no file over 450 lines, no function over 60."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

END_TO_END = frozenset({"e2e", "interop", "browser"})  # whole processes, several rooms
WHOLE_PACKAGE = ("layers", "tree")  # tests/test_layers*.py, tests/test_tree.py
MAX_FILE_LINES = 450
MAX_FUNCTION_LINES = 60


def modules(repo: Path) -> set[str]:
    """ "oauth/tokens", "config" (a package), "daemon": every module and package of oauthd."""
    found: set[str] = set()
    for file in (repo / "oauthd").rglob("*.py"):
        rel = file.relative_to(repo / "oauthd").with_suffix("")
        if rel.name == "__init__" and len(rel.parts) > 1:
            found.add(rel.parent.as_posix())
        elif rel.name not in ("__init__", "__main__"):
            found.add(rel.as_posix())
    return found


def names_a_module(test: Path, known: set[str]) -> bool:
    """`tests/X/test_y_topic.py` names `X/y` (or `X/y_topic`) when that module exists."""
    folder = test.parent.as_posix()
    prefix = "" if folder == "." else folder + "/"
    words = test.stem.removeprefix("test_").split("_")
    return any(prefix + "_".join(words[:n]) in known for n in range(1, len(words) + 1))


def misplaced(repo: Path) -> list[str]:
    known = modules(repo)
    found: list[str] = []
    for file in sorted((repo / "tests").rglob("test_*.py")):
        rel = file.relative_to(repo / "tests")
        if "node_modules" in rel.parts or rel.parts[0] in END_TO_END or rel.parts[0] == "support":
            continue
        if len(rel.parts) == 1 and rel.stem.removeprefix("test_").startswith(WHOLE_PACKAGE):
            continue
        if not names_a_module(rel, known):
            found.append(rel.as_posix())
    return found


def test_every_test_file_is_where_its_module_says() -> None:
    wrong = misplaced(REPO)
    assert not wrong, "test files that name no module at their place:\n" + "\n".join(wrong)


def test_the_checker_finds_a_misplaced_test(tmp_path: Path) -> None:
    for name in (
        "oauthd/__init__.py",
        "oauthd/daemon.py",
        "oauthd/store/__init__.py",
        "oauthd/store/file.py",
        "oauthd/store/postgres_schema.py",
        "oauthd/config/__init__.py",
        "tests/test_daemon.py",
        "tests/test_config.py",
        "tests/test_layers.py",
        "tests/store/test_file_reopen.py",
        "tests/store/test_postgres_schema.py",
        "tests/store/test_daemon.py",
        "tests/test_file.py",
        "tests/e2e/test_anything.py",
        "tests/support/test_helpers_are_not_tests.py",
    ):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("")
    assert misplaced(tmp_path) == ["store/test_daemon.py", "test_file.py"]


def helpers_with_tests(repo: Path) -> list[str]:
    """`test*` functions and `Test*` classes (what pytest collects) outside the test
    modules: a suite of tests is a test module (like tests/store/test_base_contract.py),
    not a helper to subclass."""
    found: list[str] = []
    for file in sorted((repo / "tests").rglob("*.py")):
        rel = file.relative_to(repo / "tests")
        if "node_modules" in rel.parts or file.name.startswith("test_"):
            continue
        for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
            function = isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
            if (function and node.name.startswith("test")) or (
                isinstance(node, ast.ClassDef) and node.name.startswith("Test")
            ):
                found.append(f"{rel.as_posix()}:{node.lineno}: {node.name}")
    return found


def test_helpers_hold_no_tests() -> None:
    found = helpers_with_tests(REPO)
    assert not found, "tests outside a test module:\n" + "\n".join(found)


def test_the_checker_finds_tests_in_a_helper(tmp_path: Path) -> None:
    (tmp_path / "tests" / "support").mkdir(parents=True)
    (tmp_path / "tests" / "support" / "contract.py").write_text(
        "class TestStore:\n    async def test_get(self) -> None: ...\n"
        "def make_grant() -> None: ...\n"
    )
    (tmp_path / "tests" / "test_store.py").write_text("def test_get() -> None: ...\n")
    assert helpers_with_tests(tmp_path) == [
        "support/contract.py:1: TestStore",
        "support/contract.py:2: test_get",
    ]


def oversized(repo: Path) -> list[str]:
    """Files of `oauthd/` over MAX_FILE_LINES, functions over MAX_FUNCTION_LINES."""
    found: list[str] = []
    for file in sorted((repo / "oauthd").rglob("*.py")):
        path = file.relative_to(repo).as_posix()
        text = file.read_text(encoding="utf-8")
        if (lines := len(text.splitlines())) > MAX_FILE_LINES:
            found.append(f"{path}: {lines} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    found.append(f"{path}:{node.lineno}: {node.name} is {length} lines")
    return found


def test_small_files_and_short_functions() -> None:
    found = oversized(REPO)
    assert not found, "split these:\n" + "\n".join(found)


def test_the_size_check_counts_lines(tmp_path: Path) -> None:
    body = "\n".join(f"    x = {i}" for i in range(MAX_FUNCTION_LINES))
    (tmp_path / "oauthd").mkdir()
    (tmp_path / "oauthd" / "long.py").write_text(f"def long() -> None:\n{body}\n")
    (tmp_path / "oauthd" / "big.py").write_text("x = 1\n" * (MAX_FILE_LINES + 1))
    assert oversized(tmp_path) == [
        f"oauthd/big.py: {MAX_FILE_LINES + 1} lines",
        f"oauthd/long.py:1: long is {MAX_FUNCTION_LINES + 1} lines",
    ]
