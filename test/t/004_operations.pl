
# 004_operations.pl -- what an operator sees and does, against running
# workers: queue_stats and notify_workers() over a live workload,
# delivery_stats after known deliveries, pause/resume in the middle of a
# backlog, requeue of dead deliveries, cancel of a scheduled notification,
# the launcher's retention purge, its alerts (WARNING + NOTIFY
# notify_alerts), and what a notify_sender login may do.
#
# Two clusters share one simulator:
#   "ops"  -- everything but retention; its parts run one after the other,
#             each with its own recipients and webhook path (/pN/...), and
#             every part waits until the worker is quiet before the next.
#   "keep" -- retention only: set up (and backdated) first, checked last,
#             so that the launcher's 60 s purge interval passes while the
#             other parts run.
#
# Parts are numbered as in the plan (1 queue_stats/notify_workers,
# 2 delivery_stats, 3 pause, 4 requeue, 5 cancel, 6 retention, 7 alerts,
# 8 roles) and run in the order 2, 4, 1, 3, 5, 8, 7c, 6: delivery_stats
# needs a cluster without other history, and the dead/lag alerts are
# checked where the parts that cause them run (7a in 4 and 1, 7b in 1).
# Regression checks for two alert bugs fixed in maintenance.c: a second
# provider falling behind is alerted although another one was alerted a
# moment ago (lag alerts repeat per provider), and a dead delivery whose
# recording transaction spans an alert check is not skipped (7c).
#
# Every assertion is about behaviour; the test waits for conditions and
# never sleeps for a time.  Worker counters are compared as deltas between
# snapshots taken while the worker is quiet.

use strict;
use warnings;

use IPC::Run;
use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use NotifyTest;

# ------------------------------------------------------------------------
# A psql session kept open in the background (IPC::Run alone, so it works
# on any PostgreSQL 15): run() sends a command and waits for its end.
# psql prints the notifications it received after each command, so for
# LISTEN, poll() runs "SELECT 1" and collects the
#   Asynchronous notification "<channel>" with payload "<payload>" ...
# lines.
# ------------------------------------------------------------------------
package BgPsql;

sub new
{
	my ($class, $node) = @_;
	my $self = bless { in => '', out => '', err => '', n => 0, got => [] }, $class;
	$self->{timer} = IPC::Run::timeout($PostgreSQL::Test::Utils::timeout_default);
	$self->{h} = IPC::Run::start(
		[ 'psql', '-XAtq', '-v', 'ON_ERROR_STOP=1', '-d', $node->connstr('postgres') ],
		'<', \$self->{in}, '>', \$self->{out}, '2>', \$self->{err}, $self->{timer});
	return $self;
}

# Run one command and wait for its end; keep the notifications printed.
sub run
{
	my ($self, $sql) = @_;
	my $mark = 'bgpsql-mark-' . ++$self->{n};
	$self->{timer}->start($PostgreSQL::Test::Utils::timeout_default);
	$self->{in} .= "$sql;\n\\echo $mark\n";
	$self->{h}->pump until $self->{out} =~ /^\Q$mark\E$/m;
	die "background psql: $self->{err}" if $self->{err} =~ /ERROR/;
	while ($self->{out} =~
		/^Asynchronous notification "([^"]*)" with payload "(.*)" received from server process with PID (\d+)\.$/mg)
	{
		push @{ $self->{got} }, { channel => $1, payload => $2, pid => $3 };
	}
	$self->{out} = '';
	return;
}

# Every notification received so far (decoded payloads in ->{json}).
sub poll
{
	my ($self) = @_;
	$self->run('SELECT 1');
	for my $n (@{ $self->{got} })
	{
		$n->{json} //= eval { JSON::PP::decode_json($n->{payload}) } // {};
	}
	return @{ $self->{got} };
}

sub quit
{
	my ($self) = @_;
	$self->{in} .= "\\q\n";
	$self->{h}->finish;
	return;
}

package main;

my $sim = NotifyTest::Sim->start;
my $h2c = $sim->port('webhook_h2c');
my $secret = 'Sup3r-S3cret-Hook-Key';

# A webhook provider (with a secret, for the role checks) and template "ping".
sub setup_provider
{
	my ($node) = @_;
	$node->safe_psql('postgres', qq{
		SELECT notify_set_provider('webhook', 'webhook', jsonb_build_object(
			'endpoint', 'http://127.0.0.1:$h2c/hook', 'h2c', true, 'secret', '$secret'));
		SELECT notify_put_template('ping', 'webhook', '{"body": {"n": "{{n}}"}}');
	});
}

# A recipient whose webhook deliveries go to $path on the simulator.
sub recipient
{
	my ($node, $name, $path) = @_;
	$node->safe_psql('postgres', qq{
		SELECT notify_upsert_recipient('$name',
			attributes => jsonb_build_object('webhook_url', 'http://127.0.0.1:$h2c$path'))});
}

# $n notifications to $r in one transaction (one commit, one wake-up).
sub send_n
{
	my ($node, $r, $n, %o) = @_;
	my $extra = $o{send_at} ? ", send_at => $o{send_at}" : '';
	return $node->safe_psql('postgres',
		"SELECT string_agg(notify_send('$r', 'ping', jsonb_build_object('n', '$r-' || g)$extra)::text, ',') "
		  . "FROM generate_series(1, $n) g");
}

# Finished deliveries of a recipient's notifications: "dead=2,sent=3".
sub outcomes
{
	my ($node, $r) = @_;
	return $node->safe_psql('postgres', qq{
		SELECT coalesce(string_agg(status || '=' || c, ',' ORDER BY status), '')
		  FROM (SELECT d.status, count(*) AS c FROM notify.deliveries d
				  JOIN notify.notifications n ON n.id = d.notification_id
				 WHERE n.recipient = '$r' GROUP BY 1) s});
}

sub wait_outcomes
{
	my ($node, $r, $want, $timeout) = @_;
	return NotifyTest::wait_until(sub { outcomes($node, $r) eq $want }, $timeout);
}

# The webhook simulator's requests (counted on arrival, before any delay).
sub sim_requests { return $sim->stats->{sims}{webhook}{requests}; }

# Log entries (answered requests) whose path starts with $prefix.
sub sim_got
{
	my ($prefix, $since) = @_;
	return grep { index($_->{path}, $prefix) == 0 } $sim->log('webhook', $since // 0);
}

# Every request the simulator received has been answered (delayed ones too).
sub sim_settled
{
	return NotifyTest::wait_until(
		sub {
			my $w = $sim->stats->{sims}{webhook};
			my $answered = 0;
			$answered += $_ for values %{ $w->{status} };
			return $answered == $w->{requests};
		});
}

sub add_fault { my ($spec) = @_; return $sim->fault({ sim => 'webhook', %$spec })->{ids}[0]; }
sub drop_fault { my ($id) = @_; $sim->control('DELETE', "/faults/$id"); }

# ========================================================================
# The retention cluster: set up first, checked at the end (part 6).
# ========================================================================
my $keep = NotifyTest::node('keep');
setup_provider($keep);
$keep->safe_psql('postgres', q{ALTER SYSTEM SET notify.retention = '1h'; SELECT pg_reload_conf();});
is($keep->safe_psql('postgres', 'SHOW notify.retention'), '1h', 'keep: notify.retention is 1h');
recipient($keep, "k$_", "/keep/k$_/hook") for 1 .. 7;
# k2, k4 and k7 are answered 503 once: sent on the second attempt, with an attempts row
add_fault({ match => "/keep/k$_/", status => 503, count => 1 }) for (2, 4, 7);
send_n($keep, "k$_", 1) for (1, 2, 3, 4, 5, 7);
send_n($keep, 'k6', 1, send_at => "now() + interval '1 day'");    # stays in the outbox
ok(NotifyTest::wait_until(sub {
	$keep->safe_psql('postgres', q{SELECT count(*) FROM notify.deliveries WHERE status = 'sent'}) eq '6' }),
	'keep: six deliveries sent');
is($keep->safe_psql('postgres', q{
	SELECT string_agg(n.recipient, ',' ORDER BY n.recipient) FROM notify.attempts a
	  JOIN notify.deliveries d ON d.id = a.outbox_id JOIN notify.notifications n ON n.id = d.notification_id}),
	'k2,k4,k7', 'keep: k2, k4 and k7 each kept one retried attempt');

# Backdate, in one transaction (a purge sees all of it or none):
#   k1, k2: notification, delivery and (k2) attempt 2 hours old -> purged
#   k7: only its attempt is old                     -> attempt purged, rest kept
#   k5: only the notification is old, its delivery is recent -> kept
#   k6: old notification still in the outbox       -> kept
#   k3, k4: recent                                  -> kept
my $keep_log = -s $keep->logfile;
$keep->safe_psql('postgres', q{
BEGIN;
UPDATE notify.notifications SET created_at = created_at - interval '2 hours'
 WHERE recipient IN ('k1', 'k2', 'k5', 'k6');
UPDATE notify.deliveries d
   SET created_at = d.created_at - interval '2 hours', sent_at = d.sent_at - interval '2 hours',
	   finished_at = d.finished_at - interval '2 hours'
  FROM notify.notifications n WHERE n.id = d.notification_id AND n.recipient IN ('k1', 'k2');
UPDATE notify.attempts a SET at = a.at - interval '2 hours'
  FROM notify.deliveries d, notify.notifications n
 WHERE d.id = a.outbox_id AND n.id = d.notification_id AND n.recipient IN ('k2', 'k7');
COMMIT;
});
my $keep_backdated_at = time;

# ========================================================================
# The operations cluster.
# ========================================================================
my $node = NotifyTest::node('ops', <<'EOF');
notify.max_attempts = 2
notify.batch_size = 4
notify.backoff_max = '10min'
notify.request_timeout = '60s'
notify.lease = '2min'
EOF
sub sql { return $node->safe_psql('postgres', shift); }
setup_provider($node);

ok(NotifyTest::wait_until(sub {
	sql(q{SELECT count(*) FROM notify_workers() WHERE provider = 'webhook' AND state = 'idle' AND pid IS NOT NULL}) eq '1' }),
	'ops: the webhook worker runs and is idle');
my $launcher_pid = sql(q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'notify launcher'});
my $alerts = BgPsql->new($node);
$alerts->run('LISTEN notify_alerts');

# Worker counters from notify_workers(), for deltas.
sub wstats
{
	my %h;
	@h{qw(pid state batches delivered failed retried)} = split /\|/,
	  sql(q{SELECT pid, state, batches, delivered, failed, retried FROM notify_workers() WHERE provider = 'webhook'});
	return \%h;
}

sub delta
{
	my ($a0, $a1) = @_;
	return join ',', map { "$_=" . ($a1->{$_} - $a0->{$_}) } qw(batches delivered failed retried);
}

# Wait for an alert on notify_alerts of this kind for a provider (default
# webhook), with this count if given.
sub wait_alert
{
	my ($kind, %want) = @_;
	my $found;
	NotifyTest::wait_until(
		sub {
			($found) = grep {
				my $j = $_->{json};
				($j->{alert} // '') eq $kind
				  && ($j->{provider} // '') eq ($want{provider} // 'webhook')
				  && (!defined $want{count} || ($j->{count} // -1) == $want{count})
			} $alerts->poll;
			return $found;
		},
		$want{timeout} // 60);
	return $found;
}

my $w0 = wstats();
is(delta({ map { $_ => 0 } qw(batches delivered failed retried) }, $w0),
	'batches=0,delivered=0,failed=0,retried=0', 'ops: a new worker starts with zero counters');
my $worker_pid = $w0->{pid};

# ------------------------------------------------------------------------
# 2. delivery_stats after N deliveries (the cluster has no other history).
# ------------------------------------------------------------------------
{
	my $n = 20;
	recipient($node, 'p2', '/p2/hook');
	recipient($node, 'p2bad', '/p2/bad');
	add_fault({ match => '/p2/bad', status => 422, body => { error => 'no such hook' } });
	send_n($node, 'p2', $n);
	ok(wait_outcomes($node, 'p2', "sent=$n"), "p2: $n deliveries sent");
	send_n($node, 'p2bad', 1);
	ok(wait_outcomes($node, 'p2bad', 'failed=1'), 'p2: one delivery refused (422) and failed');

	is(sql(q{SELECT provider, sent, failed, dead, expired, success_rate FROM notify.delivery_stats}),
		"webhook|$n|1|0|0|95.24", "p2: delivery_stats: sent $n, failed 1, success rate 20/21 = 95.24 %");
	is(sql(q{SELECT p50_ms IS NOT NULL AND p95_ms IS NOT NULL AND p99_ms IS NOT NULL,
				p50_ms > 0, p50_ms <= p95_ms AND p95_ms <= p99_ms FROM notify.delivery_stats}),
		't|t|t', 'p2: latency percentiles present, positive and ordered p50 <= p95 <= p99');
	is(sql(q{
		SELECT s.p50_ms >= min(l.ms) AND s.p99_ms <= max(l.ms)
		  FROM notify.delivery_stats s,
			   (SELECT 1000 * extract(epoch FROM d.sent_at - d.created_at) AS ms
				  FROM notify.deliveries d WHERE d.status = 'sent') l
		 GROUP BY s.p50_ms, s.p99_ms}),
		't', 'p2: percentiles lie within the measured commit-to-sent latencies');
	is(sql(q{SELECT sent FROM notify_delivery_stats(interval '1 hour') WHERE provider = 'webhook'}),
		$n, 'p2: notify_delivery_stats(1 hour) agrees');

	# 20 rows, one commit, batch_size 4: five full batches; the 422 its own batch
	my $w = wstats();
	is(delta($w0, $w), "batches=6,delivered=$n,failed=1,retried=0",
		'p2: worker counters grew by exactly what was delivered: 6 batches, 20 delivered, 1 failed');
	is($w->{pid}, $worker_pid, 'p2: same worker throughout');
}

# ------------------------------------------------------------------------
# 4. Requeue of dead deliveries (and 7a: the dead alert they raise).
# ------------------------------------------------------------------------
{
	recipient($node, 'p4', '/p4/hook');
	# every attempt fails 500 with Retry-After 1: the three rows retry in
	# step and go dead together in one batch, after max_attempts (2)
	my $fault = add_fault({ match => '/p4/', status => 500, headers => { 'retry-after' => '1' } });
	my $w1 = wstats();
	my $log = -s $node->logfile;
	my $seq = $sim->seq;
	send_n($node, 'p4', 3);
	ok(wait_outcomes($node, 'p4', 'dead=3'), 'p4: three deliveries dead');
	is(sql(q{SELECT DISTINCT d.last_error FROM notify.deliveries d JOIN notify.notifications n
			  ON n.id = d.notification_id WHERE n.recipient = 'p4'}),
		'gave up after 2 attempts: webhook 500', 'p4: dead after notify.max_attempts (2)');
	is(delta($w1, wstats()), 'batches=2,delivered=0,failed=3,retried=3',
		'p4: worker counters: 2 batches, 3 retried, 3 failed');
	is(sql(q{SELECT dead FROM notify.queue_stats WHERE provider = 'webhook'}), '3', 'p4: queue_stats shows 3 dead');

	# 7a. the launcher's alert: a WARNING in the log and a NOTIFY with provider and count
	$node->wait_for_log(qr/WARNING:  notify: 3 deliveries of provider "webhook" went dead/, $log);
	my $tail = slurp_file($node->logfile, $log);
	like($tail, qr/went dead\n.*DETAIL:  Last reason: gave up after 2 attempts: webhook 500/,
		'p4/alert: the WARNING gives the last reason');
	like($tail, qr/HINT:  .*notify_requeue\('webhook'\)/, 'p4/alert: and hints at notify_requeue');
	my $alert = wait_alert('dead', count => 3);
	ok($alert, 'p4/alert: NOTIFY notify_alerts arrived');
	is_deeply($alert && $alert->{json}, { alert => 'dead', provider => 'webhook', count => 3 },
		'p4/alert: payload is JSON naming the provider and the count');
	is($alert && $alert->{pid}, $launcher_pid, 'p4/alert: sent by the launcher');

	# the provider works again: requeue
	drop_fault($fault);
	$w1 = wstats();
	is(sql(q{SELECT notify_requeue('webhook')}), '3', 'p4: notify_requeue(provider) requeued 3');
	ok(wait_outcomes($node, 'p4', 'sent=3'), 'p4: requeued deliveries sent');
	is(delta($w1, wstats()), 'batches=1,delivered=3,failed=0,retried=0', 'p4: in one batch');
	is(sql(q{SELECT dead FROM notify.queue_stats WHERE provider = 'webhook'}), '0', 'p4: nothing dead any more');

	# the simulator saw each delivery three times: 500, 500, 200 (same X-Notify-Id)
	ok(sim_settled(), 'p4: simulator settled');
	my %per_id;
	push @{ $per_id{ $_->{headers}{'x-notify-id'} } }, $_->{status} for sim_got('/p4/', $seq);
	is(scalar(keys %per_id), 3, 'p4: three distinct deliveries reached the simulator');
	is(scalar(grep { join(',', @{ $per_id{$_} }) eq '500,500,200' } keys %per_id), 3,
		'p4: each was answered 500, 500, then 200 after the requeue');

	# history keeps the earlier attempts and shows the final sent
	is(sql(q{
		SELECT string_agg(h, ' / ') FROM (
			SELECT DISTINCT string_agg(attempt || ':' || outcome || ':' || coalesce(provider_status::text, '-'),
									   ',' ORDER BY attempt) AS h
			  FROM notify_history('p4') GROUP BY delivery_id) s}),
		'1:retry:500,2:dead:500,3:sent:200',
		'p4: notify_history shows attempt 1 retried, 2 dead, 3 sent, for every delivery');
	is(sql(q{SELECT DISTINCT error FROM notify_history('p4') WHERE outcome = 'dead'}),
		'gave up after 2 attempts: webhook 500', 'p4: the dead attempt keeps its reason');
}

# ------------------------------------------------------------------------
# 1. queue_stats and notify_workers() against a live workload
#    (and 7b: the lag alert, while the provider stalls).
# ------------------------------------------------------------------------
{
	recipient($node, 'p1dead', '/p1/dead');
	recipient($node, 'p1retry', '/p1/retry');
	recipient($node, 'p1ok', '/p1/ok');
	recipient($node, 'p1stall', '/p1/stall');
	add_fault({ match => '/p1/dead', status => 500, headers => { 'retry-after' => '1' } });
	add_fault({ match => '/p1/retry', status => 503, headers => { 'retry-after' => '600' } });

	my $log = -s $node->logfile;
	my $s0 = wstats();
	send_n($node, 'p1dead', 2);
	ok(wait_outcomes($node, 'p1dead', 'dead=2'), 'p1: two deliveries dead');
	my $s1 = wstats();
	is(delta($s0, $s1), 'batches=2,delivered=0,failed=2,retried=2', 'p1: counters after the dead ones');

	my $retry_ids = send_n($node, 'p1retry', 2);
	ok(NotifyTest::wait_until(sub {
		sql(q{SELECT count(*) FROM notify.outbox o JOIN notify.notifications n ON n.id = o.notification_id
			   WHERE n.recipient = 'p1retry' AND o.status = 'retry' AND o.next_attempt_at > now() + interval '5 minutes'}) eq '2' }),
		'p1: two deliveries wait to retry (Retry-After 600)');
	my $s2 = wstats();
	is(delta($s1, $s2), 'batches=1,delivered=0,failed=0,retried=2', 'p1: counters after the retried ones');

	send_n($node, 'p1ok', 5);
	ok(wait_outcomes($node, 'p1ok', 'sent=5'), 'p1: five delivered');
	my $s3 = wstats();
	is(delta($s2, $s3), 'batches=2,delivered=5,failed=0,retried=0',
		'p1: counters grew by exactly 5 delivered, in 2 batches (4 + 1)');
	my $scheduled_id = send_n($node, 'p1ok', 1, send_at => "now() + interval '1 hour'");

	# the stall: the first 4 requests to /p1/stall are answered 30 s late, so
	# one batch (4) stays in flight and 3 rows wait behind it; the lag alert
	# is set to 2 s for the duration
	sql(q{ALTER SYSTEM SET notify.alert_lag = '2s'; SELECT pg_reload_conf();});
	add_fault({ match => '/p1/stall', delay_ms => 30000, count => 4 });
	my $req0 = sim_requests();
	send_n($node, 'p1stall', 7);
	ok(NotifyTest::wait_until(sub {
		sim_requests() - $req0 == 4
		  && sql(q{SELECT in_flight FROM notify.queue_stats WHERE provider = 'webhook'}) eq '4' }),
		'p1: one batch of 4 is in flight at the stalled provider');

	# one snapshot for all the figures
	my $snap = sql(q{
		SELECT count(*) OVER (), ready, scheduled, in_flight, retrying, dead, lag > interval '0',
			   delivered_1h, failed_1h
		  FROM notify.queue_stats WHERE provider = 'webhook'});
	is($snap, '1|3|1|4|2|2|t|28|3',
		'p1: queue_stats (one row, priority 0): ready 3, scheduled 1, in flight 4, retrying 2, dead 2, '
		  . 'lagging, delivered_1h 28, failed_1h 3');
	is(sql(q{
		SELECT w.database, w.provider, w.worker, w.state, w.pid = a.pid, a.query, w.last_batch_at IS NOT NULL,
			   w.last_error IS NULL
		  FROM notify_workers() w JOIN pg_stat_activity a ON a.pid = w.pid
		 WHERE a.backend_type = 'notify worker' AND a.application_name = 'notify worker webhook'}),
		'postgres|webhook|0|sending|t|delivering 4 via webhook|t|t',
		'p1: notify_workers() lists the worker: pid as in pg_stat_activity, provider, state sending');
	is(delta($s3, wstats()), 'batches=0,delivered=0,failed=0,retried=0',
		'p1: the batch in flight is not counted yet');
	is(sql(q{SELECT count(*) FROM notify_workers()}), '1', 'p1: one worker in the cluster');

	# 7b/7a. alerts while the provider stalls: lag (3 rows ready for > 2 s)
	# and the two dead deliveries from above
	my $lag = wait_alert('lag');
	ok($lag, 'p1/alert: lag NOTIFY arrived while the provider stalls');
	cmp_ok($lag && $lag->{json}{seconds}, '>=', 2, 'p1/alert: lag payload names the provider and seconds >= 2');
	is(join(',', sort keys %{ $lag ? $lag->{json} : {} }), 'alert,provider,seconds', 'p1/alert: lag payload fields');
	$node->wait_for_log(qr/WARNING:  notify: provider "webhook" is \d+ s behind/, $log);
	pass('p1/alert: lag WARNING in the server log');
	my $dead = wait_alert('dead', count => 2);
	is_deeply($dead && $dead->{json}, { alert => 'dead', provider => 'webhook', count => 2 },
		'p1/alert: the two dead deliveries raised their own alert');
	$node->wait_for_log(qr/WARNING:  notify: 2 deliveries of provider "webhook" went dead/, $log);
	pass('p1/alert: dead WARNING in the server log');

	# 7b'. a second provider that falls behind after the first one's alert
	# is alerted too (the repeat interval is per provider): provider hook2,
	# whose first 4 requests stall 25 s, with 6 rows (4 in flight, 2 ready)
	sql(qq{SELECT notify_set_provider('hook2', 'webhook',
		jsonb_build_object('endpoint', 'http://127.0.0.1:$h2c/p1/hook2', 'h2c', true))});
	ok(NotifyTest::wait_until(sub {
		sql(q{SELECT state FROM notify_workers() WHERE provider = 'hook2'}) eq 'idle' }),
		'p1/alert: provider hook2 has its worker');
	add_fault({ match => '/p1/hook2', delay_ms => 25000, count => 4 });
	sql(qq{INSERT INTO notify.outbox (notification_id, recipient_id, channel, provider, destination, priority, next_attempt_at)
		   SELECT n.id, n.recipient_id, 'webhook', 'hook2', 'http://127.0.0.1:$h2c/p1/hook2', 0, now()
			 FROM notify.notifications n WHERE n.recipient = 'p2' ORDER BY n.id LIMIT 6});
	my $lag2 = wait_alert('lag', provider => 'hook2');
	ok($lag2, 'p1/alert: hook2 falling behind raised its own lag alert');
	cmp_ok($lag2 && $lag2->{json}{seconds}, '>=', 2, 'p1/alert: hook2 lag seconds >= 2');
	like(slurp_file($node->logfile, $log), qr/WARNING:  notify: provider "hook2" is \d+ s behind/,
		'p1/alert: hook2 lag WARNING in the server log');
	is(scalar(grep { ($_->{json}{alert} // '') eq 'lag' && $_->{json}{provider} eq 'webhook' } $alerts->poll), 1,
		'p1/alert: the lag alert of webhook, still behind, is not repeated within 5 minutes');
	sql(q{ALTER SYSTEM RESET notify.alert_lag; SELECT pg_reload_conf();});
	ok(NotifyTest::wait_until(sub {
		sql(q{SELECT count(*) FROM notify.deliveries WHERE provider = 'hook2' AND status = 'sent'}) eq '6' }),
		'p1: hook2 delivered its rows once its stall ended');
	sql(qq{SELECT notify_set_provider('hook2', 'webhook',
		jsonb_build_object('endpoint', 'http://127.0.0.1:$h2c/p1/hook2', 'h2c', true), false)});
	ok(NotifyTest::wait_until(sub { sql(q{SELECT count(*) FROM notify_workers() WHERE provider = 'hook2'}) eq '0' }),
		'p1: hook2 disabled, its worker gone');

	# the stall ends: all seven delivered, in two batches (4 + 3)
	ok(wait_outcomes($node, 'p1stall', 'sent=7'), 'p1: the stalled batch and the rows behind it delivered');
	is(delta($s3, wstats()), 'batches=2,delivered=7,failed=0,retried=0', 'p1: counters: 7 delivered in 2 batches');

	# clean up what is left, with notify_cancel: retry rows and the scheduled one
	for my $id (split /,/, $retry_ids)
	{
		is(sql("SELECT notify_cancel($id)"), '1', "p1: notify_cancel($id) cancels a delivery waiting to retry");
	}
	is(sql("SELECT notify_cancel($scheduled_id)"), '1', 'p1: notify_cancel of the scheduled one');
	is(sql(q{SELECT ready, scheduled, in_flight, retrying, dead FROM notify.queue_stats WHERE provider = 'webhook'}),
		'0|0|0|0|2', 'p1: queue_stats: nothing waiting, 2 dead');
	is(outcomes($node, 'p1retry'), 'cancelled=2', 'p1: the retrying ones are cancelled');
	ok(sim_settled(), 'p1: simulator settled');
	$sim->clear_faults;
}

# ------------------------------------------------------------------------
# 3. Pause while a backlog is delivered; resume delivers the rest.
# ------------------------------------------------------------------------
{
	my $n = 40;
	recipient($node, 'p3', '/p3/hook');
	add_fault({ match => '/p3/', delay_ms => 300 });    # every request: 300 ms
	my $seq = $sim->seq;
	my $req0 = sim_requests();
	send_n($node, 'p3', $n);
	ok(NotifyTest::wait_until(sub { sim_requests() - $req0 >= 8 }, 60), 'p3: the backlog is being delivered');
	sql(q{SELECT notify_pause('webhook')});
	my $at_pause = sim_requests() - $req0;
	ok(NotifyTest::wait_until(sub {
		sql(q{SELECT state FROM notify_workers() WHERE provider = 'webhook'}) eq 'paused' }),
		'p3: notify_workers() shows the worker paused');
	my $reached = sim_requests() - $req0;
	cmp_ok($reached - $at_pause, '<=', 4, 'p3: after the pause at most the batch in flight (4) reached the provider');
	cmp_ok($reached, '<', $n, "p3: the pause came mid-backlog ($reached of $n sent)");

	# let the paused worker look at its provider five more times
	my $seen = sql(q{SELECT query_start FROM pg_stat_activity WHERE backend_type = 'notify worker'});
	for my $i (1 .. 5)
	{
		NotifyTest::wait_until(sub {
			my $q = sql(q{SELECT query_start FROM pg_stat_activity WHERE backend_type = 'notify worker'});
			return 0 if sql("SELECT '$q'::timestamptz <= '$seen'::timestamptz") eq 't';
			$seen = $q;
			return 1;
		});
	}
	is(sim_requests() - $req0, $reached, 'p3: while paused (five worker rounds) no new request reached the provider');
	ok(sim_settled(), 'p3: simulator answered every request it got');
	is(sql(q{SELECT state FROM notify_workers() WHERE provider = 'webhook'}), 'paused', 'p3: still paused');
	is(outcomes($node, 'p3'), "sent=$reached", 'p3: everything that reached the provider was recorded sent');
	is(sql(q{SELECT ready, in_flight FROM notify.queue_stats WHERE provider = 'webhook'}),
		($n - $reached) . '|0', 'p3: the rest waits ready in the outbox, nothing in flight');

	sql(q{SELECT notify_resume('webhook')});
	ok(wait_outcomes($node, 'p3', "sent=$n"), "p3: after notify_resume all $n delivered");
	ok(NotifyTest::wait_until(sub {
		sql(q{SELECT state FROM notify_workers() WHERE provider = 'webhook'}) eq 'idle' }),
		'p3: the worker is idle again');
	ok(sim_settled(), 'p3: simulator settled');
	my @got = sim_got('/p3/', $seq);
	my %ids = map { $_->{headers}{'x-notify-id'} => 1 } @got;
	is(scalar(@got) . '/' . scalar(keys %ids), "$n/$n", "p3: the provider got $n requests, each delivery once");
	$sim->clear_faults;
}

# ------------------------------------------------------------------------
# 5. A cancelled scheduled notification never reaches the provider.
# ------------------------------------------------------------------------
{
	recipient($node, 'p5', '/p5/hook');
	my $seq = $sim->seq;
	my $cid = sql(q{SELECT notify_send('p5', 'ping', '{"n": "cancel-me"}', send_at => now() + interval '2 seconds')});
	is(sql("SELECT status FROM notify_status($cid)"), 'scheduled', 'p5: scheduled');
	is(sql("SELECT notify_cancel($cid)"), '1', 'p5: notify_cancel cancels its one delivery');
	is(sql("SELECT status, last_error FROM notify_status($cid)"), 'cancelled|cancelled by ' . sql('SELECT session_user'),
		'p5: notify_status says cancelled, and by whom');
	# a marker due after the cancelled one's send_at: once it is delivered,
	# the cancelled one would have been too
	my $mid = sql(q{SELECT notify_send('p5', 'ping', '{"n": "marker"}', send_at => now() + interval '3 seconds')});
	ok(NotifyTest::wait_until(sub { sql("SELECT status FROM notify_status($mid)") eq 'sent' }),
		'p5: the later marker was delivered');
	ok(sim_settled(), 'p5: simulator settled');
	my @bodies = map { $_->{body} } sim_got('/p5/', $seq);
	is(scalar(grep { /marker/ } @bodies), 1, 'p5: the marker reached the provider');
	is(scalar(grep { /cancel-me/ } @bodies), 0, 'p5: the cancelled notification never did');
	is(sql("SELECT count(*) FROM notify.outbox WHERE notification_id = $cid"), '0', 'p5: no outbox row left');
	is(sql("SELECT notify_cancel($mid)"), '0', 'p5: cancelling a sent notification cancels nothing');
}

# ------------------------------------------------------------------------
# 8. A notify_sender login sends, but reads no secrets and no history.
# ------------------------------------------------------------------------
{
	sql(q{CREATE ROLE app_sender LOGIN IN ROLE notify_sender;
		  CREATE ROLE app_admin LOGIN IN ROLE notify_admin;});
	my $as = sub {
		my ($user, $q) = @_;
		my ($rc, $out, $err) = $node->psql('postgres', $q, extra_params => [ '-U', $user ]);
		return ($rc, $out, $err);
	};

	my ($rc, $out, $err) = $as->('app_sender', qq{
		SELECT notify_upsert_recipient('p8', attributes => '{"webhook_url": "http://127.0.0.1:$h2c/p8/hook"}') > 0;
		SELECT notify_send('p8', 'ping', '{"n": "from-sender"}');});
	is($rc, 0, 'p8: the sender upserts a recipient and sends');
	my ($sid) = $out =~ /(\d+)\s*$/;
	ok(NotifyTest::wait_until(sub { sql("SELECT status FROM notify_status($sid)") eq 'sent' }),
		"p8: and its notification $sid is delivered");

	for my $t (
		[ 'SELECT config FROM notify.providers', qr/permission denied for schema notify/, 'provider config (secrets)' ],
		[ 'SELECT config FROM notify.provider_settings', qr/permission denied for schema notify/, 'provider_settings' ],
		[ q{SELECT * FROM notify_history('p4')}, qr/permission denied for function notify_history/, "another recipient's history" ],
		[ q{SELECT * FROM notify_history('p8')}, qr/permission denied for function notify_history/, 'history at all' ],
		[ "SELECT * FROM notify_status(1)", qr/permission denied for function notify_status/, 'delivery status' ],
		[ 'SELECT * FROM notify.deliveries', qr/permission denied for schema notify/, 'the deliveries table' ],
		[ 'SELECT * FROM notify_workers()', qr/permission denied for function notify_workers/, 'notify_workers()' ],
		[ q{SELECT notify_set_provider('webhook', 'webhook', '{"endpoint": "http://evil.example.com"}')},
		  qr/permission denied for function notify_set_provider/, 'provider changes' ],
		[ q{SELECT notify_pause('webhook')}, qr/permission denied for function notify_pause/, 'pausing' ])
	{
		my ($q, $re, $what) = @$t;
		($rc, $out, $err) = $as->('app_sender', $q);
		ok($rc != 0 && $err =~ $re, "p8: the sender cannot read/do: $what")
		  or diag("rc=$rc out=$out err=$err");
		unlike($out . $err, qr/\Q$secret\E/, "p8: no secret leaked ($what)");
	}

	# an admin operates and reads history, still with the secret masked
	($rc, $out, $err) = $as->('app_admin', q{SELECT config->>'secret' FROM notify.provider_settings WHERE name = 'webhook'});
	is("$rc|$out", '0|********', 'p8: an admin sees the secret masked');
	($rc, $out, $err) = $as->('app_admin', q{SELECT config FROM notify.providers});
	like($err, qr/permission denied for table providers/, 'p8: an admin cannot read the raw config either');
	($rc, $out, $err) = $as->('app_admin', q{SELECT outcome FROM notify_history('p8')});
	is("$rc|$out", '0|sent', "p8: an admin reads the sender's history");
}

# ------------------------------------------------------------------------
# 7c. A dead delivery whose recording transaction is still open while an
#     alert check runs is alerted by a later check, not skipped: the
#     worker's transaction (finished_at = its start) waits for a lock on
#     the outbox across a check, then commits.
# ------------------------------------------------------------------------
{
	recipient($node, 'p7', '/p7/hook');
	# attempt 1: 500 at once (retry in 1 s); attempt 2: 500 after 3 s -> dead
	add_fault({ match => '/p7/', status => 500, headers => { 'retry-after' => '1' }, count => 1 });
	add_fault({ match => '/p7/', status => 500, delay_ms => 3000, count => 1 });
	my $req0 = sim_requests();
	my $log = -s $node->logfile;
	send_n($node, 'p7', 1);
	ok(NotifyTest::wait_until(sub { sim_requests() - $req0 == 2 }), 'p7: the last attempt is at the provider');
	my $locker = BgPsql->new($node);
	$locker->run('BEGIN; LOCK TABLE notify.outbox IN SHARE MODE');
	ok(NotifyTest::wait_until(sub {
		sql(q{SELECT wait_event_type FROM pg_stat_activity WHERE backend_type = 'notify worker'}) eq 'Lock' }),
		'p7: the worker records the dead delivery in a transaction that waits for a lock');
	my $waiting_since = sql('SELECT now()');
	ok(NotifyTest::wait_until(sub {
		sql(qq{SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'notify launcher'
			   AND query = 'checking notify alerts' AND state = 'idle' AND query_start > '$waiting_since'}) eq '1' }, 60),
		'p7: an alert check ran meanwhile');
	$locker->run('COMMIT');
	$locker->quit;
	ok(wait_outcomes($node, 'p7', 'dead=1'), 'p7: the delivery is dead');
	my $alert = wait_alert('dead', count => 1);
	is_deeply($alert && $alert->{json}, { alert => 'dead', provider => 'webhook', count => 1 },
		'p7: its dead alert came with a later check');
	like(slurp_file($node->logfile, $log), qr/WARNING:  notify: 1 deliveries of provider "webhook" went dead/,
		'p7: and the WARNING');
	$sim->clear_faults;
}

$alerts->quit;
unlike(slurp_file($node->logfile), qr/terminated by signal|exited with exit code [1-9]|maintenance failed/,
	'ops: no worker or launcher crashed, maintenance never failed');
is(wstats()->{pid}, $worker_pid, 'ops: one worker served the whole test');

# ------------------------------------------------------------------------
# 6. Retention: the launcher's purge (every 60 s) removed exactly the old rows.
# ------------------------------------------------------------------------
{
	my $purged;
	NotifyTest::wait_until(
		sub {
			($purged) = slurp_file($keep->logfile, $keep_log) =~
			  /notify purged (\d+ deliveries, \d+ attempts and \d+ notifications) older than notify.retention/;
			return $purged;
		},
		150 - (time - $keep_backdated_at));
	is($purged, '2 deliveries, 2 attempts and 2 notifications',
		'keep: the launcher purged 2 deliveries, 2 attempts and 2 notifications');
	is($keep->safe_psql('postgres', q{SELECT string_agg(recipient, ',' ORDER BY recipient) FROM notify.notifications}),
		'k3,k4,k5,k6,k7', 'keep: notifications left: recent ones, k5 (recent delivery) and k6 (still in the outbox)');
	is($keep->safe_psql('postgres', q{
		SELECT string_agg(n.recipient, ',' ORDER BY n.recipient) FROM notify.deliveries d
		  JOIN notify.notifications n ON n.id = d.notification_id}),
		'k3,k4,k5,k7', 'keep: deliveries left: the recent ones');
	is($keep->safe_psql('postgres', q{SELECT count(*) FROM notify.deliveries}), '4', 'keep: no orphaned delivery either');
	is($keep->safe_psql('postgres', q{
		SELECT string_agg(n.recipient, ',') FROM notify.attempts a
		  JOIN notify.deliveries d ON d.id = a.outbox_id JOIN notify.notifications n ON n.id = d.notification_id}),
		'k4', 'keep: attempts left: only the recent one (k7\'s backdated attempt went)');
	is($keep->safe_psql('postgres', q{SELECT count(*) FROM notify.attempts}), '1', 'keep: one attempt left in all');
	is($keep->safe_psql('postgres', q{
		SELECT n.recipient, o.status FROM notify.outbox o JOIN notify.notifications n ON n.id = o.notification_id}),
		'k6|queued', 'keep: the scheduled delivery is untouched');
}

$node->stop;
$keep->stop;
done_testing();
