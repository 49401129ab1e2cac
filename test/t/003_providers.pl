
# 003_providers.pl -- every provider kind end to end against its simulator:
# APNS (headers, payload, provider token, warm-up, every answer class), FCM
# (OAuth token exchange and cache, revoked tokens, error classes, the v1
# message), Web Push (RFC 8291 body the simulator decrypts, VAPID, RFC 8030
# headers), Twilio (sid, segments, error codes, STOP opt-out, basic auth),
# SMTP (STARTTLS + AUTH, the MIME message, connection reuse, bounces,
# greylisting, implicit TLS); provider selection by platform and by app;
# and, after all of it, that no secret leaked into a log, a view or a row.
#
# Secrets never appear in the SQL this test sends: keys, tokens and
# passwords are written to files and read server-side with pg_read_file(),
# so that the statement log (log_statement = all in test clusters) is a
# fair place to look for leaks.
#
# Every assertion is about behaviour: rows, what the simulators received
# and verified, their counters.  The test waits for conditions only.
#
# APNS warm-up is per connection: a connection APNS replaced (GOAWAY) whose
# first answer is not a success is warmed up again, one stream at a time.

use strict;
use warnings;

use Digest::SHA qw(sha256_hex);
use File::Spec;
use JSON::PP;
use NotifyTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $sim = NotifyTest::Sim->start;
# a second APNS service for a second app (its own key, team and topic)
my $sim_b = NotifyTest::Sim->start(args => [ '--only', 'apns' ]);
my $node = NotifyTest::node('providers');

my $ca = $sim->ca;
my $secrets_dir = File::Spec->rel2abs(PostgreSQL::Test::Utils::tempdir());

sub sql { return $node->safe_psql('postgres', shift); }

# A secret in a file the server can read; returns the SQL that reads it.
sub secret_sql
{
	my ($name, $content) = @_;
	my $path = "$secrets_dir/$name";
	open(my $fh, '>', $path) or die "$path: $!";
	print $fh $content;
	close($fh);
	chmod(0644, $path);
	return "pg_read_file('$path')";
}

sub key_sql { my ($s, $file) = @_; return "pg_read_file('" . $s->keyfile($file) . "')"; }

# A 64-hex APNS device token named by a tag (tags never collide as substrings).
sub apns_token { return sha256_hex('apns:' . shift); }
# An FCM registration token (the shape FCM accepts: [A-Za-z0-9_:-]) named by a tag.
sub fcm_token { my ($tag) = @_; return "fcm-$tag-" . substr(sha256_hex("fcm:$tag"), 0, 40); }

sub drained { ok(NotifyTest::drain($node), shift // 'outbox drained'); }

sub delivery
{
	my ($nid, $cols) = @_;
	$cols //= q{status || ' after ' || attempts};
	return sql("SELECT $cols FROM notify.deliveries WHERE notification_id = $nid ORDER BY id");
}

sub distinct { my %h = map { $_ => 1 } @_; return scalar(keys %h); }

# aps.alert.body of an APNS log entry, '' when it has none.
sub alert_body
{
	my ($e) = @_;
	my $a = ref $e->{json} eq 'HASH' && ref $e->{json}{aps} eq 'HASH' ? $e->{json}{aps}{alert} : undef;
	return ref $a eq 'HASH' ? ($a->{body} // '') : '';
}

sub device_state
{
	my ($token) = @_;
	return sql(qq{SELECT active || ' ' || coalesce(last_error, '') FROM notify.devices WHERE token = '$token'});
}

my $twilio_token = 'f0e1d2c3b4a5968778695a4b3c2d1e0f';
my $twilio_wrong = 'deadbeefdeadbeefdeadbeefdeadbeef';
my $smtp_password = 'secret-pass';
my $sa = decode_json(slurp_file($sim->keyfile('fcm-sa.json')));

# ------------------------------------------------------------------ setup

my $apns_port = $sim->port('apns');
my $fcm_port = $sim->port('fcm');
my $tw_port = $sim->port('twilio');
my $smtp_port = $sim->port('smtp');
my $smtps_port = $sim->port('smtps');

$sim_b->config({ apns => { topic => 'com.example.b', key_id => 'KEYB987654', team_id => 'TEAMB12345' } });

my $twilio_token_sql = secret_sql('twilio_token', $twilio_token);
my $twilio_wrong_sql = secret_sql('twilio_wrong', $twilio_wrong);
my $smtp_password_sql = secret_sql('smtp_password', $smtp_password);

sub twilio_config
{
	my ($token_sql) = @_;
	return qq{SELECT notify_set_provider('twilio', 'twilio', jsonb_build_object(
		'endpoint', 'https://127.0.0.1:$tw_port', 'ca_file', '$ca',
		'account_sid', 'AC0123456789abcdef0123456789abcdef', 'auth_token', $token_sql,
		'from', '+15550001111'))};
}

sub smtp_config
{
	my ($endpoint, $tls) = @_;
	return qq{SELECT notify_set_provider('smtp', 'smtp', jsonb_build_object(
		'endpoint', '$endpoint', 'tls', '$tls', 'ca_file', '$ca', 'helo', 'notify.example.com',
		'username', 'notify', 'password', $smtp_password_sql,
		'from', 'noreply\@example.com', 'from_name', 'Example Shop', 'reply_to', 'support\@example.com',
		'unsubscribe_url', 'https://example.com/unsubscribe?u={{recipient}}'))};
}

sql(qq{
	SELECT notify_set_provider('apns', 'apns', jsonb_build_object(
		'endpoint', 'https://127.0.0.1:$apns_port', 'ca_file', '$ca',
		'team_id', 'DEF123GHIJ', 'key_id', 'ABC123DEFG', 'topic', 'com.example.app',
		'key', @{[ key_sql($sim, 'apns.p8') ]}));
	SELECT notify_set_provider('apns_b', 'apns', jsonb_build_object(
		'endpoint', 'https://127.0.0.1:@{[ $sim_b->port('apns') ]}', 'ca_file', '@{[ $sim_b->ca ]}',
		'team_id', 'TEAMB12345', 'key_id', 'KEYB987654', 'topic', 'com.example.b',
		'key', @{[ key_sql($sim_b, 'apns.p8') ]}));
	SELECT notify_set_provider('fcm', 'fcm', jsonb_build_object(
		'endpoint', 'https://127.0.0.1:$fcm_port', 'token_uri', 'https://127.0.0.1:$fcm_port/token',
		'ca_file', '$ca', 'service_account', @{[ key_sql($sim, 'fcm-sa.json') ]}::jsonb));
	SELECT notify_set_provider('webpush', 'webpush', jsonb_build_object(
		'ca_file', '$ca', 'subject', 'mailto:ops\@example.com',
		'vapid_private_key', @{[ key_sql($sim, 'vapid.pem') ]}));
	@{[ twilio_config($twilio_token_sql) ]};
	@{[ smtp_config("smtp://127.0.0.1:$smtp_port", 'starttls') ]};

	SELECT notify_put_template('alert', 'push', '{
		"title": "Hello {{name}}", "body": "Order {{order}} shipped", "badge": "{{count}}",
		"sound": "chime.caf", "thread_id": "orders", "collapse_id": "order-{{order}}",
		"data": {"order_id": "{{order}}", "n": 7}}');
	SELECT notify_put_template('silent', 'push', '{"content_available": true, "data": {"sync": "{{what}}"}}');
	SELECT notify_put_template('badttl', 'push', '{"title": "t", "body": "b", "android": {"ttl": "forever"}}');
	SELECT notify_put_template('hi', 'sms', '{"body": "Hi {{name}}, your code is {{code}}"}');
	SELECT notify_put_template('long', 'sms', '{"body": "{{text}}"}');
	SELECT notify_put_template('mail', 'email', '{
		"subject": "Ihre Bestellung {{order}} \\u2013 Gr\\u00fc\\u00dfe",
		"text": "Hello {{name}},\\nyour order {{order}} has shipped.",
		"html": "<p>Hello <b>{{name}}</b>, your order {{order}} has shipped.</p>"}');
});

ok(NotifyTest::wait_until(sub {
	sql(q{SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'notify worker'}) eq '6' }),
	'one worker per provider (6)');

# =================================================================== APNS

my $t_ok = apns_token('ok');
sql(qq{SELECT notify_upsert_recipient('ios1', attributes => '{"name": "Ada"}');
	SELECT notify_register_device('ios1', 'ios', upper('$t_ok'))});

# --- a burst on a fresh connection: warm-up, then fan out, one token ---
# The very first request is refused before its token is looked at (503):
# the connection is then up but not warmed up, and only the engine's
# one-request-at-a-time warm-up keeps the rest of the batch from fanning
# out on it.  (Without that refusal the check would prove little: libcurl
# itself does not multiplex onto a connection still being set up.)
$sim->fault({ sim => 'apns', status => 503, count => 1 });
my $seq = $sim->seq;
sql(q{SELECT notify_send('ios1', 'alert', jsonb_build_object('order', 100 + i, 'count', i),
		expires_at => now() + interval '1 hour') FROM generate_series(1, 20) i});
drained('APNS burst drained');
is(NotifyTest::finished($node, 'sent', 'apns'), '20', '20 APNS deliveries sent');
my @apns = $sim->log('apns', $seq);
is($apns[0]{status}, 503, 'the first request on the new connection was refused (503, token not looked at)');
my @ok = grep { $_->{status} == 200 } @apns;
is(scalar(@apns), 21, 'the APNS simulator saw 21 requests');
is(scalar(@ok), 20, '20 answered 200 (token, topic, headers and payload accepted)');
my $st = $sim->stats->{sims}{apns};
is($st->{premature_streams}, 0, 'no stream was opened before a request had passed token authentication');
is($st->{warmed_connections}, 1, 'the connection was warmed up');
is(scalar(grep { $_->{violation} } @apns), 0, 'no connection rule violated');
is(distinct(map { $_->{conn} } @apns), 1, 'all of it multiplexed on one HTTP/2 connection');

is_deeply([ sort map { $_->{apns_id} } @ok ],
	[ sort split /\n/, sql(q{SELECT provider_message_id FROM notify.deliveries WHERE provider = 'apns'}) ],
	'provider_message_id of each delivery is the apns-id APNS answered');
is(scalar(grep { $_->{headers}{'apns-id'} eq $_->{apns_id} } @ok), 20,
	'the apns-id was ours (sent in the request, echoed back)');

my ($e) = grep { alert_body($_) eq 'Order 107 shipped' } @ok;
ok($e, 'found the request of order 107');
my $h = $e->{headers};
is($h->{'apns-topic'}, 'com.example.app', 'apns-topic is the configured bundle id');
is($h->{'apns-push-type'}, 'alert', 'apns-push-type alert');
is($h->{'apns-priority'}, '10', 'apns-priority 10 for a normal-priority alert');
is($h->{'apns-collapse-id'}, 'order-107', 'apns-collapse-id from collapse_id');
is($h->{'apns-expiration'},
	sql(q{SELECT floor(extract(epoch FROM n.expires_at))::int8 FROM notify.notifications n
		JOIN notify.deliveries d ON d.notification_id = n.id WHERE d.provider_message_id = '} . $e->{apns_id} . q{'}),
	'apns-expiration is expires_at in unix seconds');
is($e->{path}, "/3/device/$t_ok", 'path carries the device token in lower case');
is_deeply($e->{json}{aps},
	{ alert => { title => 'Hello Ada', body => 'Order 107 shipped' }, badge => 7, sound => 'chime.caf',
	  'thread-id' => 'orders' },
	'aps: alert title/body, badge as an integer, sound, thread-id');
is($e->{json}{order_id}, '107', 'custom data beside aps');
is($e->{json}{n}, 7, 'custom data keeps a number a number');
ok(!$e->{problems}, 'the simulator found nothing dubious in the payload');
is_deeply($e->{jwt}, { kid => 'ABC123DEFG', iss => 'DEF123GHIJ', iat => $e->{jwt}{iat} },
	'the simulator verified the ES256 provider token: kid and iss as configured');
my %tokens = map { $_->{headers}{authorization} => 1 } @apns;
is(scalar(keys %tokens), 1, 'one provider token for all 21 requests');
my ($first_token) = keys %tokens;

# --- background and low priority ---
$seq = $sim->seq;
my $silent = sql(q{SELECT notify_send('ios1', 'silent', '{"what": "inbox"}')});
my $low = sql(q{SELECT notify_send('ios1', 'alert', '{"order": 200, "count": 1}', priority => -5)});
drained('background and low-priority pushes drained');
is(delivery($silent), 'sent after 1', 'content_available push sent');
is(delivery($low), 'sent after 1', 'low-priority push sent');
@apns = $sim->log('apns', $seq);
my ($bg) = grep { $_->{json}{sync} } @apns;
is($bg->{headers}{'apns-push-type'}, 'background', 'content_available: apns-push-type background');
is($bg->{headers}{'apns-priority'}, '5', '... with apns-priority 5');
is_deeply($bg->{json}{aps}, { 'content-available' => 1 }, '... and aps holding only content-available');
my ($lo) = grep { alert_body($_) eq 'Order 200 shipped' } @apns;
is($lo->{headers}{'apns-push-type'}, 'alert', 'negative priority: still an alert');
is($lo->{headers}{'apns-priority'}, '5', 'negative notify priority: apns-priority 5');
is(scalar(grep { $_->{headers}{authorization} ne $first_token } @apns), 0, 'the provider token is still reused');

# --- every answer class, in one batch ---
# notify never sends a malformed token and mints fresh provider tokens, so
# BadDeviceToken and ExpiredProviderToken are APNS's word against ours:
# fault rules make the simulator say them.
my %t = map { $_ => apns_token($_) } qw(retry503 busy429 gone410 bad400 expired403);
for my $tag (keys %t)
{
	sql(qq{SELECT notify_upsert_recipient('ios_$tag', attributes => '{"name": "$tag"}');
		SELECT notify_register_device('ios_$tag', 'ios', '$t{$tag}')});
}
$sim->config({ apns => { unregistered => [ $t{gone410} ] } });
$sim->fault([
	{ sim => 'apns', match => $t{retry503}, status => 503, count => 1 },
	{ sim => 'apns', match => $t{busy429}, status => 429, count => 2 },
	{ sim => 'apns', match => $t{bad400}, status => 400 },
	{ sim => 'apns', match => $t{expired403}, status => 403, body => { reason => 'ExpiredProviderToken' }, count => 1 },
]);
$seq = $sim->seq;
my %nid;
$nid{$_} = sql(qq{SELECT notify_send('ios_$_', 'alert', '{"order": 300, "count": 1}')}) for sort keys %t;
drained('APNS error batch drained');

is(delivery($nid{retry503}), 'sent after 2', '503: retried, then sent');
my @r = grep { $_->{path} =~ /$t{retry503}/ } $sim->log('apns', $seq);
is_deeply([ map { $_->{status} } @r ], [ 503, 200 ], 'the simulator answered 503 then 200');
is($r[0]{headers}{'apns-id'}, $r[1]{headers}{'apns-id'}, 'the retry carried the same apns-id');
is(delivery($nid{retry503}, 'provider_message_id'), $r[1]{headers}{'apns-id'}, '... which is the provider_message_id');
is(sql(qq{SELECT string_agg(a.provider_status || ':' || a.error, ',') FROM notify.attempts a
	JOIN notify.deliveries d ON d.id = a.outbox_id WHERE d.notification_id = $nid{retry503}}),
	'503:apns 503 ServiceUnavailable', 'the 503 attempt is kept with its reason');

is(delivery($nid{busy429}), 'sent after 3', '429 twice: retried, then sent');
is(sql(qq{SELECT string_agg(a.provider_status::text, ',' ORDER BY a.attempt) FROM notify.attempts a
	JOIN notify.deliveries d ON d.id = a.outbox_id WHERE d.notification_id = $nid{busy429}}),
	'429,429', 'both 429 attempts recorded');

is(delivery($nid{gone410}, q{status || ' after ' || attempts || ': ' || last_error}),
	'failed after 1: apns 410 Unregistered', '410 Unregistered: failed at once');
is(device_state($t{gone410}), 'false apns 410 Unregistered', '... and the device is deactivated');
is(delivery($nid{bad400}, q{status || ' after ' || attempts || ': ' || last_error}),
	'failed after 1: apns 400 BadDeviceToken', '400 BadDeviceToken: failed at once');
is(device_state($t{bad400}), 'false apns 400 BadDeviceToken', '... and the device is deactivated');

is(delivery($nid{expired403}), 'sent after 2', '403 ExpiredProviderToken: retried, then sent');
@r = grep { $_->{path} =~ /$t{expired403}/ } $sim->log('apns', $seq);
is_deeply([ map { $_->{status} } @r ], [ 403, 200 ], 'the simulator answered 403 then 200');
isnt($r[1]{headers}{authorization}, $r[0]{headers}{authorization}, 'the retry carried a newly minted provider token');
is($r[1]{jwt}{kid}, 'ABC123DEFG', '... which the simulator verified');
my $second_token = $r[1]{headers}{authorization};

$seq = $sim->seq;
my $after = sql(q{SELECT notify_send('ios1', 'alert', '{"order": 400, "count": 1}')});
drained();
is(delivery($after), 'sent after 1', 'a later push is sent');
my ($later_req) = $sim->log('apns', $seq);
is($later_req->{headers}{authorization}, $second_token, '... with the new token, reused');
is(distinct(map { $_->{headers}{authorization} } $sim->log('apns')), 2,
	'two provider tokens minted in all: the first, and one after the rejection');

# --- the server replaces the connection (GOAWAY): the next burst warms up again ---
my $conns = $sim->stats->{sims}{apns}{connections};
$sim->fault({ sim => 'apns', match => $t_ok, goaway => 'Shutdown', count => 1 });
my $ga = sql(q{SELECT notify_send('ios1', 'alert', '{"order": 401, "count": 1}')});
drained();
is(delivery($ga), 'sent after 1', 'a push answered 200 and then GOAWAY is sent');
$seq = $sim->seq;
sql(q{SELECT notify_send('ios1', 'alert', jsonb_build_object('order', 500 + i, 'count', 1))
	FROM generate_series(1, 10) i});
drained('burst after GOAWAY drained');
@apns = $sim->log('apns', $seq);
is(scalar(grep { $_->{status} == 200 } @apns), 10, 'the burst went through');
is($sim->stats->{sims}{apns}{connections}, $conns + 1, 'on a new connection');
is(distinct(map { $_->{conn} } @apns), 1, '... one connection for all of it');
is($sim->stats->{sims}{apns}{premature_streams}, 0, 'still no premature stream, on the new connection either');
# (libcurl sends one request alone on a new connection and multiplexes
# after its answer; here that answer was a success, so this holds.)

# --- ... and when the first answer on the replacement connection is not a success ---
# The worker still counts as warmed up from the old connection, the engine
# hands libcurl the whole batch, and libcurl fans out after the first
# answer on the new connection even though it (a 503 here) verified no
# provider token.
$sim->fault({ sim => 'apns', match => $t_ok, goaway => 'Shutdown', count => 1 });
$ga = sql(q{SELECT notify_send('ios1', 'alert', '{"order": 402, "count": 1}')});
drained();
$sim->fault({ sim => 'apns', status => 503, count => 1 });
sql(q{SELECT notify_send('ios1', 'alert', jsonb_build_object('order', 600 + i, 'count', 1))
	FROM generate_series(1, 10) i});
drained('burst after GOAWAY with a first answer 503 drained');
is(sql(q{SELECT count(*) FROM notify.deliveries d JOIN notify.notifications n ON n.id = d.notification_id
	WHERE (n.params->>'order')::int BETWEEN 601 AND 610 AND d.status = 'sent'}), '10', 'all ten sent');
is($sim->stats->{sims}{apns}{connections}, $conns + 2, 'on yet another connection');
is($sim->stats->{sims}{apns}{premature_streams}, 0,
	'no premature stream on a replacement connection whose first answer was a 503');

# ==================================================================== FCM

my %ft = map { $_ => fcm_token($_) } qw(ok revoked gone quota badarg);
$ft{badtok} = 'bad.token.' . substr(sha256_hex('badtok'), 0, 30);    # FCM refuses '.'
for my $tag (keys %ft)
{
	sql(qq{SELECT notify_upsert_recipient('and_$tag', attributes => '{"name": "$tag"}');
		SELECT notify_register_device('and_$tag', 'android', '$ft{$tag}')});
}

$seq = $sim->seq;
my @fok = map { sql(qq{SELECT notify_send('and_ok', 'alert', '{"order": $_, "count": 2}',
	expires_at => now() + interval '10 minutes')}) } 1 .. 5;
drained('FCM sends drained');
is(join(',', map { delivery($_) } @fok), join(',', ('sent after 1') x 5), 'five FCM messages sent');
my @fcm = $sim->log('fcm', $seq);
my @tok = grep { $_->{path} eq '/token' } @fcm;
my @send = grep { $_->{path} =~ m{/messages:send$} } @fcm;
is(scalar(@tok), 1, 'one OAuth token exchange for five messages: the access token is cached');
is($tok[0]{status}, 200, 'the simulator accepted the RS256 assertion (signature verified)');
is($tok[0]{jwt}{header}{alg}, 'RS256', 'assertion alg RS256');
is($tok[0]{jwt}{claims}{iss}, $sa->{client_email}, 'assertion iss is the service account');
is($tok[0]{jwt}{claims}{aud}, "https://127.0.0.1:$fcm_port/token", 'assertion aud is the token_uri');
like($tok[0]{jwt}{claims}{scope}, qr{auth/firebase\.messaging}, 'assertion asks for the firebase.messaging scope');
my $access1 = $tok[0]{access_token};
is(scalar(grep { $_->{status} == 200 && $_->{headers}{authorization} eq "Bearer $access1" } @send), 5,
	'every message carried the issued access token and was accepted');
is($send[0]{path}, "/v1/projects/$sa->{project_id}/messages:send", 'sent to the project of the service account');
my $m = $send[0]{json}{message};
is($m->{token}, $ft{ok}, 'message.token is the registration token');
is_deeply($m->{notification}, { title => 'Hello ok', body => "Order 1 shipped" }, 'message.notification');
is_deeply($m->{data}, { order_id => '1', n => '7' }, 'data values are strings (the number 7 became "7")');
is($m->{android}{priority}, 'high', 'android block: priority high');
# (expires_at goes to the worker rounded to whole seconds: up to one more)
like($m->{android}{ttl}, qr/^(5\d\d|60[01])s$/, 'android.ttl is the time left until expires_at');
is($m->{android}{collapse_key}, 'order-1', 'android.collapse_key from collapse_id');
is($m->{apns}{headers}{'apns-priority'}, '10', 'apns block: headers');
is($m->{apns}{payload}{aps}{badge}, 2, 'apns block: aps payload with the badge');
like(delivery($fok[0], 'provider_message_id'), qr{^projects/notify-test/messages/0:\d+%[0-9a-f]+$},
	'provider_message_id is the message name');

# --- revoked access token: 401, refresh, sent ---
$sim->config({ fcm => { revoke_tokens => JSON::PP::true } });
$seq = $sim->seq;
my $frev = sql(q{SELECT notify_send('and_revoked', 'alert', '{"order": 7, "count": 1}')});
drained();
is(delivery($frev), 'sent after 2', 'revoked access token: retried and sent');
@fcm = $sim->log('fcm', $seq);
is_deeply([ map { "$_->{path} $_->{status}" } @fcm ],
	[ "/v1/projects/notify-test/messages:send 401", '/token 200', "/v1/projects/notify-test/messages:send 200" ],
	'401 UNAUTHENTICATED, a new token exchange, then the message went through');
isnt($fcm[1]{access_token}, $access1, 'with a new access token');
is($fcm[2]{headers}{authorization}, "Bearer $fcm[1]{access_token}", '... which the retry used');

# --- error classes, one batch ---
$sim->config({ fcm => { unregistered => [ $ft{gone} ] } });
$sim->fault({ sim => 'fcm', match => $ft{quota}, status => 429, headers => { 'retry-after' => '2' }, count => 1 });
$seq = $sim->seq;
my %fn;
$fn{$_} = sql(qq{SELECT notify_send('and_$_', 'alert', '{"order": 8, "count": 1}')}) for qw(gone quota badtok);
$fn{badarg} = sql(q{SELECT notify_send('and_badarg', 'badttl')});
drained('FCM error batch drained');
is(delivery($fn{gone}, q{status || ' after ' || attempts || ': ' || last_error}),
	'failed after 1: fcm 404 UNREGISTERED: Requested entity was not found.', 'UNREGISTERED: failed');
like(device_state($ft{gone}), qr/^false fcm 404 UNREGISTERED/, '... and the token deactivated');
like(delivery($fn{badarg}, q{status || ' after ' || attempts || ': ' || last_error}),
	qr/^failed after 1: fcm 400 INVALID_ARGUMENT: Invalid value at 'message\.android\.ttl'/,
	'INVALID_ARGUMENT (a JSON mapping error without FcmError detail): failed, read from error.status');
like(device_state($ft{badarg}), qr/^true /, '... the token stays active (the message was at fault)');
like(delivery($fn{badtok}, q{status || ': ' || last_error}),
	qr/^failed: fcm 400 INVALID_ARGUMENT: The registration token is not a valid FCM registration token/,
	'INVALID_ARGUMENT about the registration token: failed');
like(device_state($ft{badtok}), qr/^false /, '... and the token deactivated');
is(delivery($fn{quota}), 'sent after 2', 'QUOTA_EXCEEDED: retried, then sent');
is(sql(qq{SELECT a.provider_status || ' ' || a.error FROM notify.attempts a
	JOIN notify.deliveries d ON d.id = a.outbox_id WHERE d.notification_id = $fn{quota}}),
	q{429 fcm 429 QUOTA_EXCEEDED: Quota exceeded for quota metric 'Send requests'.}, '... the 429 attempt recorded');
cmp_ok(sql(qq{SELECT extract(epoch FROM d.sent_at - a.at) FROM notify.attempts a
	JOIN notify.deliveries d ON d.id = a.outbox_id WHERE d.notification_id = $fn{quota}}), '>=', 1.9,
	'... after waiting for Retry-After (2 s), not the 200 ms backoff');

# =============================================================== Web Push

my $sub = $sim->control('POST', '/webpush/subscribe', {});
my $sub_json = encode_json($sub);
my $sub2 = $sim->control('POST', '/webpush/subscribe', {});
sql(qq{SELECT notify_upsert_recipient('web1', attributes => '{"name": "Grace"}');
	SELECT notify_register_device('web1', 'web', '$sub_json');
	SELECT notify_upsert_recipient('web2', attributes => '{"name": "Linus"}');
	SELECT notify_register_device('web2', 'web', '@{[ encode_json($sub2) ]}')});
is(sql(q{SELECT token FROM notify.devices WHERE platform = 'web' AND recipient_id =
	(SELECT id FROM notify.recipients WHERE external_id = 'web1')}), $sub->{endpoint},
	'the subscription is registered under its endpoint');

$seq = $sim->seq;
my $w1 = sql(q{SELECT notify_send('web1', 'alert', '{"order": 55, "count": 3}', priority => 5,
	expires_at => now() + interval '1 hour')});
my $w2 = sql(q{SELECT notify_send('web2', 'alert', '{"order": 56, "count": 1}', priority => -3)});
drained('Web Push drained');
is(delivery($w1), 'sent after 1', 'web push sent');
is(delivery($w2), 'sent after 1', 'second web push sent');
my @wp = $sim->log('webpush', $seq);
my ($wp1) = grep { $sub->{endpoint} =~ m{/push/\Q$_->{subscription}\E$} } @wp;
my ($wp2) = grep { $sub2->{endpoint} =~ m{/push/\Q$_->{subscription}\E$} } @wp;
is($wp1->{status}, 201, 'the push service accepted it (201)');
is($wp1->{headers}{'content-encoding'}, 'aes128gcm', 'Content-Encoding aes128gcm');
ok(defined $wp1->{plaintext}, 'the simulator decrypted the RFC 8291 body with the subscription key');
is($wp1->{json}{title}, 'Hello Grace', '... and the plaintext holds the rendered title');
is($wp1->{json}{body}, 'Order 55 shipped', '... and body');
is($wp1->{json}{badge_count}, 3, '... and the badge count');
is($wp1->{record_size}, 4096, 'one 4096-byte record');
my ($origin) = $sub->{endpoint} =~ m{^(https://[^/]+)};
is($wp1->{vapid}{aud}, $origin, 'VAPID verified: aud is the endpoint origin');
is($wp1->{vapid}{sub}, 'mailto:ops@example.com', 'VAPID sub is the configured contact');
like($wp1->{headers}{authorization}, qr/^vapid t=[\w-]+\.[\w-]+\.[\w-]+, k=[\w-]{87}$/, 'Authorization: vapid t=..., k=...');
cmp_ok($wp1->{ttl}, '>', 3500, 'TTL from expires_at (about an hour)');
cmp_ok($wp1->{ttl}, '<=', 3601, '... not more (whole seconds, see android.ttl)');
is($wp1->{urgency}, 'high', 'Urgency high for a positive priority');
is($wp2->{urgency}, 'low', 'Urgency low for a negative priority');
is($wp2->{ttl}, 2419200, 'no expiry: the default TTL (28 days)');
is($wp1->{topic}, 'order-55', 'Topic from collapse_id');
is(delivery($w1, 'provider_message_id'), "$origin/m/$wp1->{message_id}", 'provider_message_id is the Location');

# --- an expired subscription: 410 ---
$sim->config({ webpush => { expire => [ $sub2->{endpoint} ] } });
$seq = $sim->seq;
my $w3 = sql(q{SELECT notify_send('web2', 'alert', '{"order": 57, "count": 1}')});
drained();
is(delivery($w3, q{status || ' after ' || attempts || ': ' || last_error}),
	'failed after 1: webpush 410 subscription gone', '410: failed');
my ($gone_req) = $sim->log('webpush', $seq);
is($gone_req->{status}, 410, 'the push service answered 410');
like(sql(qq{SELECT active || ' ' || last_error FROM notify.devices WHERE token = '$sub2->{endpoint}'}),
	qr/^false webpush 410/, '... and the subscription is deactivated');

# ================================================================= Twilio

sql(q{SELECT notify_upsert_recipient('sms1', phone => '+15550000001', attributes => '{"name": "Alan"}');
	SELECT notify_upsert_recipient('sms_bad', phone => '+15550000002');
	SELECT notify_upsert_recipient('sms_land', phone => '+15550000003');
	SELECT notify_upsert_recipient('sms_stop', phone => '+15550000004');
	SELECT notify_upsert_recipient('sms_busy', phone => '+15550000005');});

$seq = $sim->seq;
my $s1 = sql(q{SELECT notify_send('sms1', 'hi', '{"code": "123456"}')});
my $long_text = join(' ', ('The quick brown fox jumps over the lazy dog.') x 9);    # 404 GSM-7 chars
my $s2 = sql(qq{SELECT notify_send('sms1', 'long', '{"text": "$long_text"}')});
drained('SMS drained');
my @tw = $sim->log('twilio', $seq);
my ($tw1) = grep { $_->{form}{Body} =~ /123456/ } @tw;
my ($tw2) = grep { $_->{form}{Body} =~ /quick brown/ } @tw;
is(delivery($s1), 'sent after 1', 'SMS sent');
is($tw1->{status}, 201, 'Twilio answered 201');
is($tw1->{auth_user}, 'AC0123456789abcdef0123456789abcdef', 'basic auth with the account sid was accepted');
is_deeply($tw1->{form}, { To => '+15550000001', From => '+15550001111', Body => 'Hi Alan, your code is 123456' },
	'form: To, From, rendered Body');
is(delivery($s1, q{provider_message_id || ' ' || segments}), "$tw1->{sid} 1", 'sid is the provider_message_id, 1 segment');
like($tw1->{sid}, qr/^SM[0-9a-f]{32}$/, 'a Twilio message sid');
is(delivery($s2, q{provider_message_id || ' ' || segments}), "$tw2->{sid} 3", 'a 404-character body: 3 segments recorded');
is($tw2->{segments}, 3, '... as Twilio counted them');

# notify only sends E.164 numbers, so 21211 (To not a valid number) is a
# fault rule: a well-formed number Twilio still refuses.
$sim->config({ twilio => { landline => ['+15550000003'], stopped => ['+15550000004'] } });
$sim->fault([
	{ sim => 'twilio', match => '+15550000002', status => 400 },
	{ sim => 'twilio', match => '+15550000005', status => 429, count => 2 },
]);
my %sn;
$sn{$_} = sql(qq{SELECT notify_send('sms_$_', 'hi', '{"name": "x", "code": "1"}')}) for qw(bad land stop busy);
drained('SMS error batch drained');
like(delivery($sn{bad}, q{status || ' after ' || attempts || ': ' || last_error}),
	qr/^failed after 1: twilio 400 21211: /, '21211 invalid To: failed');
like(delivery($sn{land}, q{status || ' after ' || attempts || ': ' || last_error}),
	qr/^failed after 1: twilio 400 21614: 'To' number is not a valid mobile number/, '21614 landline: failed');
like(delivery($sn{stop}, q{status || ' after ' || attempts || ': ' || last_error}),
	qr/^failed after 1: twilio 400 21610/, '21610 STOP: failed');
is(sql(q{SELECT enabled || ' ' || source FROM notify.preferences p JOIN notify.recipients r ON r.id = p.recipient_id
	WHERE r.external_id = 'sms_stop' AND p.channel = 'sms' AND p.category IS NULL}), 'false sms_stop',
	"... and the recipient's SMS preference is off (source sms_stop)");
is(delivery($sn{busy}), 'sent after 3', '429 twice: retried, then sent');
is(sql(qq{SELECT string_agg(a.provider_status || ' ' || a.error, ',' ORDER BY a.attempt) FROM notify.attempts a
	JOIN notify.deliveries d ON d.id = a.outbox_id WHERE d.notification_id = $sn{busy}}),
	'429 twilio 429 20429: Too Many Requests,429 twilio 429 20429: Too Many Requests', '... both 429s recorded');

$seq = $sim->seq;
my $later = sql(q{SELECT notify_send('sms_stop', 'hi', '{"name": "x", "code": "2"}')});
is(delivery($later, q{status || ': ' || last_error}), 'suppressed: recipient opted out of sms',
	'a later SMS to the STOPped recipient is suppressed');
drained();
is(scalar($sim->log('twilio', $seq)), 0, '... and never reaches Twilio');

# --- wrong credentials ---
sql(twilio_config($twilio_wrong_sql));
$seq = $sim->seq;
my $sw = sql(q{SELECT notify_send('sms1', 'hi', '{"code": "999"}')});
drained();
like(delivery($sw, q{status || ' after ' || attempts || ': ' || last_error}),
	qr/^failed after 1: twilio 401 20003 authentication failed: a configuration problem/,
	'a wrong auth token: failed, saying why');
my ($twa) = $sim->log('twilio', $seq);
is("$twa->{status} $twa->{error_code}", '401 20003', 'Twilio refused the basic auth (401, 20003)');
sql(twilio_config($twilio_token_sql));

# =================================================================== SMTP

sql(q{SELECT notify_upsert_recipient('em1', email => 'ada@example.org', attributes => '{"name": "Ada"}');
	SELECT notify_upsert_recipient('em_bounce', email => 'bounce@example.org', attributes => '{"name": "B"}');
	SELECT notify_upsert_recipient('em_grey', email => 'grey@example.org', attributes => '{"name": "G"}');});

$seq = $sim->seq;
my @mails = map { sql(qq{SELECT notify_send('em1', 'mail', '{"order": $_}')}) } 1 .. 2;
push @mails, split /\n/, sql(q{SELECT notify_send('em1', 'mail', jsonb_build_object('order', i))
	FROM generate_series(3, 10) i});
drained('emails drained');
is(join(',', map { delivery($_) } @mails), join(',', ('sent after 1') x 10), 'ten emails sent');
my @msgs = grep { ($_->{event} // '') eq 'message' } $sim->log('smtp', $seq);
is(scalar(@msgs), 10, 'the SMTP server accepted ten messages');
my ($mm) = grep { $_->{subject} =~ /Bestellung 1 / } @msgs;
ok($mm->{starttls} && $mm->{tls}, 'over STARTTLS on the submission port');
is($mm->{auth_user}, 'notify', 'after AUTH as the configured user');
is($mm->{helo}, 'notify.example.com', 'EHLO with the configured name');
is($mm->{mail_from}, 'noreply@example.com', 'envelope sender');
is_deeply($mm->{rcpt}, ['ada@example.org'], 'envelope recipient');
is_deeply($mm->{problems}, [], 'the server found nothing wrong with the message');
is($mm->{content_type}, 'multipart/alternative', 'multipart/alternative');
is_deeply([ map { $_->{content_type} } grep { !defined $_->{parts} } @{ $mm->{parts} } ],
	[ 'text/plain', 'text/html' ], 'text/plain first, text/html last');
is($mm->{text}, "Hello Ada,\r\nyour order 1 has shipped.", 'text part decoded');
is($mm->{html}, '<p>Hello <b>Ada</b>, your order 1 has shipped.</p>', 'html part decoded');
like($mm->{headers}{subject}, qr/^=\?UTF-8\?B\?[A-Za-z0-9+\/=]+\?=$/, 'a non-ASCII subject is RFC 2047-encoded');
is($mm->{subject}, "Ihre Bestellung 1 \x{2013} Gr\x{fc}\x{df}e", '... and decodes to the rendered subject');
is($mm->{from_header}, '"Example Shop" <noreply@example.com>', 'From with the display name');
is($mm->{headers}{'reply-to'}, 'support@example.com', 'Reply-To');
is($mm->{headers}{'list-unsubscribe'}, '<https://example.com/unsubscribe?u=em1>', 'List-Unsubscribe for the recipient');
is($mm->{headers}{'list-unsubscribe-post'}, 'List-Unsubscribe=One-Click', 'List-Unsubscribe-Post (RFC 8058)');
like($mm->{headers}{date}, qr/^\w{3}, \d\d \w{3} \d{4} \d\d:\d\d:\d\d \+0000$/, 'Date');
is(delivery($mails[0], 'provider_message_id'), $mm->{headers}{'message-id'}, 'provider_message_id is the Message-ID');
my %mconn = map { $_->{conn} => 1 } @msgs;
cmp_ok(scalar(keys %mconn), '<', 10, 'fewer connections than messages: ' . scalar(keys %mconn));
ok((grep { $_->{message_index} > 1 } @msgs), 'a connection carried more than one message');
my @connects = grep { ($_->{event} // '') eq 'connect' } $sim->log('smtp', $seq);
is(scalar(@connects), scalar(keys %mconn), 'no connection was opened that did not carry mail');

# --- bounce and greylisting ---
$sim->config({ smtp => { bouncing => ['bounce@example.org'], greylisted => ['grey@example.org'] } });
$seq = $sim->seq;
my $mb = sql(q{SELECT notify_send('em_bounce', 'mail', '{"order": 11}')});
my $mg = sql(q{SELECT notify_send('em_grey', 'mail', '{"order": 12}')});
drained('bounce and greylist drained');
like(delivery($mb, q{status || ' after ' || attempts || ': ' || last_error}),
	qr/^failed after 1: smtp 550 \(bounce\)/, '550 at RCPT: failed as a bounce');
is(delivery($mg), 'sent after 2', '451 greylisted: retried, then sent');
like(sql(qq{SELECT a.provider_status || ' ' || a.error FROM notify.attempts a
	JOIN notify.deliveries d ON d.id = a.outbox_id WHERE d.notification_id = $mg}), qr/^451 smtp 451/,
	'... the 451 attempt recorded');
my @replies = grep { ($_->{event} // '') eq 'reply' } $sim->log('smtp', $seq);
is_deeply([ sort map { $_->{code} } @replies ], [ 451, 550 ], 'the server refused exactly twice (550, 451)');

# --- implicit TLS ---
sql(smtp_config("smtps://127.0.0.1:$smtps_port", 'implicit'));
$seq = $sim->seq;
my $mi = sql(q{SELECT notify_send('em1', 'mail', '{"order": 13}')});
drained();
is(delivery($mi), 'sent after 1', 'sent over smtps');
my ($mim) = grep { ($_->{event} // '') eq 'message' } $sim->log('smtp', $seq);
is($mim->{port}, 'smtps', 'on the implicit-TLS port');
ok($mim->{tls} && !$mim->{starttls}, 'TLS from the first byte, no STARTTLS');
is($mim->{auth_user}, 'notify', 'authenticated');

# ===================================================== provider selection

my $sel_ios = apns_token('sel-ios');
my $sel_and = fcm_token('sel');
my $sel_web = $sim->control('POST', '/webpush/subscribe', {});
my $app_a = apns_token('app-a');
my $app_b = apns_token('app-b');
sql(qq{SELECT notify_upsert_recipient('multi', attributes => '{"name": "Multi"}');
	SELECT notify_register_device('multi', 'ios', '$sel_ios');
	SELECT notify_register_device('multi', 'android', '$sel_and');
	SELECT notify_register_device('multi', 'web', '@{[ encode_json($sel_web) ]}');
	SELECT notify_upsert_recipient('dual', attributes => '{"name": "Dual"}');
	SELECT notify_register_device('dual', 'ios', '$app_a');
	SELECT notify_register_device('dual', 'ios', '$app_b', app => 'apns_b');});
$seq = $sim->seq;
my $seq_b = $sim_b->seq;
my $nm = sql(q{SELECT notify_send('multi', 'alert', '{"order": 77, "count": 1}')});
my $nd = sql(q{SELECT notify_send('dual', 'alert', '{"order": 78, "count": 1}')});
drained('selection sends drained');
is(sql(qq{SELECT string_agg(dv.platform || '>' || d.provider || ':' || d.status, ',' ORDER BY dv.platform)
	FROM notify.deliveries d JOIN notify.devices dv ON dv.id = d.device_id WHERE d.notification_id = $nm}),
	'android>fcm:sent,ios>apns:sent,web>webpush:sent', 'the platform picks the provider: ios APNS, android FCM, web Web Push');
is_deeply([ map { $_->{path} } grep { alert_body($_) =~ /Order 77/ } $sim->log('apns', $seq) ],
	["/3/device/$sel_ios"], 'APNS got the iOS token');
is_deeply([ map { $_->{json}{message}{token} } grep { $_->{path} =~ /messages:send/ } $sim->log('fcm', $seq) ],
	[$sel_and], 'FCM got the Android token');
is_deeply([ map { $_->{json}{body} } $sim->log('webpush', $seq) ], ['Order 77 shipped'],
	'the push service got the web push');

is(sql(qq{SELECT string_agg(d.provider || ':' || dv.token || ':' || d.status, ',' ORDER BY d.provider)
	FROM notify.deliveries d JOIN notify.devices dv ON dv.id = d.device_id WHERE d.notification_id = $nd}),
	"apns:$app_a:sent,apns_b:$app_b:sent", 'two APNS instances: each device delivered by its own app');
my @a = grep { alert_body($_) =~ /Order 78/ } $sim->log('apns', $seq);
my @b = $sim_b->log('apns', $seq_b);
is_deeply([ map { "$_->{path} $_->{headers}{'apns-topic'} $_->{status}" } @a ],
	["/3/device/$app_a com.example.app 200"], 'the first APNS service got only its device, with its topic');
is_deeply([ map { "$_->{path} $_->{headers}{'apns-topic'} $_->{status}" } @b ],
	["/3/device/$app_b com.example.b 200"], 'the second got only the other device, with the other topic');
is_deeply($b[0]{jwt}, { kid => 'KEYB987654', iss => 'TEAMB12345', iat => $b[0]{jwt}{iat} },
	'... and a provider token of its own key and team');

# ================================================================ secrets

my @secrets;    # [label, secret text]
my $pem_lines = sub {
	my ($label, $pem) = @_;
	my $i = 0;
	push @secrets, map { [ "$label line " . ++$i, $_ ] } grep { length >= 40 && !/-----/ } split /\r?\n/, $pem;
};
$pem_lines->('APNS .p8', slurp_file($sim->keyfile('apns.p8')));
$pem_lines->('second APNS .p8', slurp_file($sim_b->keyfile('apns.p8')));
$pem_lines->('FCM private key', $sa->{private_key});
$pem_lines->('VAPID private key', slurp_file($sim->keyfile('vapid.pem')));
push @secrets, [ 'Twilio auth token', $twilio_token ], [ 'wrong Twilio auth token', $twilio_wrong ],
  [ 'SMTP password', $smtp_password ];
my %minted;    # token text -> kind
for my $e ($sim->log('apns'), $sim_b->log('apns'))
{
	$minted{$1} = 'APNS provider token' if ($e->{headers}{authorization} // '') =~ /^bearer (\S+)$/;
}
for my $e ($sim->log('fcm'))
{
	$minted{ $e->{access_token} } = 'FCM access token' if $e->{access_token};
	$minted{$1} = 'FCM access token' if ($e->{headers}{authorization} // '') =~ /^Bearer (\S+)$/;
	$minted{$1} = 'FCM assertion' if $e->{path} eq '/token' && ($e->{body} // '') =~ /assertion=([^&]+)/;
}
for my $e ($sim->log('webpush'))
{
	$minted{$1} = 'VAPID JWT' if ($e->{headers}{authorization} // '') =~ /^vapid t=([^,\s]+)/;
}
my %kinds;
$kinds{$_}++ for values %minted;
cmp_ok($kinds{'APNS provider token'} // 0, '>=', 3, 'APNS provider tokens collected from the simulator logs');
cmp_ok($kinds{'FCM access token'} // 0, '>=', 2, 'FCM access tokens collected');
# (RS256 is deterministic: two exchanges in one second send the same assertion)
cmp_ok($kinds{'FCM assertion'} // 0, '>=', 1, 'FCM assertions collected');
cmp_ok($kinds{'VAPID JWT'} // 0, '>=', 1, 'VAPID tokens collected');
push @secrets, map { [ $minted{$_}, $_ ] } sort keys %minted;

# control: the search finds the configured secrets where they belong
my $raw_config = sql(q{SELECT string_agg(config::text, E'\n') FROM notify.providers});
my @configured = grep { $_->[0] =~ /line|^Twilio auth token$|^SMTP password$/ } @secrets;
is(scalar(grep { index($raw_config, $_->[1]) >= 0 } @configured), scalar(@configured),
	'control: all ' . scalar(@configured) . ' configured secrets are found in notify.providers.config');

my %haystack = (
	'server log' => slurp_file($node->logfile),
	'notify.provider_settings' => sql(q{SELECT string_agg(name || ' ' || config::text, E'\n') FROM notify.provider_settings}),
	'notify_status()' => sql(q{SELECT string_agg(s::text, E'\n') FROM notify.notifications n, notify_status(n.id) s}),
	'notify.deliveries.last_error' => sql(q{SELECT string_agg(last_error, E'\n') FROM notify.deliveries}),
	'notify.attempts.error' => sql(q{SELECT string_agg(error, E'\n') FROM notify.attempts}),
	'notify_workers()' => sql(q{SELECT string_agg(w::text, E'\n') FROM notify_workers() w}),
);
cmp_ok(length($haystack{'notify_status()'}), '>', 1000, 'notify_status() rows to search');
cmp_ok(length($haystack{'notify.attempts.error'}), '>', 100, 'attempt errors to search');
like($haystack{'notify.provider_settings'}, qr/"key": "\*{8}"/, 'provider_settings masks the APNS key');
like($haystack{'server log'}, qr/pg_read_file/, 'the server log holds the configuring statements (without the secrets)');
for my $where (sort keys %haystack)
{
	my @found = grep { index($haystack{$where}, $_->[1]) >= 0 } @secrets;
	is(scalar(@found), 0, "no secret in $where (" . scalar(@secrets) . ' checked)')
	  or diag('found: ' . join(', ', map { $_->[0] } @found));
}

done_testing();
