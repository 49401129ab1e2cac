--
-- templates: versions, locales, validation at store time
--
\set VERBOSITY default
\set SHOW_CONTEXT never

SELECT notify_put_template('welcome', 'email',
  '{"subject": "Welcome, {{name}}", "text": "Hi {{name}}", "html": "<p>Hi {{name}}</p>"}') AS v;
-- the same content again is not a new version
SELECT notify_put_template('welcome', 'email',
  '{"subject": "Welcome, {{name}}", "text": "Hi {{name}}", "html": "<p>Hi {{name}}</p>"}') AS v;
SELECT notify_put_template('welcome', 'email',
  '{"subject": "Welcome aboard, {{name}}", "text": "Hello {{name}}"}') AS v;
SELECT notify_put_template('welcome', 'email',
  '{"subject": "Bem-vindo, {{name}}", "text": "Olá {{name}}"}', locale => 'pt') AS v;
SELECT notify_put_template('welcome', 'push', '{"title": "Welcome", "body": "Hi {{name}}"}') AS v;
SELECT name, channel, locale, version, content->>'subject' AS subject
  FROM notify.templates ORDER BY name, channel, locale, version;

-- rendering picks the newest version and falls back by locale
SELECT notify_render('welcome', 'email', '{"name": "Ada"}');
SELECT notify_render('welcome', 'email', '{"name": "Ada"}', locale => 'pt-BR');
SELECT notify_render('welcome', 'email', '{"name": "Ada"}', locale => 'pt');
SELECT notify_render('welcome', 'email', '{"name": "Ada"}', locale => 'de-AT');
SELECT notify_render('welcome', 'push', '{"name": "Ada"}');

-- errors at store time: nothing written
SELECT notify_put_template('bad name!', 'email', '{"subject": "x", "text": "y"}');
SELECT notify_put_template('t', 'fax', '{"body": "x"}');
SELECT notify_put_template('t', 'sms', '{"body": "Hi {{name"}');
SELECT notify_put_template('t', 'sms', '{"body": "{{#a}}open"}');
SELECT notify_put_template('t', 'sms', '{"body": "{{#a}}x{{/b}}"}');
SELECT notify_put_template('t', 'sms', '{"text": "x"}');
SELECT notify_put_template('t', 'email', '{"subject": "only a subject"}');
SELECT notify_put_template('t', 'sms', '"just a string"');
SELECT notify_put_template('t', 'sms', '{"body": "x"}', locale => 'not a locale');
SELECT count(*) AS templates FROM notify.templates WHERE name = 't';

-- rendering errors
SELECT notify_render('welcome', 'email', '{}');
SELECT notify_render('nope', 'email', '{}');
SELECT notify_render('welcome', 'sms', '{"name": "x"}');
SELECT notify_render('welcome', 'email', '[1]');
