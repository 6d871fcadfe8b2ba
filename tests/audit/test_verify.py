"""`verify` names the first edited, inserted, dropped or reordered record."""

from __future__ import annotations

import orjson

from oauthd.audit import Anchor, AuditEvent, Chain, verify


def _lines(count: int, name: str = "c") -> list[tuple[str, bytes]]:
    chain = Chain(name)
    return [
        (f"line {i + 1}", chain.seal(AuditEvent("token_refreshed", user=f"u{i}"), float(i))[0])
        for i in range(count)
    ]


def test_an_intact_chain_passes() -> None:
    verdict = verify("c", _lines(5))
    assert verdict.ok and (verdict.records, verdict.first, verdict.last) == (5, 1, 5)


def test_an_edited_record_fails_at_its_position() -> None:
    lines = _lines(5)
    record = orjson.loads(lines[2][1])
    record["user"] = "mallory"
    lines[2] = (lines[2][0], orjson.dumps(record))
    problem = verify("c", lines).problem
    assert problem is not None and (problem.where, problem.n) == ("line 3", 3)
    assert "edited" in problem.what


def test_a_dropped_record_fails() -> None:
    lines = _lines(5)
    del lines[1]
    problem = verify("c", lines).problem
    assert problem is not None and problem.where == "line 3" and "dropped" in problem.what


def test_reordered_records_fail() -> None:
    lines = _lines(5)
    lines[1], lines[2] = lines[2], lines[1]
    problem = verify("c", lines).problem
    assert problem is not None and problem.where == lines[1][0] and "moved" in problem.what


def test_an_inserted_record_with_a_valid_hash_fails_on_its_link() -> None:
    lines = _lines(4)
    forged = Chain("c")
    for _ in range(2):
        extra, _ = forged.seal(AuditEvent("forged"), 1.0)
    lines.insert(2, ("inserted", extra))  # claims n=2 with its own valid hash
    problem = verify("c", lines).problem
    assert problem is not None and problem.where == "inserted"


def test_a_chain_trimmed_by_retention_starts_later() -> None:
    verdict = verify("c", _lines(6)[2:])
    assert verdict.ok and (verdict.first, verdict.last) == (3, 6)


def test_garbage_and_another_chain_fail() -> None:
    assert verify("c", [("line 1", b"{not json")]).problem is not None
    problem = verify("c", _lines(1, name="other")).problem
    assert problem is not None and "chain" in problem.what


def _hash(line: bytes) -> str:
    return str(orjson.loads(line)["hash"])


def test_records_cut_from_the_end_fail_against_the_anchor() -> None:
    lines = _lines(5)
    anchor = Anchor(_hash(lines[4][1]), 5, "audit-head.json")
    assert verify("c", lines, anchor).ok
    problem = verify("c", lines[:3], anchor).problem
    assert problem is not None and (problem.where, problem.n) == ("audit-head.json", 5)
    assert "ends at record 3" in problem.what and "cut" in problem.what


def test_a_rewritten_record_at_the_anchors_position_fails() -> None:
    problem = verify("c", _lines(5), Anchor("f" * 64, 3, "a")).problem
    assert problem is not None and (problem.where, problem.n) == ("line 3", 3)
    assert "rewritten" in problem.what


def test_an_anchor_before_what_retention_kept_passes() -> None:
    lines = _lines(5)
    assert verify("c", lines[3:], Anchor(_hash(lines[1][1]), 2, "a")).ok


def test_a_hash_only_anchor_must_be_in_the_chain() -> None:
    lines = _lines(5)
    assert verify("c", lines, Anchor(_hash(lines[4][1]), None, "k")).ok
    assert verify("c", lines, Anchor(_hash(lines[3][1]), None, "k")).ok  # written meanwhile
    assert verify("c", lines[4:], Anchor(_hash(lines[3][1]), None, "k")).ok  # then retention
    problem = verify("c", lines[:4], Anchor(_hash(lines[4][1]), None, "k")).problem
    assert problem is not None and problem.where == "k" and "cut" in problem.what
    assert not verify("c", [], Anchor(_hash(lines[4][1]), None, "k")).ok
