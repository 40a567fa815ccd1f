"""Every SQL statement of the PostgreSQL store: constant strings, values always bound.

They mirror ``sqlite_sql.py``. Where SQLite's ordering of NULLs differs (SQLite sorts NULL
first ascending, last descending), the NULLS clause says what SQLite does, so both backends
order alike. Lists of ids are bound as one array (``= ANY(%s)``).
"""

from __future__ import annotations

# -- writing -----------------------------------------------------------------------------------

# Per-trace advisory locks of this transaction, taken in the order given (sorted keys, so two
# transactions never wait on each other in a cycle): exclusive for traces being dropped or
# pruned, shared for traces receiving spans. unnest() feeds the aggregate row by row, in order.
LOCK_TRACES = """
    SELECT count(CASE WHEN u.x THEN pg_catalog.pg_advisory_xact_lock(%(space)s, u.k)::text
                      ELSE pg_catalog.pg_advisory_xact_lock_shared(%(space)s, u.k)::text END)
    FROM unnest(%(keys)s::int4[], %(exclusive)s::bool[]) AS u (k, x)
"""
INSERT_SPAN = """
    INSERT INTO spans (
        id, trace_id, parent_id, key, name, span_type, started_at, ended_at, start_us, end_us,
        duration_ms, is_root, error, test_run_id, input_source_span_id, mocked, model,
        input_tokens, output_tokens, cached_tokens, cost_usd, replayable, record, search_input
    ) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s,
              %s, %s, %s, %s)
    ON CONFLICT (id) DO NOTHING
"""
INSERT_TRACE = """
    INSERT INTO traces (
        id, key, completed, expected_span_count, test_run_id, input_source_trace_id,
        started_at, ended_at, dropped, record, start_us
    ) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
    ON CONFLICT (id) DO NOTHING
"""
DROP_TRACE = """
    INSERT INTO traces (
        id, key, completed, expected_span_count, test_run_id, input_source_trace_id,
        started_at, ended_at, dropped, record, start_us
    ) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
    ON CONFLICT (id) DO UPDATE SET dropped = 1, record = excluded.record
    WHERE traces.dropped = 0
"""
DELETE_SPANS_OF_TRACES = "DELETE FROM spans WHERE trace_id = ANY(%s::text[])"
# The same delete, giving back each span as the per-key summary counts it (function_stats.Call)
# followed by its test_run_id.
DELETE_CALLS_OF_TRACES = """
    DELETE FROM spans WHERE trace_id = ANY(%s::text[])
    RETURNING key, is_root, error IS NOT NULL, start_us, id, name, duration_ms, input_tokens,
              output_tokens, cached_tokens, test_run_id
"""
# INSERT_SPAN that names each row it inserted (executemany(..., returning=True)).
INSERT_SPAN_RETURNING = INSERT_SPAN + "    RETURNING id\n"
DELETE_TRACES = "DELETE FROM traces WHERE id = ANY(%s::text[])"
DROPPED_AMONG = "SELECT id FROM traces WHERE id = ANY(%s::text[]) AND dropped = 1"

# -- reading -----------------------------------------------------------------------------------

GET_SPAN = "SELECT record FROM spans WHERE id = %s"
TRACE_SPANS = "SELECT record FROM spans WHERE trace_id = %s ORDER BY start_us NULLS LAST, id"
SUBTREE = """
    WITH RECURSIVE subtree (id, trace_id) AS (
        SELECT id, trace_id FROM spans WHERE id = %s
        UNION
        SELECT s.id, s.trace_id FROM subtree AS p
        JOIN spans AS s ON s.trace_id = p.trace_id AND s.parent_id = p.id
    )
    SELECT record FROM spans WHERE id IN (SELECT id FROM subtree)
    ORDER BY start_us NULLS LAST, id
"""
GET_TRACE = "SELECT record FROM traces WHERE id = %s AND dropped = 0"
COMPLETED_SPAN_COUNTS = """
    SELECT t.id, (SELECT count(*) FROM spans AS s WHERE s.trace_id = t.id)
    FROM traces AS t
    WHERE t.id = ANY(%s::text[]) AND t.dropped = 0 AND t.completed = 1
"""
NEWEST_ROOTS = """
    SELECT record FROM spans
    WHERE is_root = 1 AND key = %s AND test_run_id IS NULL
    ORDER BY start_us DESC NULLS LAST, id DESC
    LIMIT %s
"""
ROOTS_OF_TRACES = """
    SELECT trace_id, record FROM spans
    WHERE trace_id = ANY(%s::text[]) AND is_root = 1
    ORDER BY start_us NULLS LAST, id
"""
FUNCTIONS = """
    SELECT key, name, calls, root_calls, errors, first_seen_us, last_seen_us, input_tokens,
           output_tokens, cached_tokens, durations
    FROM function_stats
    WHERE calls > 0
    ORDER BY key
"""
# Two statements rather than one with "key IS NULL OR ...", so each gets its own index.
TRACES_OF_KEY = """
    SELECT r.trace_id, r.id, r.key, r.name, r.started_at, r.start_us, r.duration_ms, r.error,
           r.test_run_id, t.id IS NOT NULL
    FROM spans AS r
    LEFT JOIN traces AS t ON t.id = r.trace_id AND t.dropped = 0 AND t.completed = 1
    WHERE r.is_root = 1 AND r.key = %(key)s
      AND (%(include_replays)s OR r.test_run_id IS NULL)
      AND (%(before_us)s::bigint IS NULL OR r.start_us < %(before_us)s::bigint)
      AND (NOT %(errors_only)s OR r.error IS NOT NULL)
      AND (%(pattern)s::text IS NULL OR r.search_input ILIKE %(pattern)s::text ESCAPE '\\')
    ORDER BY r.start_us DESC NULLS LAST, r.id DESC
    LIMIT %(limit)s
"""
TRACES_OF_ALL_KEYS = """
    SELECT r.trace_id, r.id, r.key, r.name, r.started_at, r.start_us, r.duration_ms, r.error,
           r.test_run_id, t.id IS NOT NULL
    FROM spans AS r
    LEFT JOIN traces AS t ON t.id = r.trace_id AND t.dropped = 0 AND t.completed = 1
    WHERE r.is_root = 1
      AND (%(include_replays)s OR r.test_run_id IS NULL)
      AND (%(before_us)s::bigint IS NULL OR r.start_us < %(before_us)s::bigint)
      AND (NOT %(errors_only)s OR r.error IS NOT NULL)
      AND (%(pattern)s::text IS NULL OR r.search_input ILIKE %(pattern)s::text ESCAPE '\\')
    ORDER BY r.start_us DESC NULLS LAST, r.id DESC
    LIMIT %(limit)s
"""
TRACE_TOTALS = """
    SELECT s.trace_id, count(*), COALESCE(sum(s.input_tokens), 0)::bigint,
           COALESCE(sum(s.output_tokens), 0)::bigint, COALESCE(sum(s.cached_tokens), 0)::bigint,
           (SELECT m.model FROM spans AS m
            WHERE m.trace_id = s.trace_id AND m.model IS NOT NULL
            ORDER BY m.start_us NULLS FIRST, m.id LIMIT 1)
    FROM spans AS s
    WHERE s.trace_id = ANY(%s::text[])
    GROUP BY s.trace_id
"""
REPLAY_TRACE_IDS = """
    SELECT trace_id FROM (
        SELECT trace_id, start_us FROM spans WHERE test_run_id = %(run_id)s
        UNION ALL
        SELECT id, NULL::bigint FROM traces WHERE test_run_id = %(run_id)s AND dropped = 0
    ) AS u
    GROUP BY trace_id
    ORDER BY min(start_us) NULLS LAST, trace_id
"""
COUNT_SPANS = "SELECT count(*) FROM spans"

# -- test runs ---------------------------------------------------------------------------------

INSERT_RUN = """
    INSERT INTO test_runs (
        id, key, name, status, created_at, created_us, completed_at, options, code_version,
        summary, record
    ) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
    ON CONFLICT (id) DO NOTHING
"""
COMPLETE_RUN = "UPDATE test_runs SET status = %s, summary = %s, completed_at = %s WHERE id = %s"
SET_RUN_STATUS = "UPDATE test_runs SET status = %s WHERE id = %s"
DELETE_ITEMS = "DELETE FROM test_run_items WHERE run_id = %s"
INSERT_ITEM = """
    INSERT INTO test_run_items (
        run_id, idx, original_trace_id, original_span_id, replay_trace_id, verdict, item
    ) VALUES (%s, %s, %s, %s, %s, %s, %s)
"""
GET_RUN = """
    SELECT id, key, name, status, created_at, completed_at, options, code_version, summary, record
    FROM test_runs WHERE id = %s
"""
LIST_RUNS = """
    SELECT id, key, name, status, created_at, completed_at, options, code_version, summary, record
    FROM test_runs
    WHERE %(key)s::text IS NULL OR key = %(key)s::text
    ORDER BY created_us DESC NULLS LAST, id DESC
    LIMIT %(limit)s
"""
GET_ITEMS = """
    SELECT idx, original_trace_id, original_span_id, replay_trace_id, verdict, item
    FROM test_run_items WHERE run_id = %s ORDER BY idx
"""

# -- API keys ----------------------------------------------------------------------------------

INSERT_KEY = """
    INSERT INTO api_keys (id, name, scope, key_hash, created_at, revoked_at, last_used_at)
    VALUES (%s, %s, %s, %s, %s, %s, %s)
    ON CONFLICT DO NOTHING
"""
LIST_KEYS = """
    SELECT id, name, scope, key_hash, created_at, revoked_at, last_used_at
    FROM api_keys ORDER BY created_at, id
"""
FIND_KEY = """
    SELECT id, name, scope, key_hash, created_at, revoked_at, last_used_at
    FROM api_keys WHERE key_hash = %s
"""
GET_KEY = """
    SELECT id, name, scope, key_hash, created_at, revoked_at, last_used_at
    FROM api_keys WHERE id = %s
"""
REVOKE_KEY = "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, %s) WHERE id = %s"
TOUCH_KEY = "UPDATE api_keys SET last_used_at = %s WHERE id = %s"

# -- retention (bitfab.store.retention): each batch walks by keyset, oldest first ------------

PRUNE_RUNS = """
    DELETE FROM test_runs WHERE id IN (
        SELECT id FROM test_runs WHERE created_us < %(cutoff)s
        ORDER BY created_us, id LIMIT %(n)s
    )
"""
PRUNE_RUNS_OF_KEY = """
    DELETE FROM test_runs WHERE id IN (
        SELECT id FROM test_runs WHERE key = %(key)s AND created_us < %(cutoff)s
        ORDER BY created_us, id LIMIT %(n)s
    )
"""
# A trace is kept when a run's item names it, or it was recorded under a stored run's id (by
# its root span or its completion record). NULLS FIRST changes nothing (the cutoff leaves no
# NULL start) but lets the roots' indexes (DESC NULLS LAST) be walked backwards, in order.
PRUNE_ROOTS = """
    SELECT r.start_us, r.id, r.trace_id,
           EXISTS (SELECT 1 FROM test_run_items AS i WHERE i.original_trace_id = r.trace_id)
           OR EXISTS (SELECT 1 FROM test_run_items AS i WHERE i.replay_trace_id = r.trace_id)
           OR EXISTS (SELECT 1 FROM test_runs AS tr WHERE tr.id = r.test_run_id)
           OR EXISTS (SELECT 1 FROM traces AS t JOIN test_runs AS tr ON tr.id = t.test_run_id
                      WHERE t.id = r.trace_id)
    FROM spans AS r
    WHERE r.is_root = 1 AND r.start_us < %(cutoff)s
      AND (r.start_us, r.id) > (%(after_us)s::bigint, %(after_id)s::text)
    ORDER BY r.start_us NULLS FIRST, r.id
    LIMIT %(n)s
"""
PRUNE_ROOTS_OF_KEY = """
    SELECT r.start_us, r.id, r.trace_id,
           EXISTS (SELECT 1 FROM test_run_items AS i WHERE i.original_trace_id = r.trace_id)
           OR EXISTS (SELECT 1 FROM test_run_items AS i WHERE i.replay_trace_id = r.trace_id)
           OR EXISTS (SELECT 1 FROM test_runs AS tr WHERE tr.id = r.test_run_id)
           OR EXISTS (SELECT 1 FROM traces AS t JOIN test_runs AS tr ON tr.id = t.test_run_id
                      WHERE t.id = r.trace_id)
    FROM spans AS r
    WHERE r.is_root = 1 AND r.key = %(key)s AND r.start_us < %(cutoff)s
      AND (r.start_us, r.id) > (%(after_us)s::bigint, %(after_id)s::text)
    ORDER BY r.start_us NULLS FIRST, r.id
    LIMIT %(n)s
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
    WHERE t.start_us < %(cutoff)s
      AND (t.start_us, t.id) > (%(after_us)s::bigint, %(after_id)s::text)
      AND (%(key)s::text IS NULL OR t.key = %(key)s::text)
    ORDER BY t.start_us, t.id
    LIMIT %(n)s
"""

# -- the per-key summary (bitfab.store.function_stats), kept by every write and delete -------

ALL_CALLS = """
    SELECT key, is_root, error IS NOT NULL, start_us, id, name, duration_ms, input_tokens,
           output_tokens, cached_tokens
    FROM spans
    WHERE key IS NOT NULL AND test_run_id IS NULL
"""
# One key's change: counts and sums added, the newest call kept by (start, id) with unknown
# starts oldest, histogram counts added bucket by bucket (a bucket that reaches 0 goes). The
# parameters are function_stats.Changes.params(); executed in key order, so concurrent writers
# lock the rows in one order. SET expressions all see the old row.
UPSERT_FUNCTION_STATS = """
    INSERT INTO function_stats AS f (
        key, calls, root_calls, errors, first_seen_us, last_seen_us, last_id, name,
        input_tokens, output_tokens, cached_tokens, durations
    ) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s::jsonb)
    ON CONFLICT (key) DO UPDATE SET
        calls = f.calls + excluded.calls,
        root_calls = f.root_calls + excluded.root_calls,
        errors = f.errors + excluded.errors,
        first_seen_us = LEAST(f.first_seen_us, excluded.first_seen_us),
        last_seen_us = GREATEST(f.last_seen_us, excluded.last_seen_us),
        last_id = CASE
            WHEN excluded.last_id IS NOT NULL AND (f.last_id IS NULL
                 OR (COALESCE(excluded.last_seen_us, -9223372036854775807), excluded.last_id)
                    > (COALESCE(f.last_seen_us, -9223372036854775807), f.last_id))
            THEN excluded.last_id ELSE f.last_id END,
        name = CASE
            WHEN excluded.last_id IS NOT NULL AND (f.last_id IS NULL
                 OR (COALESCE(excluded.last_seen_us, -9223372036854775807), excluded.last_id)
                    > (COALESCE(f.last_seen_us, -9223372036854775807), f.last_id))
            THEN excluded.name ELSE f.name END,
        input_tokens = f.input_tokens + excluded.input_tokens,
        output_tokens = f.output_tokens + excluded.output_tokens,
        cached_tokens = f.cached_tokens + excluded.cached_tokens,
        durations = (
            SELECT COALESCE(jsonb_object_agg(u.b, u.n), '{}'::jsonb) FROM (
                SELECT b, sum(n::bigint) AS n FROM (
                    SELECT * FROM jsonb_each_text(f.durations)
                    UNION ALL
                    SELECT * FROM jsonb_each_text(excluded.durations)
                ) AS j (b, n)
                GROUP BY b
                HAVING sum(n::bigint) <> 0
            ) AS u
        )
"""
# After a delete: a key's first start and newest call, read again through spans_calls_by_key
# (two short walks, from either end of the key's range).
REREAD_FUNCTION_ENDS = """
    UPDATE function_stats SET
        first_seen_us = (
            SELECT start_us FROM spans
            WHERE key = %(key)s AND test_run_id IS NULL AND start_us IS NOT NULL
            ORDER BY start_us NULLS FIRST LIMIT 1
        ),
        (last_seen_us, last_id, name) = (
            SELECT start_us, id, name FROM spans
            WHERE key = %(key)s AND test_run_id IS NULL
            ORDER BY start_us DESC NULLS LAST, id DESC LIMIT 1
        )
    WHERE key = %(key)s
"""
DELETE_UNCALLED = "DELETE FROM function_stats WHERE key = ANY(%s::text[]) AND calls <= 0"
