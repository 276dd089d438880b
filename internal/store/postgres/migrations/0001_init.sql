-- vellum schema version 1.
--
-- The log data (logs, entries, hashes, checkpoints, event_ids, seqs) is
-- append-only: rows are inserted and never changed or removed. The
-- application's role is granted no UPDATE, DELETE or TRUNCATE on it (see
-- docs/postgres.md), and triggers refuse those statements for every role
-- that could otherwise run them, the tables' owner included.
--
-- The search tables are a projection of the entries, rebuildable from them
-- at any time: they may be emptied (TRUNCATE) and have no such triggers.
--
-- Text columns use the "C" collation: byte order, as in SQLite, whatever
-- the database's default collation, so that ORDER BY name and the action
-- prefix ranges of search mean the same on every server.

CREATE FUNCTION vellum_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	RAISE EXCEPTION 'vellum: % is append-only: % refused', TG_TABLE_NAME, lower(TG_OP)
		USING HINT = 'vellum never changes or removes log data; see docs/postgres.md';
END
$$;

CREATE TABLE logs (
	id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	name    text COLLATE "C" NOT NULL UNIQUE,
	created timestamptz NOT NULL
);

-- The canonical entry bytes: the Merkle leaves.
CREATE TABLE entries (
	log  bigint NOT NULL,
	idx  bigint NOT NULL,
	data bytea NOT NULL,
	PRIMARY KEY (log, idx)
) WITH (toast_tuple_target = 8160);

-- golang.org/x/mod/sumdb/tlog stored hashes.
CREATE TABLE hashes (
	log  bigint NOT NULL,
	id   bigint NOT NULL,
	hash bytea NOT NULL,
	PRIMARY KEY (log, id)
);

-- Every signed checkpoint; a log's size is its largest checkpoint size.
CREATE TABLE checkpoints (
	log  bigint NOT NULL,
	size bigint NOT NULL,
	note bytea NOT NULL,
	PRIMARY KEY (log, size)
);

CREATE TABLE event_ids (
	log        bigint NOT NULL,
	key_id     text COLLATE "C" NOT NULL,
	event_id   text COLLATE "C" NOT NULL,
	idx        bigint NOT NULL,
	event_hash bytea NOT NULL,
	PRIMARY KEY (log, key_id, event_id)
);

CREATE TABLE seqs (
	log        bigint NOT NULL,
	key_id     text COLLATE "C" NOT NULL,
	source     text COLLATE "C" NOT NULL,
	seq        bigint NOT NULL,
	idx        bigint NOT NULL,
	event_hash bytea NOT NULL,
	PRIMARY KEY (log, key_id, source, seq)
);

-- One statement-level trigger per table refuses UPDATE, DELETE and
-- TRUNCATE before any row is touched (also an INSERT ... ON CONFLICT DO
-- UPDATE, which fires UPDATE statement triggers). ENABLE ALWAYS keeps them
-- firing under session_replication_role = replica too.
DO $$
DECLARE t text;
BEGIN
	FOREACH t IN ARRAY ARRAY['logs', 'entries', 'hashes', 'checkpoints', 'event_ids', 'seqs'] LOOP
		EXECUTE format('CREATE TRIGGER %I BEFORE UPDATE OR DELETE OR TRUNCATE ON %I FOR EACH STATEMENT EXECUTE FUNCTION vellum_refuse_change()', t || '_append_only', t);
		EXECUTE format('ALTER TABLE %I ENABLE ALWAYS TRIGGER %I', t, t || '_append_only');
	END LOOP;
END
$$;

-- The search projection. Times are the entry's received time and the
-- event's own time (NULL when the event has none).
CREATE TABLE search (
	log      bigint NOT NULL,
	idx      bigint NOT NULL,
	received timestamptz NOT NULL,
	etime    timestamptz,
	action   text COLLATE "C" NOT NULL,
	actor    text COLLATE "C" NOT NULL,
	key_id   text COLLATE "C" NOT NULL,
	outcome  text COLLATE "C" NOT NULL,
	source   text COLLATE "C" NOT NULL,
	PRIMARY KEY (log, idx)
);
-- Each equality filter walks its index in idx order; no index on event
-- time (producers' clocks are not monotonic; it only ever filters).
CREATE INDEX search_actor ON search (log, actor, idx);
CREATE INDEX search_action ON search (log, action, idx);
CREATE INDEX search_key ON search (log, key_id, idx);
CREATE INDEX search_source ON search (log, source, idx);
-- Received times grow with idx: a time window becomes an idx range.
CREATE INDEX search_received ON search (log, received, idx);

CREATE TABLE search_targets (
	log    bigint NOT NULL,
	target text COLLATE "C" NOT NULL,
	ttype  text COLLATE "C" NOT NULL,
	idx    bigint NOT NULL,
	PRIMARY KEY (log, target, idx, ttype)
);

-- Full text: the words of the metadata, split and folded by vellum (see
-- docs/postgres.md), as a tsvector of plain lexemes.
CREATE TABLE search_text (
	log   bigint NOT NULL,
	idx   bigint NOT NULL,
	words tsvector NOT NULL,
	PRIMARY KEY (log, idx)
);
CREATE INDEX search_text_words ON search_text USING gin (words) WITH (gin_pending_list_limit = 1024);
