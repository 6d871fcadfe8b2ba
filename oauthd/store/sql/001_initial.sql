-- oauthd PostgreSQL schema, version 1: every record kind in one table, keyed by
-- (kind, key); the record is its JSON document (hashes and ciphertexts only, never a
-- secret in clear); expires_at (seconds since the epoch, NULL = never) drives the sweeper.
CREATE TABLE oauthd_records (
    kind text NOT NULL,
    key text NOT NULL,
    record jsonb NOT NULL,
    expires_at double precision NULL,
    PRIMARY KEY (kind, key)
);

CREATE INDEX oauthd_records_expires_at ON oauthd_records (expires_at)
    WHERE expires_at IS NOT NULL;
