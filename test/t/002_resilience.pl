# 002_resilience.pl -- notify survives what happens to servers: a worker
# killed mid-batch, two workers on one queue, a stalled provider, a standby
# and its promotion, DROP EXTENSION under running workers, a fast restart
# with a batch in flight, an ERROR while recording, and configuration
# reloads.
#
# Every assertion is about behaviour (rows, what the simulators received,
# which processes run, what the server logged); the test waits for
# conditions and never sleeps for a time.  Every subtest has its own
# cluster and its own webhook path (/sN/...), so what the shared simulator
# logs can be told apart even though outbox ids restart at 1 on each node.
#
# Subtests are numbered as in the plan, but the stalled-provider one (3)
# runs last: its requests are held by the simulator for longer than the
# whole test, and would otherwise never let the simulator "settle" (see
# sim_settled) for the subtests after it.
#
# Where a subtest delays answers, notify.max_host_connections is raised to
# the batch size: on libcurl < 8 every h2c transfer gets a connection of
# its own (see engine.c), and transfers queued behind
# max_host_connections spend their wait inside notify.request_timeout, so
# a delayed batch would otherwise time out its tail and retry it.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use NotifyTest;

my $sim = NotifyTest::Sim->start;
my $h2c = $sim->port('webhook_h2c');

# ---------------------------------------------------------------- helpers

# Webhook provider on the h2c listener, template "ping", and recipient "r"
# whose deliveries go to http://.../$tag/hook (faults target them by match).
sub setup_webhook
{
	my ($node, $tag) = @_;
	$node->safe_psql('postgres', <<"EOF");
SELECT notify_put_template('ping', 'webhook', '{"body": {"n": "{{n}}"}}');
SELECT notify_upsert_recipient('r', attributes => jsonb_build_object('webhook_url', 'http://127.0.0.1:$h2c/$tag/hook'));
SELECT notify_set_provider('webhook', 'webhook',
	jsonb_build_object('endpoint', 'http://127.0.0.1:$h2c/hook', 'h2c', true));
EOF
}

# Queue $n webhook notifications in one transaction (one commit, one wake-up).
sub send_webhooks
{
	my ($node, $n) = @_;
	$node->safe_psql('postgres',
		"SELECT count(notify_send('r', 'ping', jsonb_build_object('n', g), ARRAY['webhook'])) "
		  . "FROM generate_series(1, $n) g");
}

sub sql { my ($node, $sql) = @_; return $node->safe_psql('postgres', $sql); }

# pids of the running delivery workers of a provider (sorted).
sub worker_pids
{
	my ($node, $provider) = @_;
	my $out = sql($node,
		"SELECT pid FROM pg_stat_activity WHERE backend_type = 'notify worker' "
		  . "AND application_name = 'notify worker $provider' ORDER BY pid");
	return grep { length } split /\n/, $out;
}

sub launcher_pid
{
	my ($node) = @_;
	return sql($node, "SELECT pid FROM pg_stat_activity WHERE backend_type = 'notify launcher'");
}

# Wait until the provider has exactly $n workers; true on success.
sub wait_workers
{
	my ($node, $provider, $n) = @_;
	return NotifyTest::wait_until(sub { scalar(worker_pids($node, $provider)) == $n });
}

# X-Notify-Id => times the webhook simulator answered it, for paths under /$tag/.
sub ids_seen
{
	my ($tag) = @_;
	my %seen;
	for my $e ($sim->log('webhook'))
	{
		next unless index($e->{path}, "/$tag/") == 0;
		$seen{ $e->{headers}{'x-notify-id'} }++;
	}
	return \%seen;
}

# Wait until the webhook simulator has answered every request it received
# (delayed answers included), so that nothing of one subtest lands in the
# next one's counters.
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

# The server log from byte $offset on.
sub log_since
{
	my ($node, $offset) = @_;
	return slurp_file($node->logfile, $offset);
}

# Lines of a log excerpt that say a process crashed or failed: a crash
# restart, a notify process exiting with an error, any ERROR/FATAL/PANIC
# (but autovacuum's: a shutdown or a DROP may cancel it, as it should).
sub alarming
{
	my ($log) = @_;
	return grep {
		!/autovacuum/ &&
		/was\ terminated\ by\ signal
		 | terminating\ any\ other\ active\ server\ processes
		 | all\ server\ processes\ terminated
		 | background\ worker\ "notify[^"]*"\ \(PID\ \d+\)\ exited\ with\ exit\ code\ [1-9]
		 | \b(?:ERROR|FATAL|PANIC):/x
	} split /\n/, $log;
}

# ------------------------------------------------------------------------
# 1. SIGKILL of a worker in the middle of a batch loses nothing.
# ------------------------------------------------------------------------
{
	my $batch = 20;
	my $n = 60;
	# the test clusters turn restart_after_crash off; a crash restart is
	# what this subtest is about
	my $node = NotifyTest::node('kill9', <<"EOF");
restart_after_crash = on
notify.batch_size = $batch
notify.max_host_connections = $batch
notify.request_timeout = '30s'
notify.lease = '60s'
EOF
	$sim->reset;
	setup_webhook($node, 's1');
	ok(wait_workers($node, 'webhook', 1), 's1: one webhook worker runs');

	# every request to /s1/ is answered 3 s late: a batch stays in flight
	my ($fault) = @{ $sim->fault({ sim => 'webhook', match => '/s1/', delay_ms => 3000 })->{ids} };
	send_webhooks($node, $n);
	ok( NotifyTest::wait_until(
			sub {
				sql($node,
					"SELECT count(*) > 0 FROM notify.outbox WHERE status = 'inflight'") eq 't'
				  && sql($node,
					"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'notify worker' "
					  . "AND query LIKE 'delivering %'") eq '1';
			}),
		's1: a batch is in flight (claimed, requests outstanding)');
	my $inflight = sql($node, "SELECT count(*) FROM notify.outbox WHERE status = 'inflight'");
	cmp_ok($inflight, '<=', $batch, 's1: at most one batch is in flight');

	my ($pid) = worker_pids($node, 'webhook');
	my $off = -s $node->logfile;
	ok(kill('KILL', $pid), "s1: SIGKILL worker $pid");
	$node->wait_for_log(qr/all server processes terminated; reinitializing/, $off);
	$node->poll_query_until('postgres', 'SELECT true')
	  or die 's1: server did not come back after the crash';
	pass('s1: postmaster restarted after the crash');
	$sim->control('DELETE', "/faults/$fault");

	ok(NotifyTest::drain($node), 's1: outbox drained after the restart');
	is(sql($node, 'SELECT count(*) FROM notify.outbox'), '0', 's1: nothing left in the outbox');
	is(sql($node, "SELECT count(*), count(*) FILTER (WHERE status = 'sent') FROM notify.deliveries"),
		"$n|$n", "s1: exactly $n deliveries, all sent");
	like(log_since($node, $off), qr/notify returned \d+ in-flight deliveries left by stopped workers to the queue/,
		's1: the launcher returned the orphaned in-flight rows at once');

	ok(sim_settled(), 's1: simulator answered every request, delayed ones included');
	my $seen = ids_seen('s1');
	my @ids = split /\n/, sql($node, 'SELECT id FROM notify.deliveries ORDER BY id');
	is(scalar(grep { !$seen->{$_} } @ids), 0, 's1: the simulator saw every X-Notify-Id');
	my $total = 0;
	$total += $_ for values %$seen;
	my $dups = $total - scalar(keys %$seen);
	cmp_ok($dups, '<=', $batch, "s1: duplicates ($dups) are at most one batch ($batch)");
	cmp_ok($sim->stats->{sims}{webhook}{duplicate_ids}, '<=', $batch,
		's1: simulator duplicate_ids at most one batch');
	$node->stop;
}

# ------------------------------------------------------------------------
# 2. Two workers on one provider never send the same row twice.
# ------------------------------------------------------------------------
{
	my $n = 300;
	my $node = NotifyTest::node('pair', <<"EOF");
notify.workers_per_provider = 2
notify.batch_size = 10
notify.max_host_connections = 10
EOF
	$sim->reset;
	# which backend recorded each finished row: the worker that claimed it
	sql($node, <<'EOF');
CREATE TABLE public.recorded_by (id bigint, pid int);
CREATE FUNCTION public.note_recorder() RETURNS trigger LANGUAGE plpgsql AS
$$BEGIN INSERT INTO public.recorded_by VALUES (NEW.id, pg_backend_pid()); RETURN NEW; END$$;
CREATE TRIGGER note_recorder AFTER INSERT ON notify.deliveries
	FOR EACH ROW EXECUTE FUNCTION public.note_recorder();
EOF
	setup_webhook($node, 's2');
	ok(wait_workers($node, 'webhook', 2), 's2: two webhook workers run');
	my @pids = worker_pids($node, 'webhook');

	# answers 100 ms late, so that the two workers' batches overlap
	$sim->fault({ sim => 'webhook', match => '/s2/', delay_ms => 100 });
	send_webhooks($node, $n);
	ok(NotifyTest::drain($node), 's2: outbox drained');
	is(sql($node, "SELECT count(*), count(*) FILTER (WHERE status = 'sent') FROM notify.deliveries"),
		"$n|$n", "s2: $n deliveries, all sent");
	ok(sim_settled(), 's2: simulator answered every request');
	my $st = $sim->stats->{sims}{webhook};
	is($st->{duplicate_ids}, 0, 's2: simulator duplicate_ids == 0');
	is($st->{distinct_ids}, $n, "s2: simulator distinct_ids == $n");
	my $seen = ids_seen('s2');
	is(scalar(keys %$seen), $n, "s2: $n distinct ids under /s2/");
	is(scalar(grep { $_ != 1 } values %$seen), 0, 's2: every id received exactly once');

	is(sql($node, 'SELECT count(*), count(DISTINCT id) FROM public.recorded_by'),
		"$n|$n", 's2: every row recorded once');
	is(sql($node, 'SELECT count(DISTINCT pid) FROM public.recorded_by'), '2',
		's2: both workers claimed and recorded batches');
	is(sql($node, 'SELECT string_agg(DISTINCT pid::text, \',\' ORDER BY pid::text) FROM public.recorded_by'),
		join(',', sort @pids), 's2: the recorders are the two webhook workers');
	is(sql($node, "SELECT count(*) FROM notify_workers() WHERE provider = 'webhook' AND batches > 0"),
		'2', 's2: notify_workers() shows batches for both workers');
	is(scalar(worker_pids($node, 'webhook')), 2, 's2: application_name count is still 2');
	$node->stop;
}

# ------------------------------------------------------------------------
# 4. Nothing runs on a standby; the promoted standby delivers.
# ------------------------------------------------------------------------
{
	my $n = 30;
	my $primary = NotifyTest::node('primary', undef, allows_streaming => 1);
	setup_webhook($primary, 's4');
	ok(wait_workers($primary, 'webhook', 1), 's4: primary runs a webhook worker');
	sql($primary, "UPDATE notify.providers SET paused = true WHERE name = 'webhook'");
	send_webhooks($primary, $n);
	is(sql($primary, "SELECT count(*) FROM notify.outbox WHERE status = 'queued'"), $n,
		"s4: $n rows queued on the primary");

	$primary->backup('s4');
	my $standby = PostgreSQL::Test::Cluster->new('standby');
	$standby->init_from_backup($primary, 's4', has_streaming => 1);
	$standby->start;
	$primary->wait_for_catchup($standby, 'replay', $primary->lsn('insert'));

	is(sql($standby, 'SELECT pg_is_in_recovery()'), 't', 's4: standby is in recovery');
	is(sql($standby, 'SHOW shared_preload_libraries'), 'notify', 's4: notify is preloaded on the standby');
	is(sql($standby, 'SELECT count(*) FROM notify.outbox'), $n, 's4: the queued rows reached the standby');
	is( sql($standby,
			"SELECT count(*) FROM pg_stat_activity WHERE backend_type LIKE 'notify%' "
			  . "OR application_name LIKE 'notify%'"),
		'0', 's4: no notify process runs on the standby');
	unlike(slurp_file($standby->logfile), qr/notify launcher started/, 's4: no launcher started on the standby');

	$primary->stop;
	$standby->promote;
	$standby->poll_query_until('postgres', 'SELECT NOT pg_is_in_recovery()')
	  or die 's4: standby was not promoted';
	ok(wait_workers($standby, 'webhook', 1), 's4: the promoted node starts a webhook worker');
	sql($standby, "UPDATE notify.providers SET paused = false WHERE name = 'webhook'");
	ok(NotifyTest::drain($standby), 's4: the promoted node drained the outbox');
	is(sql($standby, "SELECT count(*), count(*) FILTER (WHERE status = 'sent') FROM notify.deliveries"),
		"$n|$n", "s4: $n deliveries sent by the promoted node");
	my $seen = ids_seen('s4');
	my @ids = split /\n/, sql($standby, 'SELECT id FROM notify.deliveries');
	is(scalar(grep { !$seen->{$_} } @ids), 0, 's4: the simulator received every one of them');
	$standby->stop;
}

# ------------------------------------------------------------------------
# 5. DROP EXTENSION under running workers, then CREATE EXTENSION again.
# ------------------------------------------------------------------------
{
	my $node = NotifyTest::node('drop');
	setup_webhook($node, 's5a');
	ok(wait_workers($node, 'webhook', 1), 's5: a webhook worker runs');
	send_webhooks($node, 10);
	ok(NotifyTest::drain($node), 's5: first round delivered');
	my $launcher = launcher_pid($node);
	ok($launcher, "s5: launcher runs (pid $launcher)");

	# The DROP stays uncommitted until both the launcher and the worker ran
	# into it: they saw the extension, then had to wait for a lock the DROP
	# holds.  When it commits, what they were about to read is gone: the
	# moment a DROP is most likely to break them.  The worker gets there at
	# its next poll, the launcher at its next round (it naps 5 s at most).
	my $off = -s $node->logfile;
	my $bg = $node->background_psql('postgres');
	$bg->query_safe('BEGIN');
	$bg->query_safe('DROP EXTENSION notify');
	ok( NotifyTest::wait_until(
			sub {
				sql($node,
					"SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
					  . "AND backend_type IN ('notify launcher', 'notify worker')") eq '2';
			}),
		's5: launcher and worker are blocked by the uncommitted DROP EXTENSION');
	$bg->query_safe('COMMIT');
	$bg->quit;
	ok(wait_workers($node, 'webhook', 0), 's5: the worker exits after DROP EXTENSION');
	is(sql($node, "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'notify worker'"),
		'0', "s5: no 'notify worker' in pg_stat_activity");
	$node->wait_for_log(qr/extension "notify" is not installed in database "postgres"; waiting/, $off);
	is(launcher_pid($node), $launcher, 's5: the same launcher keeps running');
	my @bad = alarming(log_since($node, $off));
	is_deeply(\@bad, [], 's5: nothing alarming logged (no crash, no ERROR)') or diag(join("\n", @bad));

	sql($node, 'CREATE EXTENSION notify');
	setup_webhook($node, 's5b');
	ok(wait_workers($node, 'webhook', 1), 's5: a worker is back after CREATE EXTENSION');
	send_webhooks($node, 10);
	ok(NotifyTest::drain($node), 's5: second round delivered');
	is(NotifyTest::finished($node, 'sent'), 10, 's5: 10 sent after re-creation');
	my $seen = ids_seen('s5b');
	is(scalar(keys %$seen), 10, 's5: the simulator received them');
	is(launcher_pid($node), $launcher, 's5: still the same launcher');
	@bad = alarming(log_since($node, $off));
	is_deeply(\@bad, [], 's5: still nothing alarming in the log') or diag(join("\n", @bad));
	$node->stop;
}

# ------------------------------------------------------------------------
# 6. pg_ctl restart -m fast with a batch in flight: nothing lost, nothing
#    sent twice (SIGTERM is honoured between batches).
# ------------------------------------------------------------------------
{
	my $n = 50;
	my $node = NotifyTest::node('fast', <<"EOF");
notify.batch_size = 10
notify.max_host_connections = 10
notify.request_timeout = '30s'
notify.lease = '60s'
EOF
	setup_webhook($node, 's6');
	ok(wait_workers($node, 'webhook', 1), 's6: a webhook worker runs');
	my ($fault) = @{ $sim->fault({ sim => 'webhook', match => '/s6/', delay_ms => 2000 })->{ids} };
	send_webhooks($node, $n);
	ok( NotifyTest::wait_until(
			sub {
				sql($node, "SELECT count(*) > 0 FROM notify.outbox WHERE status = 'inflight'") eq 't'
				  && sql($node,
					"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'notify worker' "
					  . "AND query LIKE 'delivering %'") eq '1';
			}),
		's6: a batch is in flight');
	my @inflight = split /\n/, sql($node, "SELECT id FROM notify.outbox WHERE status = 'inflight' ORDER BY id");

	my $off = -s $node->logfile;
	PostgreSQL::Test::Utils::system_or_bail('pg_ctl', '-w', '-D', $node->data_dir,
		'-l', $node->logfile, '-m', 'fast', 'restart');
	$node->_update_pid(1);
	pass('s6: pg_ctl restart -m fast completed');
	$sim->control('DELETE', "/faults/$fault");

	ok(NotifyTest::drain($node), 's6: outbox drained after the restart');
	is(sql($node, "SELECT count(*), count(*) FILTER (WHERE status = 'sent') FROM notify.deliveries"),
		"$n|$n", "s6: $n deliveries, all sent");
	is( sql($node,
			'SELECT count(*) FROM notify.deliveries WHERE status = \'sent\' AND attempts = 1 AND id IN ('
			  . join(',', @inflight) . ')'),
		scalar(@inflight),
		's6: the batch in flight at shutdown was finished and recorded once');
	is(sql($node, 'SELECT count(*) FROM notify.deliveries WHERE attempts <> 1'), '0',
		's6: no row needed a second attempt');
	my $log = log_since($node, $off);
	unlike($log, qr/in-flight deliveries left by stopped workers/, 's6: no orphaned in-flight rows after the restart');
	my @bad = alarming($log);
	is_deeply(\@bad, [], 's6: no process crashed or failed') or diag(join("\n", @bad));
	ok(sim_settled(), 's6: simulator answered every request');
	my $seen = ids_seen('s6');
	is(scalar(keys %$seen), $n, "s6: the simulator saw all $n ids");
	is(scalar(grep { $_ != 1 } values %$seen), 0, 's6: none of them twice');
	$node->stop;
}

# ------------------------------------------------------------------------
# 7. An ERROR inside a batch: logged, the worker goes on, rows delivered
#    once their lease runs out.
# ------------------------------------------------------------------------
{
	my $n = 20;
	my $node = NotifyTest::node('error');
	sql($node, "ALTER SYSTEM SET notify.lease = '2s'");
	sql($node, 'SELECT pg_reload_conf()');
	$node->poll_query_until('postgres', "SELECT current_setting('notify.lease')", '2s')
	  or die 's7: notify.lease was not reloaded';
	# recording fails once: the first row inserted into notify.deliveries
	sql($node, <<'EOF');
CREATE SEQUENCE public.record_calls;
CREATE FUNCTION public.fail_once() RETURNS trigger LANGUAGE plpgsql AS
$$BEGIN
	IF nextval('public.record_calls') = 1 THEN
		RAISE EXCEPTION 'simulated failure while recording';
	END IF;
	RETURN NEW;
END$$;
CREATE TRIGGER fail_once BEFORE INSERT ON notify.deliveries
	FOR EACH ROW EXECUTE FUNCTION public.fail_once();
EOF
	setup_webhook($node, 's7');
	ok(wait_workers($node, 'webhook', 1), 's7: a webhook worker runs');
	my ($pid) = worker_pids($node, 'webhook');

	my $off = -s $node->logfile;
	send_webhooks($node, $n);
	$node->wait_for_log(
		qr/notify worker for provider "webhook" hit an error and goes on: simulated failure while recording/, $off);
	pass('s7: the worker logged the error and went on');
	ok(NotifyTest::drain($node), 's7: outbox drained after the lease ran out');
	is(sql($node, "SELECT count(*), count(*) FILTER (WHERE status = 'sent') FROM notify.deliveries"),
		"$n|$n", "s7: $n deliveries, all sent");
	is(sql($node, 'SELECT count(*) FROM notify.deliveries WHERE attempts = 2'), $n,
		's7: each was claimed again after its lease ran out (attempts = 2)');
	is(join(',', worker_pids($node, 'webhook')), $pid, "s7: the same worker ($pid) is still running");
	my $log = log_since($node, $off);
	my $errors = () = $log =~ /hit an error and goes on/g;
	is($errors, 1, 's7: one error, no error loop');
	my @bad = alarming($log);
	is_deeply(\@bad, [], 's7: no crash, no restart, no ERROR') or diag(join("\n", @bad));
	my $seen = ids_seen('s7');
	my @ids = split /\n/, sql($node, 'SELECT id FROM notify.deliveries');
	is(scalar(grep { !$seen->{$_} } @ids), 0, 's7: the simulator saw every id');
	$node->stop;
}

# ------------------------------------------------------------------------
# 8. SIGHUP: notify.workers_per_provider takes effect without a restart.
# ------------------------------------------------------------------------
{
	my $node = NotifyTest::node('hup');
	setup_webhook($node, 's8');
	ok(wait_workers($node, 'webhook', 1), 's8: one webhook worker runs');
	my ($first) = worker_pids($node, 'webhook');
	my $launcher = launcher_pid($node);

	sql($node, 'ALTER SYSTEM SET notify.workers_per_provider = 2');
	sql($node, 'SELECT pg_reload_conf()');
	ok(wait_workers($node, 'webhook', 2), 's8: a second worker starts after the reload');
	my @two = worker_pids($node, 'webhook');
	ok(scalar(grep { $_ == $first } @two), 's8: the first worker kept running');

	my $off = -s $node->logfile;
	sql($node, 'ALTER SYSTEM SET notify.workers_per_provider = 1');
	sql($node, 'SELECT pg_reload_conf()');
	ok(wait_workers($node, 'webhook', 1), 's8: back to one worker after the next reload');
	is(join(',', worker_pids($node, 'webhook')), $first, 's8: the extra worker stopped, the first one stays');
	$node->wait_for_log(qr/notify worker 1 for provider "webhook" exits: notify.workers_per_provider is 1/, $off);
	send_webhooks($node, 10);
	ok(NotifyTest::drain($node), 's8: deliveries go on with one worker');
	is(scalar(worker_pids($node, 'webhook')), 1, 's8: still one worker');
	is(launcher_pid($node), $launcher, 's8: the launcher never restarted');
	$node->stop;
}

# ------------------------------------------------------------------------
# 3. A stalled provider does not hold back another one.  (Runs last: see
#    the top of the file.)
# ------------------------------------------------------------------------
{
	my $nw = 20;
	my $ns = 10;
	# requests may take "forever": webhook rows stay in flight for the test
	my $node = NotifyTest::node('stall', <<"EOF");
notify.request_timeout = '10min'
notify.lease = '20min'
notify.max_host_connections = $nw
EOF
	$sim->reset;
	setup_webhook($node, 's3');
	my $ca = $sim->ca;
	my $tw = $sim->port('twilio');
	sql($node, <<"EOF");
SELECT notify_put_template('ping', 'sms', '{"body": "ping {{n}}"}');
SELECT notify_upsert_recipient('r', phone => '+15005550100');
SELECT notify_set_provider('twilio', 'twilio', jsonb_build_object(
	'account_sid', 'AC0123456789abcdef0123456789abcdef',
	'auth_token', 'f0e1d2c3b4a5968778695a4b3c2d1e0f',
	'from', '+15005550006',
	'endpoint', 'https://127.0.0.1:$tw',
	'ca_file', '$ca'));
EOF
	ok(wait_workers($node, 'webhook', 1) && wait_workers($node, 'twilio', 1),
		's3: a webhook and a twilio worker run');

	$sim->fault({ sim => 'webhook', match => '/s3/', delay_ms => 600_000 });
	send_webhooks($node, $nw);
	ok( NotifyTest::wait_until(
			sub {
				sql($node, "SELECT count(*) FROM notify.outbox WHERE provider = 'webhook' AND status = 'inflight'")
				  == $nw
				  && $sim->stats->{sims}{webhook}{requests} >= $nw;
			}),
		's3: webhook stalled: all its rows in flight, requests held by the provider');

	sql($node,
		"SELECT count(notify_send('r', 'ping', jsonb_build_object('n', g), ARRAY['sms'])) "
		  . "FROM generate_series(1, $ns) g");
	ok( NotifyTest::wait_until(
			sub { sql($node, "SELECT count(*) FROM notify.outbox WHERE provider = 'twilio'") eq '0' }),
		's3: SMS outbox drained');
	is(NotifyTest::finished($node, 'sent', 'twilio'), $ns, "s3: $ns SMS sent");
	is(scalar(grep { $_->{status} == 201 && ($_->{to} // '') eq '+15005550100' } $sim->log('twilio')),
		$ns, "s3: twilio simulator accepted $ns messages");
	# ... while the webhook batch is still stuck
	is(sql($node, "SELECT count(*) FROM notify.outbox WHERE provider = 'webhook' AND status = 'inflight'"),
		$nw, 's3: webhook rows still in flight after the SMS went out');
	is(sql($node, "SELECT count(*) FROM notify.deliveries WHERE provider = 'webhook'"),
		'0', 's3: no webhook delivery finished');
	is(scalar(keys %{ ids_seen('s3') }), 0, 's3: webhook simulator has answered none of them');
	# the webhook worker is inside its batch and would finish it before a
	# fast shutdown: stop hard
	$node->stop('immediate');
}

done_testing();
