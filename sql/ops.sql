--
-- ops: what operators see and do from psql -- queue_stats and
-- delivery_stats against a known workload, history, requeue, cancel,
-- pause/resume, notify_workers, and the roles.
--
\set VERBOSITY default
\set SHOW_CONTEXT never

-- a clean slate with one webhook provider
TRUNCATE notify.outbox, notify.deliveries, notify.attempts, notify.notifications RESTART IDENTITY CASCADE;
DELETE FROM notify.providers;
SELECT notify_set_provider('ops', 'webhook', '{"endpoint": "https://hooks.example.com/ops"}');
SELECT notify_upsert_recipient('opal') > 0 AS ok;
SELECT notify_put_template('ops_ping', 'webhook', '{"body": {"n": "{{n}}"}}') AS v;

-- a known workload: 3 ready (one of them 10 minutes late), 2 scheduled,
-- 1 in flight, 1 waiting to retry, at priorities 0 and 5
SELECT count(notify_send('opal', 'ops_ping', jsonb_build_object('n', i))) AS ready FROM generate_series(1, 3) i;
SELECT count(notify_send('opal', 'ops_ping', jsonb_build_object('n', i), send_at => now() + interval '1 day')) AS scheduled
  FROM generate_series(4, 5) i;
SELECT notify_send('opal', 'ops_ping', '{"n": 6}', priority => 5) AS inflight_id \gset
SELECT notify_send('opal', 'ops_ping', '{"n": 7}', priority => 5) AS retry_id \gset
UPDATE notify.outbox SET next_attempt_at = now() - interval '10 minutes'
 WHERE id = (SELECT min(id) FROM notify.outbox);
UPDATE notify.outbox SET status = 'inflight', attempts = 1, lease_until = now() + interval '1 minute'
 WHERE notification_id = :inflight_id;
UPDATE notify.outbox SET status = 'retry', attempts = 1, next_attempt_at = now() + interval '5 minutes'
 WHERE notification_id = :retry_id;

-- and history: 4 sent (latencies 100..400 ms), 1 failed, 2 dead, 1 expired
CREATE TEMP TABLE made (status text, ms int, ago interval, nid bigint);
INSERT INTO made VALUES ('sent', 100, '10 s'), ('sent', 200, '20 s'), ('sent', 300, '2 min'), ('sent', 400, '2 min'),
                        ('failed', NULL, '30 s'), ('dead', NULL, '3 min'), ('dead', NULL, '2 h'), ('expired', NULL, '40 s');
UPDATE made SET nid = notify_send('opal', 'ops_ping', '{"n": 0}');
INSERT INTO notify.deliveries (id, notification_id, recipient_id, channel, provider, destination, priority,
                               status, attempts, last_error, provider_status, created_at, sent_at, finished_at)
SELECT nextval(pg_get_serial_sequence('notify.outbox', 'id')), n.id, n.recipient_id, 'webhook', 'ops', '', 0,
       m.status, CASE m.status WHEN 'dead' THEN 10 ELSE 1 END,
       CASE WHEN m.status <> 'sent' THEN 'webhook 503: try later' END,
       CASE WHEN m.status = 'sent' THEN 200 WHEN m.status <> 'expired' THEN 503 END,
       now() - m.ago, now() - m.ago + m.ms * interval '1 ms', now() - m.ago + coalesce(m.ms, 0) * interval '1 ms'
  FROM made m JOIN notify.notifications n ON n.id = m.nid;
DELETE FROM notify.outbox o USING notify.deliveries d WHERE d.notification_id = o.notification_id;

SELECT provider, priority, ready, scheduled, in_flight, retrying, dead,
       lag >= interval '10 minutes' AS lag_10min, delivered_1m, failed_1m, delivered_1h, failed_1h
  FROM notify.queue_stats;

SELECT provider, sent, failed, dead, expired, success_rate, p50_ms, p95_ms, p99_ms
  FROM notify_delivery_stats(interval '1 hour');
SELECT provider, sent FROM notify.delivery_stats;   -- the last 5 minutes

-- history: every attempt, newest notification first
UPDATE notify.outbox SET status = 'retry', attempts = 2 WHERE notification_id = :retry_id;
INSERT INTO notify.attempts (outbox_id, attempt, at, outcome, provider_status, error)
SELECT id, 1, now() - interval '1 minute', 'retry', 503, 'webhook 503: try later'
  FROM notify.outbox WHERE notification_id = :retry_id;
SELECT notification_id = :retry_id AS is_retry_row, channel, attempt, outcome, provider_status, error
  FROM notify_history('opal', 20) WHERE notification_id = :retry_id;
SELECT outcome, count(*) FROM notify_history('opal') GROUP BY 1 ORDER BY 1;
SELECT count(*) FROM notify_history('opal', 2);
SELECT * FROM notify_history('nobody');
SELECT * FROM notify_history('opal', 0);

-- requeue: one dead delivery by id, then all dead ones of a provider
SELECT id AS dead_id FROM notify.deliveries WHERE status = 'dead' ORDER BY id LIMIT 1 \gset
SELECT notify_requeue(:dead_id) AS requeued;
SELECT status, attempts, attempt_base, next_attempt_at <= now() AS due, last_error
  FROM notify.outbox WHERE id = :dead_id;
SELECT attempt, outcome, error FROM notify.attempts WHERE outbox_id = :dead_id;
SELECT notify_requeue(:dead_id);                     -- it is not finished any more
SELECT id AS sent_id FROM notify.deliveries WHERE status = 'sent' LIMIT 1 \gset
SELECT notify_requeue(:sent_id);                     -- sent is final
SELECT notify_requeue('ops') AS requeued_rest;        -- the other dead one
SELECT notify_requeue('ops', status => 'failed', since => now() - interval '1 minute') AS requeued_failed;
SELECT notify_requeue('nope');
SELECT notify_requeue('ops', status => 'sent');
SELECT count(*) AS dead_left FROM notify.deliveries WHERE status = 'dead';

-- cancel: what is not sent is cancelled; what is in flight goes on
SELECT notify_cancel(:inflight_id) AS cancelled;
SELECT notify_send('opal', 'ops_ping', '{"n": 9}', send_at => now() + interval '1 hour') AS later_id \gset
SELECT notify_cancel(:later_id) AS cancelled;
SELECT status, last_error LIKE 'cancelled by %' AS by_whom FROM notify_status(:later_id);
SELECT notify_cancel(-1);

-- pause / resume
SELECT notify_pause('ops');
SELECT paused FROM notify.providers WHERE name = 'ops';
SELECT notify_resume('ops');
SELECT paused FROM notify.providers WHERE name = 'ops';
SELECT notify_pause('nope');

-- notify_workers() is empty without shared_preload_libraries
SELECT count(*) FROM notify_workers();

-- roles: a sender sends and manages contacts, and nothing else
CREATE ROLE ops_sender LOGIN IN ROLE notify_sender;
CREATE ROLE ops_admin LOGIN IN ROLE notify_admin;
CREATE ROLE ops_nobody LOGIN;
SET ROLE ops_sender;
SELECT notify_upsert_recipient('sam') > 0 AS upserted;
SELECT notify_set_preference('sam', 'sms', false);
SELECT notify_send('sam', 'ops_ping', '{"n": 1}') > 0 AS sent;
SELECT * FROM notify.providers;
SELECT * FROM notify.provider_settings;
SELECT * FROM notify.recipients;
SELECT count(*) FROM notify_history('opal');
SELECT notify_status(1);
SELECT notify_set_provider('ops', 'webhook', '{"endpoint": "https://evil.example.com"}');
SELECT notify_put_template('ops_ping', 'webhook', '{"body": "pwned"}');
SELECT notify_requeue('ops');
SELECT notify._render('{}', 'sms', '{}', NULL, 't');
RESET ROLE;

-- ...nor escalate through search_path or an overloaded operator
CREATE SCHEMA ops_evil AUTHORIZATION ops_sender;
SET ROLE ops_sender;
CREATE FUNCTION ops_evil.lower(text) RETURNS text LANGUAGE sql AS $$ SELECT 'pwned' $$;
CREATE FUNCTION ops_evil.texteq_evil(text, text) RETURNS boolean LANGUAGE sql AS $$ SELECT true $$;
CREATE OPERATOR ops_evil.= (LEFTARG = text, RIGHTARG = text, FUNCTION = ops_evil.texteq_evil);
SET search_path = ops_evil, public, pg_catalog;
SELECT notify_register_device('sam', 'ios', repeat('AB', 32)) > 0 AS registered;
SELECT notify_send('nobody-at-all', 'ops_ping', '{"n": 1}');   -- still unknown: "=" was not hijacked
RESET search_path;
RESET ROLE;
SELECT token FROM notify.devices WHERE recipient_id = (SELECT id FROM notify.recipients WHERE external_id = 'sam');

-- an admin operates, but still cannot read secrets
SET ROLE ops_admin;
SELECT provider, ready FROM notify.queue_stats LIMIT 1;
SELECT name, config FROM notify.provider_settings;
SELECT config FROM notify.providers;
SELECT notify_pause('ops');
SELECT notify_resume('ops');
RESET ROLE;

-- PUBLIC gets nothing
SET ROLE ops_nobody;
SELECT notify_send('sam', 'ops_ping', '{"n": 1}');
SELECT notify_upsert_recipient('x');
SELECT * FROM notify.queue_stats;
RESET ROLE;

DROP SCHEMA ops_evil CASCADE;
DROP ROLE ops_sender, ops_admin, ops_nobody;
