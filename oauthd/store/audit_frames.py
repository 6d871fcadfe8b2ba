"""The audit records still in the journal: its audit frames (one record per line: those
sealed in one event-loop turn share a frame) and the records changes carry, as the chain
they make.

Frames are taken in seq order, and a frame at position n supersedes every earlier frame at
n or after: frames of a failed batch may stay in a segment after the chain head was put
back, and the records sealed after that reuse their positions.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from oauthd.persist.journal import list_segments, scan_segment
from oauthd.persist.statedir import StateDir
from oauthd.store.codec import audit_lines_of


@dataclass(slots=True, frozen=True)
class Frame:
    n: int
    where: str  # "journal-<first seq>.log seq <seq>"
    line: bytes


def journal_chain(state: StateDir) -> list[Frame]:
    """The audit frames of every journal segment on disk, superseded ones dropped, in n
    order. Read-only (a segment a running daemon deletes meanwhile is skipped)."""
    chain: list[Frame] = []
    for _, name in list_segments(state):
        try:
            scan = scan_segment(state.file(name))
        except FileNotFoundError:
            continue
        for seq, payload in scan.entries:
            for line in audit_lines_of(payload):
                n = int(orjson.loads(line)["n"])
                while chain and chain[-1].n >= n:
                    chain.pop()
                chain.append(Frame(n, f"{name} seq {seq}", line))
    return chain
