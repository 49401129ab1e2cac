--
-- features: quiet hours, frequency caps, groups with approval, engagement
-- tracking
--
\set VERBOSITY default
\set SHOW_CONTEXT never

SELECT notify_set_provider('fsms', 'twilio', '{"account_sid": "AC0123456789abcdef0123456789abcdef", "auth_token": "t", "from": "+15005550006"}');
SELECT notify_set_provider('fmail', 'smtp', '{"endpoint": "smtp://127.0.0.1:2525", "tls": "none", "from": "shop@example.com"}');
DELETE FROM notify.providers WHERE kind IN ('twilio', 'smtp') AND name NOT IN ('fsms', 'fmail');
SELECT notify_put_template('promo', 'sms', '{"body": "Sale: {{pct}}% off"}');
SELECT notify_put_template('promo', 'email', '{"subject": "Sale", "text": "{{pct}}% off"}');

-- quiet hours: an SMS during the recipient's night waits for the morning
-- (the window is built around the current time so the test holds at any hour)
SELECT to_char(now() AT TIME ZONE 'Asia/Tokyo' - interval '1 hour', 'HH24:MI') || '-' ||
       to_char(now() AT TIME ZONE 'Asia/Tokyo' + interval '2 hours', 'HH24:MI') AS quiet \gset
SELECT notify_upsert_recipient('night', phone => '+819012345678', email => 'night@example.jp',
       timezone => 'Asia/Tokyo', attributes => jsonb_build_object('quiet_hours', :'quiet')) > 0 AS ok;
SELECT notify_send('night', 'promo', '{"pct": 10}') AS q1 \gset
SELECT channel, status, next_attempt_at > now() + interval '100 minutes' AS held_till_morning
  FROM notify.outbox WHERE notification_id = :q1 ORDER BY channel;
-- urgent ones (priority >= 5) go at once
SELECT notify_send('night', 'promo', '{"pct": 10}', channels => '{sms}', priority => 5) AS q2 \gset
SELECT status, next_attempt_at <= now() AS now FROM notify.outbox WHERE notification_id = :q2;
SELECT notify_upsert_recipient('night', attributes => '{"quiet_hours": "late"}');
SELECT notify._quiet_until('22:00-07:00', 'UTC', '2030-01-01 23:30+00') AT TIME ZONE 'UTC' AS wraps_midnight,
       notify._quiet_until('22:00-07:00', 'UTC', '2030-01-01 06:00+00') AT TIME ZONE 'UTC' AS early_morning,
       notify._quiet_until('22:00-07:00', 'UTC', '2030-01-01 12:00+00') AT TIME ZONE 'UTC' AS daytime,
       notify._quiet_until('01:00-05:00', 'Asia/Tokyo', '2030-01-01 18:30+00') AT TIME ZONE 'Asia/Tokyo' AS tokyo_night;

-- frequency caps: at most 2 promo SMS a day; the third is suppressed
SELECT notify_upsert_recipient('capped', phone => '+14155550199', email => 'capped@example.com') > 0 AS ok;
SELECT notify_set_frequency_cap('sms', 2, '1 day', category => 'promo');
SELECT notify_send('capped', 'promo', '{"pct": 5}', category => 'promo') > 0 FROM generate_series(1, 3);
SELECT n.id - min(n.id) OVER () AS nth, s.channel, s.status, s.last_error
  FROM notify.notifications n, notify_status(n.id) s
 WHERE n.recipient = 'capped' ORDER BY n.id, s.channel;
-- other categories are not capped
SELECT notify_send('capped', 'promo', '{"pct": 5}', channels => '{sms}', category => 'orders') AS other \gset
SELECT status FROM notify_status(:other);
SELECT notify_set_frequency_cap('sms', 0, '1 day');
SELECT notify_set_frequency_cap('sms', NULL, NULL, category => 'promo');   -- removes it
SELECT count(*) AS caps FROM notify.frequency_caps;

-- groups, and approval above notify.approval_threshold
SELECT count(notify_upsert_recipient('g' || i, email => 'g' || i || '@example.com')) AS members FROM generate_series(1, 5) i;
SELECT notify_group_add('beta', ARRAY['g1', 'g2', 'g3', 'g4', 'g5']) AS added;
SELECT notify_group_add('beta', ARRAY['g1']) AS added_again;
SELECT notify_group_add('beta', ARRAY['nobody']);
SELECT notify_group_remove('beta', ARRAY['g5']) AS removed;
SET notify.approval_threshold = 10;
SELECT notify_send_group('beta', 'promo', '{"pct": 20}', channels => '{email}') AS b1 \gset
SELECT status, recipients FROM notify.bulk_sends WHERE id = :b1;
SELECT count(*) AS sent_to FROM notify.notifications WHERE idempotency_key LIKE 'bulk-' || :b1 || '-%';
SET notify.approval_threshold = 3;
SELECT notify_send_group('beta', 'promo', '{"pct": 30}', channels => '{email}') AS b2 \gset
SELECT status, recipients FROM notify.bulk_sends WHERE id = :b2;
SELECT count(*) AS sent_before_approval FROM notify.notifications WHERE idempotency_key LIKE 'bulk-' || :b2 || '-%';
SELECT notify_approve(:b2) AS sent;
SELECT status, decided_by IS NOT NULL AS decided FROM notify.bulk_sends WHERE id = :b2;
SELECT notify_approve(:b2);
SELECT notify_send_group('beta', 'promo', '{"pct": 40}', channels => '{email}') AS b3 \gset
SELECT notify_reject(:b3);
SELECT status FROM notify.bulk_sends WHERE id = :b3;
SELECT notify_send_group('nope', 'promo');
RESET notify.approval_threshold;

-- engagement tracking on a sent delivery
INSERT INTO notify.deliveries (id, notification_id, recipient_id, channel, priority, status, created_at, sent_at)
SELECT 990001, n.id, n.recipient_id, 'email', 0, 'sent', now(), now()
  FROM notify.notifications n WHERE n.recipient = 'g1' LIMIT 1;
SELECT notify_track(990001, 'clicked', '2030-01-01 10:00+00') AS tracked;
SELECT notify_track(990001, 'opened', '2030-01-01 11:00+00') AS tracked;
SELECT delivered_at AT TIME ZONE 'UTC' AS delivered, opened_at AT TIME ZONE 'UTC' AS opened,
       clicked_at AT TIME ZONE 'UTC' AS clicked FROM notify.deliveries WHERE id = 990001;
SELECT notify_track(990001, 'liked');
SELECT notify_track(-1, 'opened') AS tracked;
