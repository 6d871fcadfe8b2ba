"""oauthd/cli/output.py: the error line, JSON and tables every command writes."""

from __future__ import annotations

import io
from dataclasses import dataclass

import pytest

from oauthd.cli.output import cell, fail, plural, table, utc, write_json
from oauthd.exits import ExitCode


def test_fail_prints_one_line_on_stderr_and_returns_the_code(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert fail(ValueError("it broke"), ExitCode.UNAVAILABLE) is ExitCode.UNAVAILABLE
    captured = capsys.readouterr()
    assert (captured.out, captured.err) == ("", "oauthd: it broke\n")


@dataclass(slots=True)
class Row:
    name: str
    n: int


def test_json_is_indented_with_a_newline_and_takes_dataclasses() -> None:
    out = io.StringIO()
    write_json({"rows": [Row("a", 1)]}, out)
    assert (
        out.getvalue() == '{\n  "rows": [\n    {\n      "name": "a",\n      "n": 1\n    }\n  ]\n}\n'
    )


def test_table_columns_are_as_wide_as_their_widest_cell() -> None:
    out = io.StringIO()
    table(("ID", "NAME"), [("1", "alice"), ("22", "")], out)
    assert out.getvalue() == "ID  NAME\n1   alice\n22  -\n"


def test_cells_never_carry_control_characters_to_the_terminal() -> None:
    assert cell("evil\x1b[2Jname\n") == "evil?[2Jname?"
    assert cell("") == "-" and cell("fine") == "fine"


def test_plural_and_utc() -> None:
    assert (plural(1, "session"), plural(0, "session"), plural(2, "client")) == (
        "1 session",
        "0 sessions",
        "2 clients",
    )
    assert utc(0) == "1970-01-01 00:00:00Z"
