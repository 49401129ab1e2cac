--
-- send: notify_send end to end inside the database (no workers needed):
-- destinations, suppression, skips, rollback, scheduling, versions,
-- escaping, payload limits, and every validation error.
--
\set VERBOSITY default
\set SHOW_CONTEXT never

-- a throwaway P-256 key, made for these tests only
\set p8 '-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgcevJWjeE5p79hEyd\npBcrxfb2LN6i0oPbQU6Q/Mehq6KhRANCAATetCqEBApQKTOfHZ4/oHNaJK16MD4D\neP+9/NUDJlSqZ+G131JOO3QptdWLR9fYOaNVDa7sFVY7vGJgyNsKInmY\n-----END PRIVATE KEY-----'
SELECT notify_set_provider('apns', 'apns', jsonb_build_object(
  'team_id', 'DEF123GHIJ', 'key_id', 'ABC123DEFG', 'key', :'p8', 'topic', 'com.example.app'));
SELECT notify_set_provider('webpush', 'webpush', jsonb_build_object(
  'vapid_private_key', :'p8', 'subject', 'mailto:ops@example.com'));
SELECT notify_set_provider('twilio', 'twilio', '{"account_sid": "AC0123456789abcdef0123456789abcdef", "auth_token": "tw-secret", "from": "+15005550006"}');
SELECT notify_set_provider('smtp', 'smtp', '{"endpoint": "smtp://127.0.0.1:2525", "tls": "none", "from": "shop@example.com", "username": "u", "password": "smtp-secret"}');
SELECT notify_set_provider('hooks', 'webhook', '{"endpoint": "http://127.0.0.1:9/hook", "secret": "hook-secret"}');

SELECT notify_upsert_recipient('alice', email => 'alice@example.com', phone => '+14155550100',
                               locale => 'en', attributes => '{"first_name": "Alice"}');
SELECT notify_register_device('alice', 'ios', repeat('a1', 32));
SELECT notify_register_device('alice', 'web',
  '{"endpoint": "https://push.example.net/send/alice",
    "keys": {"p256dh": "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4",
             "auth": "BTBZMqHH6r4Tts7J_aSIgg"}}');
SELECT notify_upsert_recipient('bob', email => 'bob@example.com');   -- no phone, no device

SELECT notify_put_template('order_shipped', 'push', '{"title": "Order {{order.id}} shipped", "body": "Hi {{first_name}}, it is on its way", "data": {"order_id": "{{order.id}}"}}');
SELECT notify_put_template('order_shipped', 'sms', '{"body": "Order {{order.id}} shipped"}');
SELECT notify_put_template('order_shipped', 'email', '{"subject": "Order {{order.id}} shipped", "text": "Hi {{first_name}}, {{note}}", "html": "<p>Hi {{first_name}}, {{note}}</p>{{#coupon}}<p>Code {{coupon}}</p>{{/coupon}}"}');
SELECT notify_put_template('ping', 'webhook', '{"body": {"event": "ping", "n": "{{n}}"}}');

-- one outbox row per destination: two devices, one phone, one address
SELECT notify_send('alice', 'order_shipped', '{"order": {"id": 42}, "note": "<b>thanks</b> & bye"}') AS n1 \gset
SELECT channel, provider, destination, status, attempts FROM notify_status(:n1) ORDER BY channel, destination;
SELECT template, category, priority, versions FROM notify.notifications WHERE id = :n1;
-- html is escaped in the email's html part only
SELECT rendered->'email'->>'html' AS html, rendered->'email'->>'text' AS text FROM notify.notifications WHERE id = :n1;
SELECT rendered->'push' AS push FROM notify.notifications WHERE id = :n1;

-- channels narrows; a recipient without a phone or device gets 'skipped' rows
SELECT notify_send('bob', 'order_shipped', '{"order": {"id": 7}, "note": "n", "first_name": "Bob"}', channels => ARRAY['sms', 'push']) AS n2 \gset
SELECT channel, provider, status, last_error FROM notify_status(:n2) ORDER BY channel;

-- rollback leaves no trace
SELECT count(*) AS notifications, (SELECT count(*) FROM notify.outbox) AS outbox FROM notify.notifications \gset before_
BEGIN;
SELECT notify_send('alice', 'order_shipped', '{"order": {"id": 1}, "note": "x"}') > 0 AS sent_in_tx;
ROLLBACK;
SELECT count(*) = :before_notifications AS notifications_unchanged,
       (SELECT count(*) FROM notify.outbox) = :before_outbox AS outbox_unchanged
  FROM notify.notifications;

-- opt-out: suppressed rows, not silence; a category row beats the channel row
SELECT notify_set_preference('alice', 'sms', false);
SELECT notify_set_preference('alice', 'email', false);
SELECT notify_set_preference('alice', 'email', true, category => 'orders');
SELECT notify_send('alice', 'order_shipped', '{"order": {"id": 43}, "note": "n"}', category => 'orders') AS n3 \gset
SELECT channel, provider, status, last_error FROM notify_status(:n3) ORDER BY channel, destination;
SELECT notify_send('alice', 'order_shipped', '{"order": {"id": 44}, "note": "n"}', category => 'marketing') AS n4 \gset
SELECT channel, status FROM notify_status(:n4) ORDER BY channel, destination;
SELECT notify_set_preference('alice', 'sms', true);
SELECT notify_set_preference('alice', 'email', true);

-- priorities, scheduling, expiry are recorded on the outbox rows
SELECT notify_send('alice', 'order_shipped', '{"order": {"id": 45}, "note": "n"}', channels => '{sms}',
                   priority => 5, send_at => now() + interval '1 hour',
                   expires_at => now() + interval '2 hours') AS n5 \gset
SELECT channel, status FROM notify_status(:n5);
SELECT priority, next_attempt_at > now() AS later, expires_at > next_attempt_at AS expires_after
  FROM notify.outbox WHERE notification_id = :n5;

-- sections: optional parts
SELECT notify_send('alice', 'order_shipped', '{"order": {"id": 46}, "note": "n", "coupon": "SAVE10"}', channels => '{email}') AS n6 \gset
SELECT rendered->'email'->>'html' AS html FROM notify.notifications WHERE id = :n6;

-- each notification records the template version it used
SELECT notify_put_template('order_shipped', 'sms', '{"body": "Order {{order.id}} is on its way"}') AS v2;
SELECT notify_send('alice', 'order_shipped', '{"order": {"id": 47}}', channels => '{sms}') AS n7 \gset
SELECT id = :n7 AS newest, versions, rendered->'sms'->>'body' AS body
  FROM notify.notifications WHERE id IN (:n1, :n7) ORDER BY id;

-- webhook channel: the destination is the provider's endpoint
SELECT notify_send('bob', 'ping', '{"n": 1}') AS n8 \gset
SELECT channel, provider, destination, status FROM notify_status(:n8);

-- idempotency: the same key returns the first id and writes nothing
SELECT notify_send('bob', 'ping', '{"n": 2}', idempotency_key => 'evt-100') AS k1 \gset
SELECT notify_send('bob', 'ping', '{"n": 3}', idempotency_key => 'evt-100') = :k1 AS same_id;
SELECT count(*) AS rows_for_key FROM notify.notifications WHERE idempotency_key = 'evt-100';
SELECT count(*) AS outbox_rows FROM notify.outbox o JOIN notify.notifications n ON n.id = o.notification_id
 WHERE n.idempotency_key = 'evt-100';

-- errors: clear, and nothing written
SELECT count(*) AS notifications FROM notify.notifications \gset before_
SELECT notify_send('nobody', 'order_shipped', '{}');
SELECT notify_send('alice', 'no_such_template', '{}');
SELECT notify_send('alice', 'ping', '{"n": 1}', channels => '{sms}');
SELECT notify_send('alice', 'order_shipped', '{}', channels => '{fax}');
SELECT notify_send('alice', 'order_shipped', '{}', channels => '{}');
SELECT notify_send('alice', 'order_shipped', '[1, 2]');
SELECT notify_send('alice', 'order_shipped', '"text"');
SELECT notify_send('alice', 'order_shipped', '{"order": {"id": 1}}', channels => '{email}');
SELECT notify_send('alice', 'order_shipped', '{"order": {"id": 1}, "note": "n"}', priority => 11);
SELECT notify_send('alice', 'order_shipped', '{"order": {"id": 1}, "note": "n"}',
                   send_at => '2030-01-02', expires_at => '2030-01-01');
SELECT notify_send('alice', 'order_shipped', '{"order": {"id": 1}, "note": "n"}', idempotency_key => '');
-- a push payload over APNS's 4096 bytes is refused at send time
SELECT notify_send('alice', 'order_shipped', jsonb_build_object('order', jsonb_build_object('id', repeat('x', 4200)), 'note', 'n'), channels => '{push}');
SELECT count(*) = :before_notifications AS nothing_written FROM notify.notifications;

-- no provider for a channel
SELECT notify_put_template('reminder', 'email', '{"subject": "s", "text": "t"}');
DELETE FROM notify.providers WHERE name = 'smtp';
SELECT notify_send('alice', 'reminder');

-- an application trigger: send "order shipped" when an order's status changes
CREATE TABLE orders (id bigint PRIMARY KEY, customer text NOT NULL, status text NOT NULL);
CREATE FUNCTION orders_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.status = 'shipped' AND OLD.status IS DISTINCT FROM 'shipped' THEN
    PERFORM notify_send(NEW.customer, 'order_shipped',
                        jsonb_build_object('order', jsonb_build_object('id', NEW.id), 'note', 'thanks'),
                        channels => ARRAY['push'],
                        idempotency_key => 'order-shipped-' || NEW.id);
  END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER orders_notify AFTER UPDATE OF status ON orders
  FOR EACH ROW EXECUTE FUNCTION orders_notify();
INSERT INTO orders VALUES (900, 'alice', 'paid');
UPDATE orders SET status = 'shipped' WHERE id = 900;
UPDATE orders SET status = 'shipped' WHERE id = 900;   -- no second notification
SELECT n.template, n.rendered->'push'->>'title' AS title, count(o.*) AS destinations
  FROM notify.notifications n JOIN notify.outbox o ON o.notification_id = n.id
 WHERE n.idempotency_key = 'order-shipped-900' GROUP BY 1, 2;
