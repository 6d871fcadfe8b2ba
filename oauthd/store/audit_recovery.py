"""The file backend's audit chain at start: where the segments end, the records the
journal still holds after that (moved into the segments before serving), and the anchor
(`audit-head.json`) that says how far the chain reached before."""

from __future__ import annotations

import logging

import orjson

from oauthd.audit import Chain, ChainHead, head_of
from oauthd.persist.statedir import StateDir
from oauthd.store.audit_files import AuditFiles, read_anchor
from oauthd.store.audit_frames import journal_chain

log = logging.getLogger("oauthd.audit")


def recover_chain(files: AuditFiles, state: StateDir, name: str) -> Chain:
    """The chain at start: the segments' last record, then every journal record after it
    appended to the segments (fsynced). Blocking, before serving."""
    last = files.recover_last()
    head = head_of(last) if last is not None else ChainHead()
    files.last_n, files.last_line = head.n, last
    if last is not None:
        name = _chain_of(last, name)
    later = [(f.n, f.line) for f in journal_chain(state) if f.n > head.n]
    if later:
        if later[0][0] != head.n + 1:
            log.error(
                f"audit records {head.n + 1}..{later[0][0] - 1} are in neither the audit "
                "segments nor the journal",
                extra={"event": "audit_gap"},
            )
        files.append(later)
        files.sync()
        head = head_of(later[-1][1])
        name = _chain_of(later[-1][1], name)
    anchored = _past_anchor(state, name, head)
    if anchored is not head:  # no anchor below it until a record past it is in a segment
        files.last_n, files.last_line = anchored.n, None
    return Chain(name, anchored)


def _past_anchor(state: StateDir, name: str, head: ChainHead) -> ChainHead:
    """`head`, or the anchor's position if the chain reached further before (records were
    cut from the segments' end, beyond what the journal holds): the chain goes on after
    the anchor, so that the gap stays for `oauthd audit verify` to report rather than new
    records taking the lost ones' positions."""
    try:
        found = read_anchor(state.path)
    except (ValueError, OSError) as exc:
        log.error(f"audit anchor: {exc}", extra={"event": "audit_anchor_unreadable"})
        return head
    if found is None or found[0] != name:
        return head
    anchor = found[1]
    n = anchor.n
    if n is None or n <= head.n:
        return head
    log.error(
        f"audit records {head.n + 1}..{n} are in neither the audit segments nor the "
        f"journal, though {anchor.where} says the chain reached {n}: they were cut "
        "from the end of the segments; the chain goes on after them",
        extra={"event": "audit_gap"},
    )
    return ChainHead(n, anchor.hash)


def _chain_of(line: bytes, configured: str) -> str:
    found = str(orjson.loads(line)["chain"])
    if found != configured:
        log.warning(
            f"the audit segments hold chain {found!r}: continuing it ([audit] chain names "
            f"{configured!r}; the file backend keeps one chain)",
            extra={"event": "audit_chain_name"},
        )
    return found
