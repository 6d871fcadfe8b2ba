-- oauthd PostgreSQL schema, version 4: the audit trail (oauthd/store/postgres_audit.py).
-- One row per record; each oauthd instance appends to its own chain (`[audit] chain`),
-- in the same statement or transaction as the change the record describes. `record` is
-- the sealed JSON line exactly as hashed (text, not jsonb, which would reorder it); `n`
-- its position in the chain, `at` its time (seconds since the epoch, oauthd's clock).
-- The primary key makes a fork impossible: a second record at one position fails, and
-- with it the change it came with. Retention deletes by `at`, keeping each chain's last.
CREATE TABLE oauthd_audit (
    chain text NOT NULL,
    n bigint NOT NULL,
    at double precision NOT NULL,
    record text NOT NULL,
    PRIMARY KEY (chain, n)
);

CREATE INDEX oauthd_audit_at ON oauthd_audit (at);
