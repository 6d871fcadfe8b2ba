-- oauthd PostgreSQL schema, version 2: tell every oauthd instance at once when a grant or
-- an MCP session binding changes or goes, so that their read caches drop it
-- (oauthd/store/postgres_notify.py). One notification per changed row, delivered at
-- commit to every connection that LISTENs on the channel; the payload is
-- [schema, kind, key] as JSON, so that several oauthd schemas in one database can share
-- the channel. A TRUNCATE sends [schema, null, null]: forget everything. Inserts need no
-- notification: a cache only holds records that it found, and for a key to be inserted
-- again its row must have been deleted first (which notified).
CREATE FUNCTION oauthd_records_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        PERFORM pg_notify('oauthd_invalidate', json_build_array(TG_TABLE_SCHEMA, NULL, NULL)::text);
    ELSE
        PERFORM pg_notify('oauthd_invalidate', json_build_array(TG_TABLE_SCHEMA, OLD.kind, OLD.key)::text);
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER oauthd_records_invalidate
    AFTER UPDATE OR DELETE ON oauthd_records
    FOR EACH ROW WHEN (OLD.kind IN ('grants', 'mcp_sessions'))
    EXECUTE FUNCTION oauthd_records_changed();

CREATE TRIGGER oauthd_records_invalidate_all
    AFTER TRUNCATE ON oauthd_records
    FOR EACH STATEMENT
    EXECUTE FUNCTION oauthd_records_changed();
