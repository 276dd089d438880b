-- vellum schema version 2: sequencer leases.
--
-- Several nodes on one database: the node holding a log's sticky sequencer
-- lease (a session-level advisory lock on a dedicated connection) sequences
-- that log, and the other nodes forward their appends to it. When a node
-- takes a lease it inserts a row here with the address it advertises; the
-- newest row of a log names its holder (or its last one, if the lease is
-- free again). Rows are only inserted: the table is the history of which
-- node sequenced which log since when. It is operational data, not log
-- data: nothing is proved with it, and old rows may be deleted by the owner.

CREATE TABLE sequencer_leases (
	id    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	log   text COLLATE "C" NOT NULL,
	url   text NOT NULL,
	since timestamptz NOT NULL DEFAULT clock_timestamp()
);

CREATE INDEX sequencer_leases_log ON sequencer_leases (log, id);
