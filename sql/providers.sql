--
-- providers: configuration checks per kind, secrets never shown
--
\set VERBOSITY default
\set SHOW_CONTEXT never
\set p8 '-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgcevJWjeE5p79hEyd\npBcrxfb2LN6i0oPbQU6Q/Mehq6KhRANCAATetCqEBApQKTOfHZ4/oHNaJK16MD4D\neP+9/NUDJlSqZ+G131JOO3QptdWLR9fYOaNVDa7sFVY7vGJgyNsKInmY\n-----END PRIVATE KEY-----'
\set rsa '-----BEGIN PRIVATE KEY-----\nMIIEvgIBADANBgkqhkiG9w0BAQEFAASCBKgwggSkAgEAAoIBAQCzCOnDd2A7ucxh\nYufoSDEZlxHm33DzzPX3Slpi/Ed1JAqHFhCup/vQjk8Yu7+xTsbkuUu2lWqbsVo4\nC9fhokPDBBgII9fHdPPZ6685bY1QiluSmD5VoFr9jf5w8g00h+Xy2Uy0uBDQ8VLz\nSS0oElwdfkuqj6SIWAeJPBg6m3ZZpELp9sqNV8LJw+zVrU59FlWqHSJ7n3Efs7aw\nXu4bMIh+UgRSkPHEzsaVzbDMwOMhd1pyvC3VpkWa8h5DPwu+q492ka37cl08F1Hq\niwArsPbaeyNNjJTgCuXSjm+l9L4hvizljbRWPl1irDMOiLGFgzivciMMo+qwEAWj\nRZGp8Q15AgMBAAECggEADFyekHKtDD6uWiCTSO54Jm9QCwANW2Yg6yHhBxHqiK/0\nAqMPRJIAgQRceYWYLTDWaptROyKKvYSTyUgnEDMtKNle4+v+pYzhm//KJeXWsrOU\n8lStBCpJ8hU0dv29k+2YvumKYnWNorGxA6+fLLPE1LwAUz7vEkN6xLrnpN9QXwzK\n0M4eAUZCsADdzfs7rn47/IrsH7Z87OBKyII/1TtriCgl3h8fN+QzNgYTPDW6aFq4\nrpXESRLPHuFxnRYCSXk8XoTE71GYEu4ph28jr2yaVO/T0oNHqkYYHk/vHXFkdmIO\nUr3AC5MZQ2sC8ySqFCiDxOXUgk1C0hUwIYH5MpVvAQKBgQDyEwz/KYz9uPuuh18N\nxa5ZTixhCK9axWGknaf+cKdUk8uGO8Uo1kEJ0CKjapYt0P0Q5PpJfsIzcRCdw6rF\nnUGrP95rrmZhAX1innxFZEpd6LaF5LE8FErDXkauL1qtfnqCb7BGf3369T++Vd0e\noRx6NxF156A4zIyNpkNgc5NceQKBgQC9VX/LYb2MSWM1L117oapq9TdQYyBdVNPp\nKv1Zq8CJmUMeqAUCr2FfC9hPaMYX86tekxIylsVIxF0vXvcJUpTVC3aqMwzE65rd\nCi7QW6CDg998jokmfDySs0y3kBoIDSWSTRJYD6RFEKnopuZa0TCEDKSRuj0hexRK\nZo3Eecz5AQKBgQCLsirB5XyTvvifE0frbrTanJ5HsPdg7p8WnFSiJOirik7dPAjf\nNCV8QDx9Cbl43y3rXfiCCUCQ5yKrqIsYV1PaO5VjltVGDdIJ42Pbt7Ci2PTb98m/\n3gX3EKTBSFqP3HleZI3ZYSGWfYk3kd11G4yPis/stqpjnMdPxy8Cri/QIQKBgQCZ\n733ruhgGi1Rh1ZTIA/Uu6RiD/1Q9Dc8NcKpz0bTFKxrrPeh0+mrMgDDqv2Dv8GmQ\nhzrwbq0QMLci4K8xoTbo0F02nDLxmC1dMf5F4Xlr9DgsaScRZ0lIbQce58aCbU3y\n2T7k4jLJBHdgdPItPI+ZjT3wTd+N7SfeJet1pyIEAQKBgEKrgtTHXUt8A6Frud/N\nBG4nv6aB5k0q46reA/o82mhFRc/odMwY5JQkCcvnMXBWsQIuM6WzlKdLLy1EzJMe\nmXrHRc8GiXHoHJNbPIs8iFw+zGofL9C3JFdKCFgntiMp8+AUf+b56Yltvxrct9pv\nwu9r/44Tde6n0+KjYdl4oqm2\n-----END PRIVATE KEY-----'

SELECT notify_set_provider('fcm', 'fcm', jsonb_build_object('service_account', jsonb_build_object(
  'type', 'service_account', 'project_id', 'notify-test', 'private_key_id', 'k1',
  'private_key', :'rsa', 'client_email', 'notify@notify-test.iam.gserviceaccount.com',
  'token_uri', 'https://oauth2.googleapis.com/token')));
-- the service account may also be given as the JSON text Google hands out
SELECT notify_set_provider('fcm2', 'fcm', jsonb_build_object('service_account', jsonb_build_object(
  'project_id', 'notify-test', 'private_key', :'rsa',
  'client_email', 'notify@notify-test.iam.gserviceaccount.com',
  'token_uri', 'https://oauth2.googleapis.com/token')::text));
SELECT notify_set_provider('apns_dev', 'apns', jsonb_build_object(
  'team_id', 'DEF123GHIJ', 'key_id', 'ABC123DEFG', 'key', :'p8', 'topic', 'com.example.app',
  'sandbox', true));
SELECT notify_set_provider('tw', 'twilio', '{"account_sid": "AC0123456789abcdef0123456789abcdef", "auth_token": "tw-secret", "messaging_service_sid": "MG0123456789abcdef0123456789abcdef"}');
SELECT notify_set_provider('mail', 'smtp', '{"endpoint": "smtps://smtp.example.com:465", "tls": "implicit", "from": "shop@example.com", "from_name": "Shop", "username": "u", "password": "smtp-secret"}');
SELECT notify_set_provider('hook', 'webhook', '{"endpoint": "https://hooks.example.com/notify", "secret": "hook-secret", "headers": {"X-Env": "test"}}');

-- no secret is visible through the view
SELECT name, kind, enabled, config FROM notify.provider_settings ORDER BY name;
SELECT count(*) AS leaks FROM notify.provider_settings
 WHERE config::text ~ '(PRIVATE KEY|tw-secret|smtp-secret|hook-secret)';

-- a kind cannot change under a name
SELECT notify_set_provider('hook', 'smtp', '{"endpoint": "smtp://x:587", "from": "a@b.co"}');
-- reconfiguring keeps one row and takes effect
SELECT notify_set_provider('hook', 'webhook', '{"endpoint": "https://hooks.example.com/v2"}', enabled => false);
SELECT name, enabled, config FROM notify.provider_settings WHERE name = 'hook';

-- bad configurations are refused, with the reason and no secret in it
SELECT notify_set_provider('x', 'carrier-pigeon', '{}');
SELECT notify_set_provider('Bad Name', 'webhook', '{"endpoint": "https://h.example.com"}');
SELECT notify_set_provider('x', 'webhook', '[]');
SELECT notify_set_provider('x', 'webhook', '{}');
SELECT notify_set_provider('x', 'webhook', '{"endpoint": "ftp://h.example.com"}');
SELECT notify_set_provider('x', 'apns', '{"team_id": "DEF123GHIJ", "key_id": "ABC123DEFG", "topic": "t"}');
SELECT notify_set_provider('x', 'apns', '{"team_id": "DEF123GHIJ", "key_id": "ABC123DEFG", "topic": "t", "key": "-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----"}');
SELECT notify_set_provider('x', 'fcm', '{"service_account": {"project_id": "p"}}');
SELECT notify_set_provider('x', 'twilio', '{"account_sid": "AC0123456789abcdef0123456789abcdef", "auth_token": "t"}');
SELECT notify_set_provider('x', 'smtp', '{"endpoint": "smtp://smtp.example.com:587", "tls": "none", "from": "a@example.com"}');
SELECT notify_set_provider('x', 'smtp', '{"endpoint": "smtp://smtp.example.com:587"}');
SELECT notify_set_provider('x', 'webpush', '{"subject": "mailto:a@example.com"}');
-- a misspelt key is an error, not silently ignored; common settings are checked
SELECT notify_set_provider('x', 'webhook', '{"endpoint": "https://h.example.com", "sekret": "s"}');
SELECT notify_set_provider('x', 'webhook', '{"endpoint": "https://h.example.com", "rate_limit": 0}');
SELECT notify_set_provider('x', 'webhook', '{"endpoint": "https://h.example.com", "h2c": "yes"}');
SELECT count(*) AS providers_named_x FROM notify.providers WHERE name = 'x';
