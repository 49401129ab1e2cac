--
-- contacts: recipients, devices, preferences, and every validation error
--
\set VERBOSITY default
\set SHOW_CONTEXT never

SELECT notify_upsert_recipient('u1', email => 'ada@example.com', phone => '+14155550123',
                               locale => 'pt-BR', timezone => 'America/Sao_Paulo',
                               attributes => '{"first_name": "Ada"}') > 0 AS created;
-- an update keeps what it does not mention and merges attributes
SELECT notify_upsert_recipient('u1', attributes => '{"plan": "pro"}') > 0 AS updated;
SELECT external_id, email, phone, locale, timezone, attributes FROM notify.recipients;

-- bad input: a clear error, nothing written
SELECT notify_upsert_recipient('u2', email => 'not-an-address');
SELECT notify_upsert_recipient('u2', email => 'Ada <ada@example.com>');
SELECT notify_upsert_recipient('u2', phone => '4155550123');
SELECT notify_upsert_recipient('u2', phone => '+0123456');
SELECT notify_upsert_recipient('u2', phone => '+1234567890123456');
SELECT notify_upsert_recipient('u2', timezone => 'Mars/Olympus');
SELECT notify_upsert_recipient('u2', locale => 'english!');
SELECT notify_upsert_recipient('u2', attributes => '[1,2]');
SELECT notify_upsert_recipient('');
SELECT count(*) AS recipients FROM notify.recipients;

-- devices
SELECT notify_register_device('u1', 'ios', repeat('AB', 32)) > 0 AS ios;
SELECT token FROM notify.devices WHERE platform = 'ios';   -- stored lower-case
SELECT notify_register_device('u1', 'android', 'fcm-token-aaaaaaaaaaaaaaaaaaaa:APA91b') > 0 AS android;
SELECT notify_register_device('u1', 'web',
  '{"endpoint": "https://push.example.net/send/abc", "expirationTime": null,
    "keys": {"p256dh": "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4",
             "auth": "BTBZMqHH6r4Tts7J_aSIgg"}}') > 0 AS web;
SELECT platform, token, subscription IS NOT NULL AS has_subscription, active FROM notify.devices ORDER BY id;

SELECT notify_register_device('nobody', 'ios', repeat('ab', 32));
SELECT notify_register_device('u1', 'blackberry', 'x');
SELECT notify_register_device('u1', 'ios', 'abc123');
SELECT notify_register_device('u1', 'ios', repeat('zz', 32));
SELECT notify_register_device('u1', 'android', 'short');
SELECT notify_register_device('u1', 'web', 'not json');
SELECT notify_register_device('u1', 'web', '{"keys": {"p256dh": "x", "auth": "y"}}');
SELECT notify_register_device('u1', 'web', '{"endpoint": "https://push.example.net/x"}');
SELECT notify_register_device('u1', 'web', '{"endpoint": "https://push.example.net/x", "keys": {"p256dh": "short", "auth": "short"}}');
SELECT notify_register_device('u1', 'ios', repeat('ab', 32), app => 'no_such_provider');
SELECT count(*) AS devices FROM notify.devices;

-- unregister by token, by endpoint, by subscription JSON
SELECT notify_unregister_device(repeat('ab', 32)) AS ios_gone;
SELECT notify_unregister_device('{"endpoint": "https://push.example.net/send/abc"}') AS web_gone;
SELECT notify_unregister_device('no-such-token') AS nothing;
SELECT platform, active, last_error FROM notify.devices ORDER BY id;
-- registering again brings a device back
SELECT notify_register_device('u1', 'ios', repeat('ab', 32)) > 0 AS again;
SELECT platform, active FROM notify.devices WHERE platform = 'ios';

-- preferences
SELECT notify_set_preference('u1', 'email', false);
SELECT notify_set_preference('u1', 'email', true, category => 'security');
SELECT notify_set_preference('u1', 'email', false);   -- upsert, not a second row
SELECT channel, category, enabled FROM notify.preferences ORDER BY channel, category NULLS FIRST;
SELECT notify_set_preference('u1', 'pigeon', false);
SELECT notify_set_preference('u1', 'sms', NULL);
SELECT notify_set_preference('ghost', 'sms', false);
-- web push endpoints must be https
SELECT notify_register_device('u1', 'web', '{"endpoint": "http://10.0.0.5/internal", "keys": {"p256dh": "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4", "auth": "BTBZMqHH6r4Tts7J_aSIgg"}}');
