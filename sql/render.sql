--
-- Template rendering: notify._render, notify._check_template,
-- notify._template_vars (src/render.c)
--
-- Runs alone or after "setup" (which has created the extension already).
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS notify;
RESET client_min_messages;
\set VERBOSITY default
\set SHOW_CONTEXT never

-- Render a one-field sms template, return the rendered body.
CREATE FUNCTION pg_temp.r(tpl text, params jsonb, attrs jsonb DEFAULT NULL)
RETURNS text LANGUAGE sql AS
$$ SELECT notify._render(jsonb_build_object('body', tpl), 'sms', params, attrs, 't') ->> 'body' $$;

--
-- Variables
--
SELECT pg_temp.r('Hello {{name}}!', '{"name": "Ada"}');
SELECT pg_temp.r('{{ name }}|{{a-b}}|{{a_b}}|{{A9}}', '{"name": "x", "a-b": 1, "a_b": 2, "A9": 3}');
SELECT pg_temp.r('no tags at all', NULL);
SELECT pg_temp.r('stray }} and { braces', '{}');
-- dotted paths walk objects
SELECT pg_temp.r('Order {{order.id}} to {{order.ship.city}}',
                 '{"order": {"id": 42, "ship": {"city": "Oslo"}}}');
-- numbers as JSON text, booleans as true/false
SELECT pg_temp.r('{{i}} {{f}} {{big}} {{neg}} {{t}} {{no}}',
                 '{"i": 3, "f": 2.50, "big": 12345678901234567890, "neg": -1e3, "t": true, "no": false}');
-- objects and arrays as compact JSON
SELECT pg_temp.r('{{o}} {{a}} {{e}} {{ea}}',
                 '{"o": {"b": [1, "x\"y\n", null], "a": {"k": true}}, "a": [1, {"z": []}], "e": {}, "ea": []}');
-- null is present and renders empty
SELECT pg_temp.r('[{{n}}]', '{"n": null}');
-- strings are never escaped outside email html
SELECT pg_temp.r('{{s}} {{{s}}} {{& s}}', '{"s": "<b>&\"''</b>"}');

--
-- Lookup order: params, then recipient attributes
--
SELECT pg_temp.r('{{name}} from {{city}}', '{"name": "Param"}', '{"name": "Attr", "city": "Rome"}');
SELECT pg_temp.r('{{profile.city}}', NULL, '{"profile": {"city": "Rome"}}');
-- an explicit null in params wins over the attribute
SELECT pg_temp.r('[{{x}}]', '{"x": null}', '{"x": "attr"}');
-- params and attributes must be objects
SELECT pg_temp.r('x', '[1]');
SELECT pg_temp.r('x', '{}', '"text"');

--
-- Missing variables
--
SELECT pg_temp.r('Hi {{name}}', '{"nam": "x"}');
SELECT pg_temp.r('{{order.id}}', '{"order": 5}');
SELECT pg_temp.r('{{order.id}}', '{"order": {"number": 5}}');
-- the field path is named
SELECT notify._render('{"title": "x", "data": {"link": "https://x/{{slug}}"}}',
                      'push', '{}', NULL, 'promo');

--
-- Sections
--
-- truthiness of every kind of value, and of a missing name
SELECT v AS value, pg_temp.r('{{#x}}yes{{/x}}{{^x}}no{{/x}}', jsonb_build_object('x', v)) AS rendered
FROM (VALUES ('null'::jsonb), ('false'), ('true'), ('""'), ('" "'), ('"0"'), ('0'),
             ('0.00'), ('-0.5'), ('1'), ('[]'), ('[0]'), ('{}'), ('{"a": null}')) t(v);
SELECT pg_temp.r('{{#x}}yes{{/x}}{{^x}}no{{/x}}', '{}');
-- a missing section is how optional parts work: names inside are not needed
SELECT pg_temp.r('Hi{{#promo}} use {{promo_code}}{{/promo}}.', '{}');
SELECT pg_temp.r('Hi{{#promo}} use {{promo_code}}{{/promo}}.', '{"promo": true, "promo_code": "SAVE"}');
-- a list iterates; {{.}} is the current item
SELECT pg_temp.r('{{#items}}[{{.}}]{{/items}}',
                 '{"items": [1, "two", null, true, {"a": 1}, [2]]}');
-- object items resolve names in the item first, then outward
SELECT pg_temp.r('{{#items}}{{name}} x{{qty}} for {{customer}}; {{/items}}',
                 '{"customer": "Ada", "items": [{"name": "pen", "qty": 2}, {"name": "ink", "qty": 1, "customer": "Bob"}]}');
-- an object pushes itself as context
SELECT pg_temp.r('{{#order}}#{{id}} {{status}}{{/order}} {{status}}',
                 '{"order": {"id": 7, "status": "sent"}, "status": "outer"}');
-- a truthy scalar is the current item
SELECT pg_temp.r('{{#coupon}}Use {{.}}{{/coupon}}', '{"coupon": "SAVE10"}');
-- nesting, with an inverted section inside a list
SELECT pg_temp.r('{{#orders}}{{id}}:{{#items}}{{sku}}{{^last}},{{/last}}{{/items}};{{/orders}}',
                 '{"orders": [{"id": 1, "items": [{"sku": "a"}, {"sku": "b", "last": true}]}, {"id": 2, "items": []}]}');
-- dotted section names
SELECT pg_temp.r('{{#user.prefs.sms}}on{{/user.prefs.sms}}{{^user.nothing.x}}-{{/user.nothing.x}}',
                 '{"user": {"prefs": {"sms": true}}}');
-- a dotted name found in an item does not fall back outward for its rest
SELECT pg_temp.r('{{#items}}{{order.id}}{{/items}}',
                 '{"order": {"id": 1}, "items": [{"order": {}}]}');
-- a missing variable inside a truthy section is still an error
SELECT pg_temp.r('{{#items}}{{sku}}{{/items}}', '{"items": [{"sku": "a"}, {"name": "b"}]}');

--
-- Comments
--
SELECT pg_temp.r('a{{! a comment with {{ braces }}b{{!}}c', '{}');

--
-- Email html: {{name}} escaped, {{{name}}} and {{& name}} raw
--
SELECT key, value FROM jsonb_each_text(notify._render(
  jsonb_build_object(
    'subject', '{{s}}',
    'text', '{{s}} {{{s}}}',
    'html', '<p>{{s}}|{{{s}}}|{{& s}}|{{o}}|{{n}}</p>'),
  'email', $j${"s": "<b>Tom & \"Jerry\" O'Neil</b>", "o": {"k": "<"}, "n": 1.5}$j$,
  NULL, 'esc'));

--
-- Typed push fields
--
SELECT notify._render(
  '{"title": "{{t}}", "badge": "{{count}}", "ttl": " {{ttl}} ", "mutable_content": "{{m}}",
    "content_available": "{{c}}", "sound": "default"}',
  'push', '{"t": "x", "count": 3, "ttl": 3600, "m": true, "c": false}', NULL, 'typed');
-- constants convert too; numbers and booleans stay
SELECT notify._render('{"title": "x", "badge": "7", "ttl": 60, "mutable_content": "true", "content_available": false}',
                      'push', NULL, NULL, 'typed');
-- a typed field that renders empty is left out
SELECT notify._render('{"title": "x", "badge": "{{#n}}{{n}}{{/n}}", "ttl": ""}', 'push', '{}', NULL, 'typed');
-- errors at render time
SELECT notify._render('{"title": "x", "badge": "{{count}}"}', 'push', '{"count": "many"}', NULL, 'typed');
SELECT notify._render('{"title": "x", "badge": "{{count}}"}', 'push', '{"count": -1}', NULL, 'typed');
SELECT notify._render('{"title": "x", "badge": "{{count}}"}', 'push', '{"count": 1.5}', NULL, 'typed');
SELECT notify._render('{"title": "x", "ttl": "{{ttl}}"}', 'push', '{"ttl": 2147483648}', NULL, 'typed');
SELECT notify._render('{"title": "x", "mutable_content": "{{m}}"}', 'push', '{"m": "yes"}', NULL, 'typed');
-- errors at store time
SELECT notify._check_template('{"title": "x", "badge": "abc"}', 'push', 'typed');
SELECT notify._check_template('{"title": "x", "badge": 1.5}', 'push', 'typed');
SELECT notify._check_template('{"title": "x", "badge": -1}', 'push', 'typed');
SELECT notify._check_template('{"title": "x", "badge": true}', 'push', 'typed');
SELECT notify._check_template('{"title": "x", "content_available": 1}', 'push', 'typed');
SELECT notify._check_template('{"title": "x", "content_available": "sure"}', 'push', 'typed');
-- a silent push needs no title or body...
SELECT notify._render('{"content_available": true, "data": {"sync": "{{what}}"}}', 'push', '{"what": "inbox"}', NULL, 'silent');
SELECT notify._render('{"content_available": "{{silent}}", "data": {}}', 'push', '{"silent": true}', NULL, 'silent');
-- ...but must really be silent
SELECT notify._render('{"content_available": "{{silent}}", "data": {}}', 'push', '{"silent": false}', NULL, 'silent');
SELECT notify._check_template('{"content_available": false}', 'push', 'silent');
SELECT notify._check_template('{"badge": 1}', 'push', 'silent');

--
-- Every string at any depth is a template; other JSON is kept
--
SELECT notify._render(
  '{"body": {"event": "{{kind}}", "n": 5, "ok": true, "none": null,
             "items": ["{{a}}", 2, {"deep": "{{b.c}}"}], "static": {"k": ["v", 1]}},
    "headers": {"X-Kind": "{{kind}}", "X-Fixed": "1"}}',
  'webhook', '{"kind": "order.paid", "a": "A", "b": {"c": "C"}}', NULL, 'hook');
SELECT notify._render('{"body": "{{payload}}"}', 'webhook', '{"payload": {"a": [1, 2]}}', NULL, 'hook');
-- a template without tags comes back as it is
SELECT notify._render('{"body": {"a": [1, "x"]}, "headers": {}}', 'webhook', '{}', NULL, 'hook');
-- so does a NULL content
SELECT notify._render(NULL, 'sms', '{}', NULL, 'none') IS NULL AS is_null;

--
-- Malformed templates are refused at store time (and by _render)
--
SELECT notify._check_template('{"body": "Hi {{name"}', 'sms', 'bad');
SELECT notify._check_template('{"body": "Hi {{name}"}', 'sms', 'bad');
SELECT notify._check_template('{"body": "{{#items}}{{name}}"}', 'sms', 'bad');
SELECT notify._check_template('{"body": "{{#a}}{{#b}}x{{/a}}{{/b}}"}', 'sms', 'bad');
SELECT notify._check_template('{"body": "x{{/a}}"}', 'sms', 'bad');
SELECT notify._check_template('{"body": "a {{}} b"}', 'sms', 'bad');
SELECT notify._check_template('{"body": "{{# }}{{/ }}"}', 'sms', 'bad');
SELECT notify._check_template('{"body": "{{first name}}"}', 'sms', 'bad');
SELECT notify._check_template('{"body": "{{a..b}}"}', 'sms', 'bad');
SELECT notify._check_template('{"body": "{{.a}}"}', 'sms', 'bad');
SELECT notify._check_template('{"body": "{{a$}}"}', 'sms', 'bad');
SELECT notify._check_template('{"body": "{{{raw}}"}', 'sms', 'bad');
SELECT notify._check_template('{"body": "{{{raw}} }"}', 'sms', 'bad');
SELECT notify._check_template('{"body": "{{{raw"}', 'sms', 'bad');
SELECT notify._check_template('{"body": "{{.}}"}', 'sms', 'bad');
SELECT notify._check_template('{"body": "{{^x}}{{.}}{{/x}}"}', 'sms', 'bad');
SELECT notify._check_template('{"body": "{{> header}}"}', 'sms', 'bad');
SELECT notify._check_template('{"body": "{{=<% %>=}}"}', 'sms', 'bad');
-- the path of the field says where
SELECT notify._check_template('{"title": "x", "data": {"order_url": "https://x/{{id"}}', 'push', 'bad');
SELECT notify._check_template('{"body": {"items": ["ok", "{{#x}}"]}}', 'webhook', 'bad');
SELECT notify._check_template('{"subject": "s", "html": "<p>Dear {{name}},</p><p>{{#lines}}{{text}}<br>{{/line}}</p>"}', 'email', 'bad');
-- long excerpts are cut
SELECT notify._check_template('{"body": "{{#long}} this section body goes on and on and never closes"}', 'sms', 'bad');
SELECT notify._render('{"body": "{{x"}', 'sms', '{}', NULL, 'bad');
-- well-formed: every kind of tag
SELECT notify._check_template(
  '{"body": "{{a}} {{{b}}} {{& c}} {{#d}}{{.}}{{^e}}{{f.g}}{{/e}}{{/d}} {{! note }}"}', 'sms', 'good');

--
-- Shape
--
SELECT notify._check_template('[]', 'sms', 'shape');
SELECT notify._check_template('"{{x}}"', 'sms', 'shape');
SELECT notify._check_template(NULL, 'sms', 'shape');
SELECT notify._check_template('{"body": "x"}', 'fax', 'shape');
SELECT notify._check_template('{"body": "x"}', NULL, 'shape');
SELECT notify._check_template('{"body": "x", "title": "y"}', 'sms', 'shape');
SELECT notify._check_template('{"title": "x", "colour": "red"}', 'push', 'shape');
SELECT notify._check_template('{"subject": "s", "text": "t", "cc": "x"}', 'email', 'shape');
SELECT notify._check_template('{"body": 1, "method": "PUT"}', 'webhook', 'shape');
-- required fields
SELECT notify._check_template('{}', 'sms', 'shape');
SELECT notify._check_template('{"text": "t"}', 'email', 'shape');
SELECT notify._check_template('{"subject": "s", "from": "a@example.com"}', 'email', 'shape');
SELECT notify._check_template('{"headers": {}}', 'webhook', 'shape');
SELECT notify._check_template('{"sound": "default"}', 'push', 'shape');
-- types
SELECT notify._check_template('{"title": 1}', 'push', 'shape');
SELECT notify._check_template('{"title": null}', 'push', 'shape');
SELECT notify._check_template('{"title": "x", "data": "y"}', 'push', 'shape');
SELECT notify._check_template('{"title": "x", "data": []}', 'push', 'shape');
SELECT notify._check_template('{"title": "x", "apns": "y"}', 'push', 'shape');
SELECT notify._check_template('{"subject": ["s"], "text": "t"}', 'email', 'shape');
SELECT notify._check_template('{"body": "b", "headers": []}', 'webhook', 'shape');
SELECT notify._check_template('{"body": "b", "headers": {"X-Count": 1}}', 'webhook', 'shape');
-- valid shapes
SELECT notify._check_template('{"title": "t", "body": "b", "subtitle": "s", "sound": "default", "badge": 1,
  "category": "c", "thread_id": "t", "collapse_id": "c", "mutable_content": true, "content_available": false,
  "image": "i", "url": "u", "data": {"a": 1}, "ttl": 0, "apns": {}, "android": {}, "webpush": {}}', 'push', 'ok');
SELECT notify._check_template('{"body": "b"}', 'push', 'ok');
SELECT notify._check_template('{"body": "b"}', 'sms', 'ok');
SELECT notify._check_template('{"subject": "s", "html": "h", "from": "f", "from_name": "n", "reply_to": "r"}', 'email', 'ok');
SELECT notify._check_template('{"body": null}', 'webhook', 'ok');

--
-- Click tracking in email html
--
SELECT key, value FROM jsonb_each_text(notify._render(
  jsonb_build_object(
    'subject', 'Links',
    'text', 'Shop at https://shop.example/ href="http://text"',
    'html', $h$<p><a href="https://shop.example/p?a=1&amp;b=2">Shop</a>
<A HREF = 'HTTP://x.example/a b~c'>x</A>
<a href="{{url}}">param</a> <a href="{{{raw}}}">raw</a>
<a href="mailto:help@example.com">mail</a> <a href="#top">top</a> <a href="/rel">rel</a>
<a title='say href="http://no"' data-href="http://d" href=http://unquoted>attrs</a>
<!-- <a href="http://comment"> --> href="http://text" 1 < 2 <br>
<img src="https://img.example/x.png"><a href="https://open.example/unterminated>end</p>$h$),
  'email',
  '{"_tracking_url_prefix": "https://t.example/c?id=9&u=", "url": "https://x.example/?q=a&b=\"c\"", "raw": "http://r.example/~x?y=<z>"}',
  NULL, 'track'));
-- no prefix, null prefix or empty prefix: html is left alone
SELECT notify._render('{"subject": "s", "html": "<a href=\"https://a.example/?x=1&amp;y\">a</a>"}',
                      'email', '{}', NULL, 'track') ->> 'html';
SELECT notify._render('{"subject": "s", "html": "<a href=\"https://a.example/\">a</a>"}',
                      'email', '{"_tracking_url_prefix": null}', NULL, 'track') ->> 'html';
SELECT notify._render('{"subject": "s", "html": "<a href=\"https://a.example/\">a</a>"}',
                      'email', '{"_tracking_url_prefix": ""}', NULL, 'track') ->> 'html';
-- only in the html field: other fields and channels are untouched
SELECT notify._render('{"subject": "s", "text": "<a href=\"https://a.example/\">a</a>"}',
                      'email', '{"_tracking_url_prefix": "https://t/"}', NULL, 'track') ->> 'text';
SELECT notify._render('{"body": "<a href=\"https://a.example/\">a</a>"}',
                      'sms', '{"_tracking_url_prefix": "https://t/"}', NULL, 'track') ->> 'body';
SELECT notify._render('{"subject": "s", "html": "<a href=\"https://a.example/\">a</a>"}',
                      'email', '{"_tracking_url_prefix": 5}', NULL, 'track');

--
-- Variable names
--
SELECT notify._template_vars(
  '{"title": "Hi {{user.name}}", "body": "{{#items}}{{sku}} {{.}}{{/items}}{{^vip}}{{{promo}}}{{/vip}}{{! note}}",
    "data": {"u": "{{& url}}", "n": 1, "list": ["{{user.id}}", "{{ sku }}"]}}');
SELECT notify._template_vars('{"body": "no tags", "n": 1}');
SELECT notify._template_vars('{"body": "{{#a}}"}');

--
-- One call site, many renders: the compiled-template cache
--
SELECT notify._render(c, 'sms', jsonb_build_object('n', i), NULL, 't') ->> 'body' AS body
FROM generate_series(1, 3) i, (VALUES ('{"body": "n={{n}}"}'::jsonb)) v(c)
ORDER BY i;
-- more templates than cache slots, interleaved
SELECT string_agg(notify._render(jsonb_build_object('body', '{{n}}/' || (i % 11)), 'sms',
                                 jsonb_build_object('n', i), NULL, 't') ->> 'body', ' ' ORDER BY i)
FROM generate_series(1, 30) i;
-- the same content under another name reports that name
SELECT notify._render('{"body": "{{x}}"}', 'sms', params, NULL, name)
FROM (VALUES (1, 'first', '{"x": 1}'::jsonb), (2, 'second', '{}')) v(n, name, params)
ORDER BY n;
