"""Every SQL statement of the SQLite store: constant strings, values always bound.

Kept apart from ``sqlite.py`` so the Python reads as Python; a PostgreSQL store writes its own.
"""

from __future__ import annotations

INSERT_SPAN = """
    INSERT INTO spans (
        id, trace_id, parent_id, key, name, span_type, started_at, ended_at, start_us, end_us,
        duration_ms, is_root, error, test_run_id, input_source_span_id, mocked, model,
        input_tokens, output_tokens, cached_tokens, cost_usd, replayable, record
    ) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
    ON CONFLICT (id) DO NOTHING
"""
INSERT_TRACE = """
    INSERT INTO traces (
        id, key, completed, expected_span_count, test_run_id, input_source_trace_id,
        started_at, ended_at, dropped, record, start_us
    ) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
    ON CONFLICT (id) DO NOTHING
"""
DROP_TRACE = """
    INSERT INTO traces (
        id, key, completed, expected_span_count, test_run_id, input_source_trace_id,
        started_at, ended_at, dropped, record, start_us
    ) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
    ON CONFLICT (id) DO UPDATE SET dropped = 1, record = excluded.record
    WHERE traces.dropped = 0
"""
DELETE_TRACE_SPANS = "DELETE FROM spans WHERE trace_id = ?"
# Lists of ids are bound as one BLOB, each id's UTF-8 followed by a 0xFF byte (which UTF-8
# never holds), and split by the "ids" CTE. json_each() would be simpler, but SQLite's JSON
# functions cut strings at an escaped NUL, so an id holding one would match nothing.
# CROSS JOIN makes SQLite walk the batch's ids and look each up by primary key, instead of
# scanning the traces table (which grows with the store) for dropped ones.
DROPPED_AMONG = """
    WITH RECURSIVE ids (id, rest) AS (
        SELECT NULL, CAST(? AS BLOB)
        UNION ALL
        SELECT CAST(substr(rest, 1, instr(rest, x'ff') - 1) AS TEXT),
               substr(rest, instr(rest, x'ff') + 1)
        FROM ids WHERE instr(rest, x'ff') > 0
    )
    SELECT t.id FROM ids AS j CROSS JOIN traces AS t ON t.id = j.id WHERE t.dropped = 1
"""

GET_SPAN = "SELECT record FROM spans WHERE id = ?"
TRACE_SPANS = "SELECT record FROM spans WHERE trace_id = ? ORDER BY start_us IS NULL, start_us, id"
SUBTREE = """
    WITH RECURSIVE subtree (id, trace_id) AS (
        SELECT id, trace_id FROM spans WHERE id = ?
        UNION
        SELECT s.id, s.trace_id FROM subtree AS p
        JOIN spans AS s ON s.trace_id = p.trace_id AND s.parent_id = p.id
    )
    SELECT record FROM spans WHERE id IN (SELECT id FROM subtree)
    ORDER BY start_us IS NULL, start_us, id
"""
GET_TRACE = "SELECT record FROM traces WHERE id = ? AND dropped = 0"
COMPLETED_SPAN_COUNTS = """
    WITH RECURSIVE ids (id, rest) AS (
        SELECT NULL, CAST(? AS BLOB)
        UNION ALL
        SELECT CAST(substr(rest, 1, instr(rest, x'ff') - 1) AS TEXT),
               substr(rest, instr(rest, x'ff') + 1)
        FROM ids WHERE instr(rest, x'ff') > 0
    )
    SELECT t.id, (SELECT COUNT(*) FROM spans AS s WHERE s.trace_id = t.id)
    FROM traces AS t
    WHERE t.id IN (SELECT id FROM ids) AND t.dropped = 0 AND t.completed = 1
"""
NEWEST_ROOTS = """
    SELECT record FROM spans
    WHERE is_root = 1 AND key = ? AND test_run_id IS NULL
    ORDER BY start_us DESC, id DESC
    LIMIT ?
"""
ROOTS_OF_TRACES = """
    WITH RECURSIVE ids (id, rest) AS (
        SELECT NULL, CAST(? AS BLOB)
        UNION ALL
        SELECT CAST(substr(rest, 1, instr(rest, x'ff') - 1) AS TEXT),
               substr(rest, instr(rest, x'ff') + 1)
        FROM ids WHERE instr(rest, x'ff') > 0
    )
    SELECT trace_id, record FROM spans
    WHERE trace_id IN (SELECT id FROM ids) AND is_root = 1
    ORDER BY start_us IS NULL, start_us, id
"""
FUNCTIONS = """
    SELECT key, name, calls, root_calls, errors, first_seen_us, last_seen_us, input_tokens,
           output_tokens, cached_tokens, durations
    FROM function_stats
    WHERE calls > 0
    ORDER BY key
"""
# Two statements rather than one with ":key IS NULL OR ...": that form would keep SQLite from
# using the per-key index.
TRACES_OF_KEY = """
    SELECT r.trace_id, r.id, r.key, r.name, r.started_at, r.start_us, r.duration_ms, r.error,
           r.test_run_id, t.id IS NOT NULL
    FROM spans AS r
    LEFT JOIN traces AS t ON t.id = r.trace_id AND t.dropped = 0 AND t.completed = 1
    WHERE r.is_root = 1 AND r.key = :key
      AND (:include_replays OR r.test_run_id IS NULL)
      AND (:before_us IS NULL OR r.start_us < :before_us)
      AND (NOT :errors_only OR r.error IS NOT NULL)
      AND (:pattern IS NULL
           OR json_extract(r.record, '$.rawSpan.span_data.input') LIKE :pattern ESCAPE '\\')
    ORDER BY r.start_us DESC, r.id DESC
    LIMIT :limit
"""
TRACES_OF_ALL_KEYS = """
    SELECT r.trace_id, r.id, r.key, r.name, r.started_at, r.start_us, r.duration_ms, r.error,
           r.test_run_id, t.id IS NOT NULL
    FROM spans AS r
    LEFT JOIN traces AS t ON t.id = r.trace_id AND t.dropped = 0 AND t.completed = 1
    WHERE r.is_root = 1
      AND (:include_replays OR r.test_run_id IS NULL)
      AND (:before_us IS NULL OR r.start_us < :before_us)
      AND (NOT :errors_only OR r.error IS NOT NULL)
      AND (:pattern IS NULL
           OR json_extract(r.record, '$.rawSpan.span_data.input') LIKE :pattern ESCAPE '\\')
    ORDER BY r.start_us DESC, r.id DESC
    LIMIT :limit
"""
TRACE_TOTALS = """
    WITH RECURSIVE ids (id, rest) AS (
        SELECT NULL, CAST(? AS BLOB)
        UNION ALL
        SELECT CAST(substr(rest, 1, instr(rest, x'ff') - 1) AS TEXT),
               substr(rest, instr(rest, x'ff') + 1)
        FROM ids WHERE instr(rest, x'ff') > 0
    )
    SELECT s.trace_id, COUNT(*), COALESCE(SUM(s.input_tokens), 0),
           COALESCE(SUM(s.output_tokens), 0), COALESCE(SUM(s.cached_tokens), 0),
           (SELECT m.model FROM spans AS m
            WHERE m.trace_id = s.trace_id AND m.model IS NOT NULL
            ORDER BY m.start_us, m.id LIMIT 1)
    FROM spans AS s
    WHERE s.trace_id IN (SELECT id FROM ids)
    GROUP BY s.trace_id
"""
REPLAY_TRACE_IDS = """
    SELECT trace_id FROM (
        SELECT trace_id, start_us FROM spans WHERE test_run_id = :run_id
        UNION ALL
        SELECT id, NULL FROM traces WHERE test_run_id = :run_id AND dropped = 0
    )
    GROUP BY trace_id
    ORDER BY MIN(start_us) IS NULL, MIN(start_us), trace_id
"""
COUNT_SPANS = "SELECT COUNT(*) FROM spans"

INSERT_RUN = """
    INSERT INTO test_runs (
        id, key, name, status, created_at, created_us, completed_at, options, code_version,
        summary, record
    ) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
    ON CONFLICT (id) DO NOTHING
"""
COMPLETE_RUN = "UPDATE test_runs SET status = ?, summary = ?, completed_at = ? WHERE id = ?"
SET_RUN_STATUS = "UPDATE test_runs SET status = ? WHERE id = ?"
DELETE_ITEMS = "DELETE FROM test_run_items WHERE run_id = ?"
INSERT_ITEM = """
    INSERT INTO test_run_items (
        run_id, idx, original_trace_id, original_span_id, replay_trace_id, verdict, item
    ) VALUES (?, ?, ?, ?, ?, ?, ?)
"""
GET_RUN = """
    SELECT id, key, name, status, created_at, completed_at, options, code_version, summary, record
    FROM test_runs WHERE id = ?
"""
LIST_RUNS = """
    SELECT id, key, name, status, created_at, completed_at, options, code_version, summary, record
    FROM test_runs
    WHERE :key IS NULL OR key = :key
    ORDER BY created_us DESC, id DESC
    LIMIT :limit
"""
GET_ITEMS = """
    SELECT idx, original_trace_id, original_span_id, replay_trace_id, verdict, item
    FROM test_run_items WHERE run_id = ? ORDER BY idx
"""

INSERT_KEY = """
    INSERT INTO api_keys (id, name, scope, key_hash, created_at, revoked_at, last_used_at)
    VALUES (?, ?, ?, ?, ?, ?, ?)
    ON CONFLICT DO NOTHING
"""
LIST_KEYS = """
    SELECT id, name, scope, key_hash, created_at, revoked_at, last_used_at
    FROM api_keys ORDER BY created_at, id
"""
FIND_KEY = """
    SELECT id, name, scope, key_hash, created_at, revoked_at, last_used_at
    FROM api_keys WHERE key_hash = ?
"""
GET_KEY = """
    SELECT id, name, scope, key_hash, created_at, revoked_at, last_used_at
    FROM api_keys WHERE id = ?
"""
REVOKE_KEY = "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, ?) WHERE id = ?"
TOUCH_KEY = "UPDATE api_keys SET last_used_at = ? WHERE id = ?"

# -- retention (bitfab.store.retention): each batch walks by keyset, oldest first ------------

PRUNE_RUNS = """
    DELETE FROM test_runs WHERE id IN (
        SELECT id FROM test_runs WHERE created_us < :cutoff ORDER BY created_us, id LIMIT :n
    )
"""
PRUNE_RUNS_OF_KEY = """
    DELETE FROM test_runs WHERE id IN (
        SELECT id FROM test_runs WHERE key = :key AND created_us < :cutoff
        ORDER BY created_us, id LIMIT :n
    )
"""
# A trace is kept when a run's item names it, or it was recorded under a stored run's id (by
# its root span or its completion record). Two statements, so each can use its own index.
PRUNE_ROOTS = """
    SELECT r.start_us, r.id, r.trace_id,
           EXISTS (SELECT 1 FROM test_run_items AS i WHERE i.original_trace_id = r.trace_id)
           OR EXISTS (SELECT 1 FROM test_run_items AS i WHERE i.replay_trace_id = r.trace_id)
           OR EXISTS (SELECT 1 FROM test_runs AS tr WHERE tr.id = r.test_run_id)
           OR EXISTS (SELECT 1 FROM traces AS t JOIN test_runs AS tr ON tr.id = t.test_run_id
                      WHERE t.id = r.trace_id)
    FROM spans AS r
    WHERE r.is_root = 1 AND r.start_us < :cutoff AND (r.start_us, r.id) > (:after_us, :after_id)
    ORDER BY r.start_us, r.id
    LIMIT :n
"""
PRUNE_ROOTS_OF_KEY = """
    SELECT r.start_us, r.id, r.trace_id,
           EXISTS (SELECT 1 FROM test_run_items AS i WHERE i.original_trace_id = r.trace_id)
           OR EXISTS (SELECT 1 FROM test_run_items AS i WHERE i.replay_trace_id = r.trace_id)
           OR EXISTS (SELECT 1 FROM test_runs AS tr WHERE tr.id = r.test_run_id)
           OR EXISTS (SELECT 1 FROM traces AS t JOIN test_runs AS tr ON tr.id = t.test_run_id
                      WHERE t.id = r.trace_id)
    FROM spans AS r
    WHERE r.is_root = 1 AND r.key = :key AND r.start_us < :cutoff
      AND (r.start_us, r.id) > (:after_us, :after_id)
    ORDER BY r.start_us, r.id
    LIMIT :n
"""
# DELETE comes first (the ids CTE inside): Python's sqlite3 counts the rows a statement
# changed only when it starts with INSERT, UPDATE, DELETE or REPLACE.
DELETE_SPANS_OF_TRACES = """
    DELETE FROM spans WHERE trace_id IN (
        WITH RECURSIVE ids (id, rest) AS (
            SELECT NULL, CAST(? AS BLOB)
            UNION ALL
            SELECT CAST(substr(rest, 1, instr(rest, x'ff') - 1) AS TEXT),
                   substr(rest, instr(rest, x'ff') + 1)
            FROM ids WHERE instr(rest, x'ff') > 0
        )
        SELECT id FROM ids
    )
"""
DELETE_TRACES = """
    DELETE FROM traces WHERE id IN (
        WITH RECURSIVE ids (id, rest) AS (
            SELECT NULL, CAST(? AS BLOB)
            UNION ALL
            SELECT CAST(substr(rest, 1, instr(rest, x'ff') - 1) AS TEXT),
                   substr(rest, instr(rest, x'ff') + 1)
            FROM ids WHERE instr(rest, x'ff') > 0
        )
        SELECT id FROM ids
    )
"""
# A marker goes whatever references it (its trace was dropped); a completion record goes when
# its trace has no span left and no run references it.
PRUNE_TRACE_RECORDS = """
    SELECT t.start_us, t.id,
           t.dropped = 1 OR NOT (
               EXISTS (SELECT 1 FROM spans AS s WHERE s.trace_id = t.id)
               OR EXISTS (SELECT 1 FROM test_run_items AS i WHERE i.original_trace_id = t.id)
               OR EXISTS (SELECT 1 FROM test_run_items AS i WHERE i.replay_trace_id = t.id)
               OR EXISTS (SELECT 1 FROM test_runs AS tr WHERE tr.id = t.test_run_id))
    FROM traces AS t
    WHERE t.start_us < :cutoff AND (t.start_us, t.id) > (:after_us, :after_id)
      AND (:key IS NULL OR t.key = :key)
    ORDER BY t.start_us, t.id
    LIMIT :n
"""

# -- the per-key summary (bitfab.store.function_stats), kept by every write and delete -------

# The calls a summary counts, in the column order of function_stats.Call.
ALL_CALLS = """
    SELECT key, is_root, error IS NOT NULL, start_us, id, name, duration_ms, input_tokens,
           output_tokens, cached_tokens
    FROM spans
    WHERE key IS NOT NULL AND test_run_id IS NULL
"""
CALLS_OF_TRACES = """
    WITH RECURSIVE ids (id, rest) AS (
        SELECT NULL, CAST(? AS BLOB)
        UNION ALL
        SELECT CAST(substr(rest, 1, instr(rest, x'ff') - 1) AS TEXT),
               substr(rest, instr(rest, x'ff') + 1)
        FROM ids WHERE instr(rest, x'ff') > 0
    )
    SELECT s.key, s.is_root, s.error IS NOT NULL, s.start_us, s.id, s.name, s.duration_ms,
           s.input_tokens, s.output_tokens, s.cached_tokens
    FROM ids AS j CROSS JOIN spans AS s ON s.trace_id = j.id
    WHERE s.key IS NOT NULL AND s.test_run_id IS NULL
"""
LAST_SPAN_ROWID = "SELECT COALESCE(MAX(rowid), 0) FROM spans"
SPAN_IDS_AFTER_ROWID = "SELECT id FROM spans WHERE rowid > ?"
# One key's change: counts and sums added, the newest call kept by (start, id) with unknown
# starts oldest, histogram counts added bucket by bucket (a bucket that reaches 0 goes). The
# parameters are function_stats.Changes.params(). SET expressions all see the old row.
UPSERT_FUNCTION_STATS = """
    INSERT INTO function_stats (
        key, calls, root_calls, errors, first_seen_us, last_seen_us, last_id, name,
        input_tokens, output_tokens, cached_tokens, durations
    ) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
    ON CONFLICT (key) DO UPDATE SET
        calls = calls + excluded.calls,
        root_calls = root_calls + excluded.root_calls,
        errors = errors + excluded.errors,
        first_seen_us = COALESCE(MIN(first_seen_us, excluded.first_seen_us), first_seen_us,
                                 excluded.first_seen_us),
        last_seen_us = COALESCE(MAX(last_seen_us, excluded.last_seen_us), last_seen_us,
                                excluded.last_seen_us),
        last_id = CASE
            WHEN excluded.last_id IS NOT NULL AND (last_id IS NULL
                 OR (COALESCE(excluded.last_seen_us, -9223372036854775807), excluded.last_id)
                    > (COALESCE(last_seen_us, -9223372036854775807), last_id))
            THEN excluded.last_id ELSE last_id END,
        name = CASE
            WHEN excluded.last_id IS NOT NULL AND (last_id IS NULL
                 OR (COALESCE(excluded.last_seen_us, -9223372036854775807), excluded.last_id)
                    > (COALESCE(last_seen_us, -9223372036854775807), last_id))
            THEN excluded.name ELSE name END,
        input_tokens = input_tokens + excluded.input_tokens,
        output_tokens = output_tokens + excluded.output_tokens,
        cached_tokens = cached_tokens + excluded.cached_tokens,
        durations = (
            SELECT json_group_object(b, n) FROM (
                SELECT b, SUM(n) AS n FROM (
                    SELECT j.key AS b, j.value AS n FROM json_each(function_stats.durations) AS j
                    UNION ALL
                    SELECT j.key, j.value FROM json_each(excluded.durations) AS j
                )
                GROUP BY b
                HAVING SUM(n) <> 0
            )
        )
"""
# After a delete: a key's first start and newest call, read again through spans_calls_by_key
# (two seeks, at either end of the key's range).
REREAD_FUNCTION_ENDS = """
    UPDATE function_stats SET
        first_seen_us = (
            SELECT start_us FROM spans
            WHERE key = :key AND test_run_id IS NULL AND start_us IS NOT NULL
            ORDER BY start_us LIMIT 1
        ),
        (last_seen_us, last_id, name) = (
            SELECT start_us, id, name FROM spans
            WHERE key = :key AND test_run_id IS NULL
            ORDER BY start_us DESC, id DESC LIMIT 1
        )
    WHERE key = :key
"""
DELETE_UNCALLED = "DELETE FROM function_stats WHERE key = ? AND calls <= 0"
