
# Delivery engine, end to end through the webhook provider and its
# simulator: plain HTTP/1.1, HTTP/2 over TLS (test CA) and h2c; wake-up at
# commit; rollback; priorities; scheduling; retries, Retry-After, dead
# letters, permanent failures, expiry; signatures and idempotency headers.

use strict;
use warnings;

use JSON::PP;
use NotifyTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $sim = NotifyTest::Sim->start;
my $node = NotifyTest::node('delivery', "notify.max_attempts = 3\n");
my $h2c = $sim->port('webhook_h2c');
my $https = $sim->port('webhook_https');
my $http = $sim->port('webhook_http');

sub sql { return $node->safe_psql('postgres', shift); }

$sim->config({ webhook => { secret => 'hook-secret' } });
sql(qq{
	SELECT notify_set_provider('webhook', 'webhook', jsonb_build_object(
		'endpoint', 'http://127.0.0.1:$h2c/hook', 'h2c', true, 'secret', 'hook-secret'));
	SELECT notify_put_template('ping', 'webhook', '{"body": {"n": "{{n}}", "who": "{{who}}"}}');
	SELECT notify_upsert_recipient('r1', attributes => '{"who": "r1"}');
});

ok(NotifyTest::wait_until(sub {
	sql("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'notify worker webhook'") eq '1' }),
	'one worker runs for the provider, named in pg_stat_activity');
is(sql("SELECT backend_type FROM pg_stat_activity WHERE application_name = 'notify worker webhook'"),
	'notify worker', 'backend type names it');

# --- end to end over h2c, with signature and idempotency headers ---
my $seq = $sim->seq;
sql(q{SELECT notify_send('r1', 'ping', jsonb_build_object('n', i)) FROM generate_series(1, 20) i});
ok(NotifyTest::drain($node), 'outbox drained');
is(NotifyTest::finished($node, 'sent', 'webhook'), '20', '20 deliveries sent');
my @got = $sim->log('webhook', $seq);
is(scalar(@got), 20, 'the simulator received 20 requests');
is(scalar(grep { ($_->{signature} // '') eq 'valid' } @got), 20, 'every HMAC signature verified');
is(scalar(grep { $_->{proto} eq 'h2' } @got), 20, 'all of them over HTTP/2 (h2c)');
my %ids = map { $_->{headers}{'x-notify-id'} => 1 } @got;
is(scalar(keys %ids), 20, 'each carries its own x-notify-id');
my $body = decode_json($got[0]{body});
is($body->{who}, 'r1', 'body is the rendered template (attribute filled in)');
is(sql(q{SELECT count(*) FROM notify.deliveries WHERE provider_message_id IS NOT NULL AND provider_status = 200}),
	'20', 'provider status and message id recorded');
like(sql(q{SELECT string_agg(DISTINCT s.status, ',') FROM notify.notifications n, notify_status(n.id) s}),
	qr/^sent$/, 'notify_status reports sent');

# --- HTTP/2 over TLS with a CA made at test time, and plain HTTP/1.1 ---
sql(qq{SELECT notify_upsert_recipient('tls', attributes => '{"who": "tls", "webhook_url": "https://localhost:$https/tls"}')});
sql(qq{SELECT notify_upsert_recipient('h1', attributes => '{"who": "h1", "webhook_url": "http://127.0.0.1:$http/h1"}')});
my $ca = $sim->ca;
sql(qq{SELECT notify_set_provider('webhook', 'webhook', jsonb_build_object(
		'endpoint', 'http://127.0.0.1:$h2c/hook', 'h2c', true, 'secret', 'hook-secret', 'ca_file', '$ca'))});
$seq = $sim->seq;
sql(q{SELECT notify_send('tls', 'ping', '{"n": 1}')});
ok(NotifyTest::drain($node), 'TLS delivery drained');
my ($tls) = grep { $_->{path} eq '/tls' } $sim->log('webhook', $seq);
is($tls->{proto}, 'h2', 'https endpoint negotiated HTTP/2 by ALPN, trusting the test CA');

# without "h2c", a plain http:// endpoint gets HTTP/1.1
sql(qq{SELECT notify_set_provider('webhook', 'webhook', jsonb_build_object(
		'endpoint', 'http://127.0.0.1:$http/hook', 'secret', 'hook-secret', 'ca_file', '$ca'))});
$seq = $sim->seq;
sql(q{SELECT notify_send('h1', 'ping', '{"n": 2}')});
ok(NotifyTest::drain($node), 'HTTP/1.1 delivery drained');
my ($h1) = grep { $_->{path} eq '/h1' } $sim->log('webhook', $seq);
is($h1->{proto}, 'h1', 'plain http:// endpoint spoke HTTP/1.1');
is(NotifyTest::finished($node, 'sent', 'webhook'), '22', 'both sent');
sql(qq{SELECT notify_set_provider('webhook', 'webhook', jsonb_build_object(
		'endpoint', 'http://127.0.0.1:$h2c/hook', 'h2c', true, 'secret', 'hook-secret'))});

# --- rollback sends nothing ---
$seq = $sim->seq;
$node->safe_psql('postgres', q{
	BEGIN;
	SELECT notify_send('r1', 'ping', '{"n": "rolled-back"}');
	ROLLBACK;
});
sql(q{SELECT notify_send('r1', 'ping', '{"n": "marker"}')});
ok(NotifyTest::drain($node), 'marker delivered');
@got = $sim->log('webhook', $seq);
is(scalar(grep { $_->{body} =~ /rolled-back/ } @got), 0, 'the rolled-back send never reached the provider');
is(scalar(grep { $_->{body} =~ /marker/ } @got), 1, 'the committed one did');

# --- wake-up at commit, not at the next poll ---
$node->safe_psql('postgres', q{ALTER SYSTEM SET notify.poll_interval = '10min'; SELECT pg_reload_conf();});
# the worker may be asleep on the old interval: let it see the reload first
sql(q{SELECT notify_send('r1', 'ping', '{"n": "settle"}')});
ok(NotifyTest::drain($node), 'settled');
my $t0 = sql(q{SELECT clock_timestamp()});
sql(q{SELECT notify_send('r1', 'ping', '{"n": "wake"}')});
ok(NotifyTest::drain($node, 30), 'a committed send is delivered with polling every 10 minutes: the commit woke the worker');
$node->safe_psql('postgres', q{ALTER SYSTEM RESET notify.poll_interval; SELECT pg_reload_conf();});

# --- priorities: higher first, then oldest ---
$node->safe_psql('postgres', q{ALTER SYSTEM SET notify.batch_size = 1; SELECT pg_reload_conf();});
sql(q{UPDATE notify.providers SET paused = true WHERE name = 'webhook'});
NotifyTest::wait_until(sub {
	sql(q{SELECT count(*) FROM pg_stat_activity WHERE application_name = 'notify worker webhook' AND state = 'idle'}) eq '1' });
sql(q{SELECT notify_send('r1', 'ping', jsonb_build_object('n', 'low-' || i), priority => -5) FROM generate_series(1, 3) i});
sql(q{SELECT notify_send('r1', 'ping', jsonb_build_object('n', 'normal-' || i)) FROM generate_series(1, 3) i});
sql(q{SELECT notify_send('r1', 'ping', jsonb_build_object('n', 'high-' || i), priority => 5) FROM generate_series(1, 3) i});
$seq = $sim->seq;
sql(q{UPDATE notify.providers SET paused = false WHERE name = 'webhook'});
ok(NotifyTest::drain($node), 'prioritised backlog drained');
my @order = map { decode_json($_->{body})->{n} } $sim->log('webhook', $seq);
is_deeply(\@order, [qw(high-1 high-2 high-3 normal-1 normal-2 normal-3 low-1 low-2 low-3)],
	'delivered by priority, then oldest first');
$node->safe_psql('postgres', q{ALTER SYSTEM RESET notify.batch_size; SELECT pg_reload_conf();});

# --- scheduled sends wait for send_at ---
my $sid = sql(q{SELECT notify_send('r1', 'ping', '{"n": "scheduled"}', send_at => now() + interval '2 seconds')});
is(sql("SELECT status FROM notify_status($sid)"), 'scheduled', 'a future send_at is scheduled');
ok(NotifyTest::drain($node), 'scheduled send delivered');
is(sql(qq{SELECT d.sent_at >= n.send_at FROM notify.deliveries d JOIN notify.notifications n ON n.id = d.notification_id
	WHERE n.id = $sid}), 't', 'not before its send_at');

# --- transient failures retry with backoff, then succeed ---
sql(qq{SELECT notify_upsert_recipient('flaky', attributes => '{"who": "f", "webhook_url": "http://127.0.0.1:$h2c/flaky"}')});
$sim->fault({ sim => 'webhook', match => '/flaky', status => 503, count => 2 });
my $fid = sql(q{SELECT notify_send('flaky', 'ping', '{"n": "flaky"}')});
ok(NotifyTest::drain($node), 'flaky delivery finished');
is(sql("SELECT status || ' after ' || attempts FROM notify_status($fid)"), 'sent after 3', 'sent on the third attempt');
is(sql(qq{SELECT string_agg(a.provider_status::text, ',' ORDER BY a.attempt) FROM notify.attempts a
	JOIN notify.deliveries d ON d.id = a.outbox_id WHERE d.notification_id = $fid}), '503,503',
	'both failed attempts kept in notify.attempts with the provider status');

# --- Retry-After is honoured ---
sql(qq{SELECT notify_upsert_recipient('slow', attributes => '{"who": "s", "webhook_url": "http://127.0.0.1:$h2c/slowdown"}')});
$sim->fault({ sim => 'webhook', match => '/slowdown', status => 429, headers => { 'retry-after' => '3' }, count => 1 });
my $rid = sql(q{SELECT notify_send('slow', 'ping', '{"n": "slow"}')});
ok(NotifyTest::drain($node), 'rate-limited delivery finished');
cmp_ok(sql(qq{SELECT extract(epoch FROM d.sent_at - a.at) FROM notify.attempts a
	JOIN notify.deliveries d ON d.id = a.outbox_id WHERE d.notification_id = $rid}), '>=', 2.9,
	'the retry waited for Retry-After (3 s), not the 200 ms backoff');

# --- dead after max attempts (3 here) ---
sql(qq{SELECT notify_upsert_recipient('down', attributes => '{"who": "d", "webhook_url": "http://127.0.0.1:$h2c/down"}')});
$sim->fault({ sim => 'webhook', match => '/down', status => 500 });
my $did = sql(q{SELECT notify_send('down', 'ping', '{"n": "down"}')});
ok(NotifyTest::drain($node), 'dead delivery finished');
is(sql("SELECT status || ' after ' || attempts FROM notify_status($did)"), 'dead after 3', 'dead after max attempts');
like(sql("SELECT last_error FROM notify_status($did)"), qr/gave up after 3 attempts: webhook 500/, 'reason recorded');

# --- a permanent failure fails at once ---
sql(qq{SELECT notify_upsert_recipient('bad', attributes => '{"who": "b", "webhook_url": "http://127.0.0.1:$h2c/bad"}')});
$sim->fault({ sim => 'webhook', match => '/bad', status => 422, body => { error => 'no such hook' } });
my $bid = sql(q{SELECT notify_send('bad', 'ping', '{"n": "bad"}')});
ok(NotifyTest::drain($node), 'failed delivery finished');
is(sql("SELECT status || ' after ' || attempts FROM notify_status($bid)"), 'failed after 1', 'a 422 is not retried');
like(sql("SELECT last_error FROM notify_status($bid)"), qr/422.*no such hook/, "the provider's reason is recorded");

# --- a dropped connection is transient ---
sql(qq{SELECT notify_upsert_recipient('drop', attributes => '{"who": "x", "webhook_url": "http://127.0.0.1:$h2c/drop"}')});
$sim->fault({ sim => 'webhook', match => '/drop', drop => JSON::PP::true, count => 1 });
my $xid = sql(q{SELECT notify_send('drop', 'ping', '{"n": "drop"}')});
ok(NotifyTest::drain($node), 'dropped delivery finished');
is(sql("SELECT status || ' after ' || attempts FROM notify_status($xid)"), 'sent after 2', 'a dropped stream is retried');

# --- expired rows are not sent ---
sql(q{UPDATE notify.providers SET paused = true WHERE name = 'webhook'});
my $eid = sql(q{SELECT notify_send('r1', 'ping', '{"n": "expired"}', expires_at => now() + interval '1 second')});
NotifyTest::wait_until(sub { sql(q{SELECT count(*) FROM notify.outbox WHERE expires_at < now()}) eq '1' });
$seq = $sim->seq;
sql(q{UPDATE notify.providers SET paused = false WHERE name = 'webhook'});
ok(NotifyTest::drain($node), 'expired row finished');
is(sql("SELECT status FROM notify_status($eid)"), 'expired', 'recorded as expired');
is(scalar(grep { $_->{body} =~ /expired/ } $sim->log('webhook', $seq)), 0, 'and never sent');

# --- a provider rate limit spreads deliveries out ---
sql(qq{SELECT notify_set_provider('webhook', 'webhook', jsonb_build_object(
		'endpoint', 'http://127.0.0.1:$h2c/hook', 'h2c', true, 'secret', 'hook-secret', 'rate_limit', 20))});
sql(q{SELECT notify_send('r1', 'ping', jsonb_build_object('n', 'rated-' || i)) FROM generate_series(1, 60) i});
ok(NotifyTest::drain($node), 'rate-limited backlog drained');
# 20/s with a one-second burst: the last 40 are claimed over 2 s (sent_at
# is taken when a batch ends, so the first batch's own delivery time comes
# off the spread; unlimited, all 60 go out in one batch)
cmp_ok(sql(q{SELECT extract(epoch FROM max(d.sent_at) - min(d.sent_at)) FROM notify.deliveries d
	JOIN notify.notifications n ON n.id = d.notification_id WHERE n.params->>'n' LIKE 'rated-%'}), '>=', 1.5,
	'60 deliveries at rate_limit 20/s were spread over about 2 s');
sql(qq{SELECT notify_set_provider('webhook', 'webhook', jsonb_build_object(
		'endpoint', 'http://127.0.0.1:$h2c/hook', 'h2c', true, 'secret', 'hook-secret'))});

# --- a worker survives a provider configuration it cannot use ---
is(sql(q{SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'notify worker'}), '1',
	'still exactly one worker');
unlike(slurp_file($node->logfile), qr/terminated by signal|server process .* exited with exit code/,
	'no worker crashed');

done_testing();
