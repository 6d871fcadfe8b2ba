-- oauthd PostgreSQL schema, version 3: the rate limits' counters, shared by every oauthd
-- instance (oauthd/store/postgres_counters.py). One row per counter: its count in the
-- fixed window that ends at window_end (seconds since the epoch, by oauthd's clock); the
-- first count after that opens a new window. UNLOGGED: a counter is not worth a WAL
-- record, and losing them in a crash or a failover only forgets some rate limits. The
-- sweeper deletes rows whose window ended.
CREATE UNLOGGED TABLE oauthd_counters (
    key text PRIMARY KEY,
    count bigint NOT NULL,
    window_end double precision NOT NULL
);

CREATE INDEX oauthd_counters_window_end ON oauthd_counters (window_end);
