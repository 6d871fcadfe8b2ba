"""Audit records: events, the hash chain, the trail every store has, and verification.

A foundation: no room imports here but `oauthd.log` and `oauthd.clock`. The store's
backends write the records (with the change they describe); the CLI reads them offline.
"""

from oauthd.audit.chain import GENESIS, Chain, ChainHead, head_of, record_hash, seal
from oauthd.audit.event import Audit, AuditEvent, Plain, grant_ref, resolve
from oauthd.audit.reader import AuditReader
from oauthd.audit.trail import (
    AuditTrail,
    MemoryTrail,
    default_chain_name,
    log_durable,
    settle_pending,
)
from oauthd.audit.verify import Anchor, Problem, Verdict, verify

__all__ = [
    "GENESIS",
    "Anchor",
    "Audit",
    "AuditEvent",
    "AuditReader",
    "AuditTrail",
    "Chain",
    "ChainHead",
    "MemoryTrail",
    "Plain",
    "Problem",
    "Verdict",
    "default_chain_name",
    "grant_ref",
    "head_of",
    "log_durable",
    "record_hash",
    "resolve",
    "seal",
    "settle_pending",
    "verify",
]
