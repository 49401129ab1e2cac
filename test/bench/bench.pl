#!/usr/bin/env perl
#
# bench.pl -- notify's throughput and latency benchmark (make bench).
#
# Everything on loopback, on a throwaway cluster and a throwaway webhook
# simulator, cleaned up at exit (also on error or Ctrl-C):
#
#   ceiling   the simulator alone: h2load -n 200000 -c 4 -m 100 over TLS h2
#   claim0    the worker's claim query (read from src/worker.c) on a fresh
#             database with a 10k backlog
#   enqueue   notify_send rate, providers paused: one send per transaction at
#             1/2/4/8 sessions and 100 per transaction at 8 sessions, with
#             synchronous_commit on and off (pgbench, -T BENCH_T)
#   e2e       a 200,000 backlog enqueued while paused, then resumed: time
#             until notify.outbox is empty, per workers_per_provider:batch_size
#             (checks: deliveries sent == backlog, simulator distinct ids ==
#             backlog, no duplicates); WAL bytes and CPU per notification
#   latency   commit-to-received at fixed arrival rates (pgbench --rate)
#   claim     the claim query again once notify.deliveries holds >= 1M rows
#
# Prints a table and one JSON line; writes test/bench/results.json.  Targets
# are printed beside the measured values; nothing is asserted about time.
#
# The notify build under test is the one in this tree (make is run first);
# it is run from a private copy of the PostgreSQL server installation in the
# work directory, so nothing is installed system-wide.
#
# Environment:
#   BENCH_ONLY=a,b        phases to run (default all)
#   BENCH_T=10            seconds per enqueue run
#   BENCH_BACKLOG=200000  end-to-end backlog
#   BENCH_E2E=1:500,1:2000,2:500,2:2000   workers_per_provider:batch_size list
#   BENCH_RATES=100,1000  latency arrival rates (sends/s)
#   BENCH_RATE_T=10       seconds per latency run
#   BENCH_HISTORY=1000000 delivered rows before the second claim measurement
#   BENCH_KEEP=1          keep the work directory (server log, sim output)
#   BENCH_PAUSE_AT=phase  stop before that phase and wait for Enter (profiling)
#   BENCH_TREE=DIR        benchmark another notify tree (a scratch copy)

use strict;
use warnings;

use Cwd qw(abs_path);
use File::Basename qw(dirname);
use File::Path qw(make_path remove_tree);
use File::Temp qw(tempdir);
use HTTP::Tiny;
use IPC::Open2;
use JSON::PP;
use POSIX qw(WNOHANG);
use Time::HiRes qw(time sleep);

$| = 1;

my $HERE = dirname(abs_path($0));
my $ROOT = abs_path($ENV{BENCH_TREE} // "$HERE/../..");
my $IS_ROOT = $> == 0;

my %C = (
	T => $ENV{BENCH_T} // 10,
	backlog => $ENV{BENCH_BACKLOG} // 200000,
	e2e => $ENV{BENCH_E2E} // '1:500,1:2000,2:500,2:2000',
	rates => $ENV{BENCH_RATES} // '100,1000',
	rate_T => $ENV{BENCH_RATE_T} // 10,
	history => $ENV{BENCH_HISTORY} // 1000000,
	recipients => 1000,
	claim_backlog => 10000,
	claim_runs => 9,
);
my @PHASES = qw(ceiling claim0 enqueue e2e latency claim);
my %ONLY = map { $_ => 1 } split /,/, ($ENV{BENCH_ONLY} // join(',', @PHASES));

my $TARGETS = {
	e2e_delivered_per_s => 10000,
	enqueue_1tx_8s_per_s => 5000,
	enqueue_100tx_8s_per_s => 20000,
	p99_ms_at_1000 => 50,
	claim => 'flat as history grows',
};

my $CLK_TCK = POSIX::sysconf(POSIX::_SC_CLK_TCK()) || 100;
my $T0 = time;
my ($WORK, $PGDATA, $SOCK, $PORT, $PGBIN, $POSTGRES, $sim_pid, $pg_started, $db);
my %R;    # results
my $perf_pid;

sub logmsg { printf "[%6.1fs] %s\n", time - $T0, join('', @_); }
sub slurp { my ($f) = @_; open(my $h, '<', $f) or return undef; local $/; my $s = <$h>; close $h; return $s; }
sub spew { my ($f, $s) = @_; open(my $h, '>', $f) or die "$f: $!"; print $h $s; close $h; }
sub as_pg { return $IS_ROOT ? ('runuser', '-u', 'postgres', '--', @_) : @_; }

sub run
{
	my (@cmd) = @_;
	system(@cmd) == 0 or die "failed ($?): @cmd\n";
}

sub capture
{
	my (@cmd) = @_;
	my $pid = open(my $fh, '-|') // die "fork: $!";
	if ($pid == 0)
	{
		open(STDERR, '>&', \*STDOUT);
		exec(@cmd) or POSIX::_exit(127);
	}
	local $/;
	my $out = <$fh>;
	close $fh;
	die "failed ($?): @cmd\n$out" if $?;
	return $out;
}

# ---------------------------------------------------------------- cleanup

sub cleanup
{
	if ($perf_pid) { kill 'INT', $perf_pid; waitpid($perf_pid, 0); $perf_pid = undef; }
	$db->close if $db;
	$db = undef;
	if ($sim_pid)
	{
		kill 'TERM', $sim_pid;
		my $deadline = time + 5;
		while (waitpid($sim_pid, WNOHANG) == 0)
		{
			if (time > $deadline) { kill 'KILL', $sim_pid; waitpid($sim_pid, 0); last; }
			sleep 0.05;
		}
		$sim_pid = undef;
	}
	if ($pg_started)
	{
		system(as_pg("$PGBIN/pg_ctl", '-D', $PGDATA, '-m', 'fast', '-w', '-t', '30', 'stop'));
		if ($? != 0 && -f "$PGDATA/postmaster.pid")
		{
			my ($pm) = split /\n/, (slurp("$PGDATA/postmaster.pid") // '');
			kill 'QUIT', $pm if $pm && $pm =~ /^\d+$/;
		}
		$pg_started = 0;
	}
	if ($WORK && -d $WORK)
	{
		if ($ENV{BENCH_KEEP}) { print "work directory kept: $WORK\n"; }
		else { remove_tree($WORK); }
	}
	$WORK = undef;
}

END { my $rc = $?; cleanup(); $? = $rc; }
$SIG{INT} = $SIG{TERM} = sub { print STDERR "interrupted\n"; exit 130; };

# ---------------------------------------------------------------- psql session

package Session;

sub new
{
	my ($class, @conn) = @_;
	my ($out, $in);
	my $pid = IPC::Open2::open2($out, $in, 'stdbuf', '-oL', 'psql', '-XAtq', '-v', 'ON_ERROR_STOP=0', @conn);
	my $self = bless { pid => $pid, out => $out, in => $in }, $class;
	$self->q('SET client_min_messages = warning');
	return $self;
}

# Run SQL; returns the output lines (fields separated by |).  Dies on error.
sub q
{
	my ($self, $sql) = @_;
	my $in = $self->{in};
	$sql =~ s/;?\s*\z/;/;
	print $in $sql, "\n", q{\echo '@@DONE@@' :ERROR}, "\n";
	$in->flush;
	my @lines;
	my $out = $self->{out};
	while (my $l = <$out>)
	{
		chomp $l;
		if ($l =~ /^\@\@DONE\@\@ (\S+)$/)
		{
			die "SQL failed: $sql\n" if $1 eq 'true';
			return @lines;
		}
		push @lines, $l;
	}
	die "psql went away\n";
}

sub one { my ($self, $sql) = @_; my @l = $self->q($sql); return $l[0]; }

sub close
{
	my ($self) = @_;
	return unless $self->{pid};
	close $self->{in};
	waitpid($self->{pid}, 0);
	$self->{pid} = undef;
}

package main;

# ---------------------------------------------------------------- setup

sub build_and_overlay
{
	logmsg "building notify in $ROOT";
	run('make', '-s', '-C', $ROOT);
	my $bindir = capture('pg_config', '--bindir'); chomp $bindir;
	my $libdir = capture('pg_config', '--pkglibdir'); chomp $libdir;
	my $sharedir = capture('pg_config', '--sharedir'); chomp $sharedir;
	$PGBIN = $bindir;

	# A private copy of the server installation: the postgres binary (not a
	# link: it finds its lib and share directories relative to its real
	# path), links to every library and share file, and this tree's notify.
	my $pfx = "$WORK/inst";
	make_path("$pfx$bindir", "$pfx$libdir", "$pfx$sharedir/extension");
	run('cp', "$bindir/postgres", "$pfx$bindir/postgres");
	for my $f (glob("$libdir/*"))
	{
		my ($b) = $f =~ m{([^/]+)$};
		symlink($f, "$pfx$libdir/$b") unless $b eq 'notify.so';
	}
	for my $f (glob("$sharedir/*"))
	{
		my ($b) = $f =~ m{([^/]+)$};
		symlink($f, "$pfx$sharedir/$b") unless $b eq 'extension';
	}
	for my $f (glob("$sharedir/extension/*"))
	{
		my ($b) = $f =~ m{([^/]+)$};
		symlink($f, "$pfx$sharedir/extension/$b") unless $b =~ /^notify[.-]/;
	}
	run('cp', "$ROOT/notify.so", "$pfx$libdir/notify.so");
	run('cp', "$ROOT/notify.control", glob("$ROOT/notify--*.sql"), "$pfx$sharedir/extension/");
	$POSTGRES = "$pfx$bindir/postgres";
}

sub start_cluster
{
	$PGDATA = "$WORK/data";
	$SOCK = $WORK;
	$PORT = 54321;
	logmsg "initdb";
	my $out = capture(as_pg("$PGBIN/initdb", '-D', $PGDATA, '-U', 'postgres', '--auth=trust',
		'-E', 'UTF8', '--locale=C', '--no-sync'));
	# BENCH_PGSS=1: pg_stat_statements, tracking statements inside functions
	my $preload = $ENV{BENCH_PGSS} ? 'notify, pg_stat_statements' : 'notify';
	my $pgss_conf = $ENV{BENCH_PGSS} ? "\npg_stat_statements.track = all\npg_stat_statements.track_utility = off" : '';
	my $conf = <<"EOF";

# ---- notify bench (bench.pl) ----
listen_addresses = ''              # unix socket only: pgbench and psql are local
unix_socket_directories = '$SOCK'
port = $PORT
max_connections = 50
shared_preload_libraries = '$preload'
notify.database = 'postgres'$pgss_conf
max_worker_processes = 24

# memory: the machine has 24 GB; the whole working set fits
shared_buffers = '2GB'
work_mem = '16MB'
maintenance_work_mem = '512MB'
effective_cache_size = '8GB'

# WAL: no checkpoint inside a measurement (each phase starts with one, so
# every phase pays the same full-page images), big buffers, real fsync.
# synchronous_commit stays ON server-wide: a committed notify_send must
# survive a crash (the application was told it is queued), and the workers'
# claim/record commits are one per batch, so the flush costs them little.
# The enqueue phase also reports sessions with synchronous_commit = off.
wal_level = 'replica'
max_wal_size = '16GB'
min_wal_size = '2GB'
checkpoint_timeout = '30min'
checkpoint_completion_target = 0.9
wal_buffers = '64MB'
wal_writer_delay = '10ms'
fsync = on
full_page_writes = on

# planner: everything is cached; JIT would only add compile time to the
# short statements of notify_send and the claim
random_page_cost = 1.1
jit = off

# commit timestamps: the latency phase measures from each notification's
# commit (pg_xact_commit_timestamp of its row's xmin)
track_commit_timestamp = on

autovacuum = on
logging_collector = off
log_min_messages = warning
log_checkpoints = on
log_autovacuum_min_duration = '1s'
EOF
	open(my $h, '>>', "$PGDATA/postgresql.conf") or die $!;
	print $h $conf;
	close $h;
	$R{postgresql_conf} = [grep { /^\w/ } split /\n/, $conf];

	logmsg "starting the cluster";
	run(as_pg("$PGBIN/pg_ctl", '-D', $PGDATA, '-p', $POSTGRES, '-l', "$WORK/postgres.log",
		'-w', '-t', '60', 'start'));
	$pg_started = 1;
	$db = Session->new('-h', $SOCK, '-p', $PORT, '-U', 'postgres', '-d', 'postgres');
}

sub postmaster_pid
{
	my ($pm) = split /\n/, slurp("$PGDATA/postmaster.pid");
	return $pm;
}

sub start_sim
{
	my $keys = "$WORK/keys";
	run('bash', "$ROOT/test/sim/keys.sh", $keys);
	chmod 0755, $keys;
	my $state = "$WORK/sim.json";
	my $pid = fork() // die "fork: $!";
	if ($pid == 0)
	{
		open(STDOUT, '>>', "$WORK/sim.out");
		open(STDERR, '>&', \*STDOUT);
		exec('node', "$ROOT/test/sim/sim.js", '--keys', $keys, '--state', $state, '--quiet',
			'--no-log-bodies', '--only', 'webhook', '--log-max', '100000')
		  or POSIX::_exit(127);
	}
	$sim_pid = $pid;
	my $deadline = time + 30;
	while (!-s $state)
	{
		die "simulator did not start (see $WORK/sim.out)\n"
		  if time > $deadline || waitpid($pid, WNOHANG) == $pid;
		sleep 0.05;
	}
	my $st = decode_json(slurp($state));
	return { pid => $pid, keys => $keys, ca => "$keys/ca.pem", ports => $st->{ports} };
}

my $http = HTTP::Tiny->new(timeout => 30, keep_alive => 1);
my $SIM;

sub sim_ctl
{
	my ($method, $path, $body) = @_;
	my %o;
	if (defined $body) { $o{content} = encode_json($body); $o{headers} = { 'content-type' => 'application/json' }; }
	my $r = $http->request($method, "http://127.0.0.1:$SIM->{ports}{control}$path", \%o);
	die "sim $method $path: $r->{status} $r->{content}\n" unless $r->{success};
	return length($r->{content}) ? decode_json($r->{content}) : undef;
}

sub sim_webhook_stats { return sim_ctl('GET', '/stats')->{sims}{webhook}; }

# ---------------------------------------------------------------- measuring

# CPU seconds used so far: the whole server (postmaster + live children +
# reaped children), split by kind for the live processes; the simulator.
sub cpu_snapshot
{
	my $pm = postmaster_pid();
	my %s = (server => 0, notify_worker => 0, notify_launcher => 0, autovacuum => 0,
		backends => 0, background => 0, sim => 0);
	my $stat = sub {
		my ($pid) = @_;
		my $t = slurp("/proc/$pid/stat") // return;
		$t =~ s/^.*\) //s;
		my @f = split / /, $t;
		return { ppid => $f[1], self => ($f[11] + $f[12]) / $CLK_TCK, children => ($f[13] + $f[14]) / $CLK_TCK };
	};
	my $p = $stat->($pm);
	$s{server} = $p->{self} + $p->{children};
	$s{reaped} = $p->{children};
	opendir(my $d, '/proc');
	for my $pid (grep { /^\d+$/ } readdir $d)
	{
		my $c = $stat->($pid) or next;
		next unless $c->{ppid} == $pm;
		my $cmd = slurp("/proc/$pid/cmdline") // '';
		$s{server} += $c->{self};
		$s{pids}{$pid} = $c->{self} if $ENV{BENCH_DEBUG};
		my $kind = $cmd =~ /notify worker/ ? 'notify_worker'
		  : $cmd =~ /notify launcher/ ? 'notify_launcher'
		  : $cmd =~ /autovacuum/ ? 'autovacuum'
		  : $cmd =~ /\[local\]|postgres postgres/ ? 'backends'
		  : 'background';
		$s{$kind} += $c->{self};
	}
	closedir $d;
	if ($SIM) { my $c = $stat->($SIM->{pid}); $s{sim} = $c ? $c->{self} : 0; }
	my @t = times;
	$s{clients} = $t[2] + $t[3];    # our reaped children: pgbench, h2load, psql
	# the whole machine (every core): to tell how much CPU others took
	my ($cpu) = (slurp('/proc/stat') // '') =~ /^cpu\s+(.*)$/m;
	my @j = split ' ', $cpu;
	$s{machine_busy} = ($j[0] + $j[1] + $j[2] + $j[5] + $j[6] + ($j[7] // 0)) / $CLK_TCK;
	$s{wall} = time;
	return \%s;
}

sub sum_vals { my ($h) = @_; my $t = 0; $t += $_ for values %{ $h // {} }; return $t; }

# Wait until the postmaster has reaped every exited child (no zombie left,
# its children's CPU total steady), so that no exiting backend's CPU falls
# between the postmaster's counters and the live processes' when sampled.
sub server_quiescent
{
	my $pm = postmaster_pid();
	my $last = -1;
	for (1 .. 50)
	{
		my $zombies = 0;
		opendir(my $d, '/proc');
		for my $pid (grep { /^\d+$/ } readdir $d)
		{
			my $t = slurp("/proc/$pid/stat") // next;
			$t =~ s/^.*\) //s;
			my ($state, $ppid) = split / /, $t;
			$zombies++ if $ppid == $pm && ($state eq 'Z' || $state eq 'X');
		}
		closedir $d;
		my $t = slurp("/proc/$pm/stat") // '';
		$t =~ s/^.*\) //s;
		my @f = split / /, $t;
		my $cut = $f[13] + $f[14];
		return if $zombies == 0 && $cut == $last;
		$last = $cut;
		sleep 0.02;
	}
}

sub cpu_delta
{
	my ($a, $b) = @_;
	my %d;
	$d{$_} = $b->{$_} - $a->{$_} for grep { $_ ne 'pids' } keys %$b;
	if ($ENV{BENCH_DEBUG})
	{
		printf STDERR "pm self+children %.2f -> %.2f (children %.2f -> %.2f)\n", $a->{server} - sum_vals($a->{pids}),
			$b->{server} - sum_vals($b->{pids}), $a->{reaped}, $b->{reaped};
		printf STDERR "  c0 live: %s\n  c1 live: %s\n", join(' ', map { "$_=$a->{pids}{$_}" } sort keys %{ $a->{pids} }),
			join(' ', map { "$_=$b->{pids}{$_}" } sort keys %{ $b->{pids} });
	}
	# reaped children (exited backends) count as backends
	$d{backends} += $d{reaped};
	delete $d{reaped};
	# CPU that none of the bench's processes used, in cores (other sessions' load)
	$d{foreign_cores} = ($d{machine_busy} - $d{server} - $d{sim} - $d{clients}) / ($d{wall} || 1);
	return \%d;
}

sub wal_lsn { return $db->one('SELECT pg_current_wal_insert_lsn()'); }
sub wal_bytes { my ($a, $b) = @_; return 0 + $db->one("SELECT pg_wal_lsn_diff('$b', '$a')"); }

sub pct
{
	my ($sorted, $p) = @_;
	return undef unless @$sorted;
	my $i = $p / 100 * (@$sorted - 1);
	my $lo = int($i);
	my $hi = $lo + 1 < @$sorted ? $lo + 1 : $lo;
	return $sorted->[$lo] + ($sorted->[$hi] - $sorted->[$lo]) * ($i - $lo);
}

sub r1 { my ($v, $d) = @_; return undef unless defined $v; $d //= 1; return 0 + sprintf("%.${d}f", $v); }

sub pgbench
{
	my (%o) = @_;
	my @cmd = ('pgbench', '-n', '-M', 'prepared', '-h', $SOCK, '-p', $PORT, '-U', 'postgres',
		'-c', $o{clients}, '-j', ($o{clients} < 2 ? 1 : 2), '-D', "nrec=$C{recipients}",
		'-f', "$HERE/$o{script}");
	push @cmd, '-T', $o{T} if $o{T};
	push @cmd, '-t', $o{tx} if $o{tx};
	push @cmd, '-R', $o{rate} if $o{rate};
	push @cmd, 'postgres';
	local $ENV{PGOPTIONS} = $o{pgoptions} // '';
	my $out = capture(@cmd);
	my ($tps) = $out =~ /tps = ([\d.]+) \(without initial connection time\)/;
	my ($n) = $out =~ /number of transactions actually processed: (\d+)/;
	my ($lat) = $out =~ /latency average = ([\d.]+) ms/;
	my ($failed) = $out =~ /number of failed transactions: (\d+)/;
	die "pgbench output not understood:\n$out" unless defined $tps && defined $n;
	# its backends exit after it does: let the postmaster reap them, so that
	# their CPU shows in its children's times
	for (1 .. 100)
	{
		last if $db->one(q{SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'}) == 1;
		sleep 0.02;
	}
	server_quiescent();
	return { tps => $tps, tx => $n, latency_ms => $lat, failed => $failed // 0, out => $out };
}

# BENCH_PERF=1: a system-wide perf profile (call graphs) of some runs, left
# in the work directory (with BENCH_KEEP=1) as perf-NAME.data
sub perf_start
{
	my ($name) = @_;
	return unless $ENV{BENCH_PERF};
	my $pid = fork() // die "fork: $!";
	if ($pid == 0)
	{
		open(STDOUT, '>>', "$WORK/perf.out");
		open(STDERR, '>&', \*STDOUT);
		# BENCH_PERF=dwarf: DWARF call graphs (libc, libcurl and PostgreSQL
		# have no frame pointers), 10 seconds at most
		my @g = $ENV{BENCH_PERF} eq 'dwarf' ? ('--call-graph', 'dwarf,16384', '-F', '199') : ('-g', '-F', '499');
		exec('perf', 'record', '-a', @g, '-o', "$WORK/perf-$name.data", '--', 'sleep', '10') or POSIX::_exit(127);
	}
	$perf_pid = $pid;
	sleep 0.3;
}

sub perf_stop
{
	return unless $perf_pid;
	kill 'INT', $perf_pid;
	waitpid($perf_pid, 0);
	$perf_pid = undef;
}

sub pause_provider { $db->q(q{SELECT notify_pause('webhook')}); }
sub resume_provider { $db->q(q{SELECT notify_resume('webhook')}); }

my %extra_gucs;    # notify.* settings an e2e spec set (reset by the next)

sub set_workers
{
	my ($wpp, $batch, %extra) = @_;
	$db->q("ALTER SYSTEM RESET notify.$_") for keys %extra_gucs;
	$db->q("ALTER SYSTEM SET notify.$_ = '$extra{$_}'") for keys %extra;
	%extra_gucs = %extra;
	$db->q("ALTER SYSTEM SET notify.workers_per_provider = $wpp");
	$db->q("ALTER SYSTEM SET notify.batch_size = $batch");
	$db->q('SELECT pg_reload_conf()');
	my $deadline = time + 30;
	while (1)
	{
		my $n = $db->one(q{SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'notify worker'});
		my $b = $db->one(q{SHOW notify.batch_size});
		last if $n == $wpp && $b == $batch;
		die "workers did not become $wpp\n" if time > $deadline;
		sleep 0.1;
	}
	sleep 0.3;    # let the surviving workers process the reload too
}

sub worker_pids { return $db->q(q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'notify worker' ORDER BY pid}); }

sub truncate_all
{
	$db->q('TRUNCATE notify.outbox, notify.deliveries, notify.attempts, notify.notifications');
	$db->q('VACUUM ANALYZE notify.outbox, notify.notifications, notify.deliveries');
}

sub checkpoint { $db->q('CHECKPOINT'); }

# Count of established TCP connections whose local port is $port (the
# simulator side): /proc/net/tcp, state 01.
sub tcp_established
{
	my ($port) = @_;
	my $hex = sprintf('%04X', $port);
	my $n = 0;
	for my $f ('/proc/net/tcp', '/proc/net/tcp6')
	{
		open(my $h, '<', $f) or next;
		<$h>;
		while (<$h>)
		{
			my @f = split;
			$n++ if $f[1] =~ /:$hex$/ && $f[3] eq '01';
		}
		close $h;
	}
	return $n;
}

# ---------------------------------------------------------------- phases

sub setup_schema
{
	my $https = $SIM->{ports}{webhook_https};
	$db->q(qq{CREATE EXTENSION notify});
	$db->q(qq{CREATE EXTENSION pg_stat_statements}) if $ENV{BENCH_PGSS};
	# BENCH_SETUP_SQL: statements run once the schema exists (prototypes)
	$db->q($ENV{BENCH_SETUP_SQL}) if $ENV{BENCH_SETUP_SQL};
	$db->q(qq{SELECT notify_put_template('bench', 'webhook',
		'{"body": {"event": "order.shipped", "order": "{{n}}", "user": "{{who}}", "text": "Your order {{n}} has shipped"}}')});
	$db->q(qq{SELECT count(notify_upsert_recipient('user' || i, attributes => jsonb_build_object('who', 'User ' || i)))
		FROM generate_series(1, $C{recipients}) i});
	$db->q(qq{SELECT notify_set_provider('webhook', 'webhook', jsonb_build_object(
		'endpoint', 'https://127.0.0.1:$https/hook', 'ca_file', '$SIM->{ca}'))});
	pause_provider();
	$db->q('ANALYZE');
	$R{provider} = { endpoint => "https://127.0.0.1:$https/hook (TLS, ALPN h2)", secret => 'none (unsigned)' };
}

sub phase_ceiling
{
	my $https = $SIM->{ports}{webhook_https};
	my $body = '{"event":"order.shipped","order":"123","user":"User 42","text":"Your order 123 has shipped"}';
	spew("$WORK/body.json", $body);
	logmsg "ceiling: h2load -n 200000 -c 4 -m 100 against the webhook simulator alone";
	sim_ctl('POST', '/reset');
	sim_ctl('POST', '/config', { webhook => { log_requests => JSON::PP::false } });
	my $c0 = cpu_snapshot();
	my $t0 = time;
	my $out = capture('h2load', '-n', 200000, '-c', 4, '-m', 100, "https://127.0.0.1:$https/hook",
		'-d', "$WORK/body.json", '-H', 'content-type: application/json');
	my $el = time - $t0;
	my $c1 = cpu_snapshot();
	my ($fin, $rps) = $out =~ /finished in ([\d.]+)s, ([\d.]+) req\/s/;
	my ($ok) = $out =~ /requests: .* (\d+) succeeded/;
	my ($x2) = $out =~ /status codes: (\d+) 2xx/;
	my $d = cpu_delta($c0, $c1);
	$R{ceiling} = {
		tool => 'h2load -n 200000 -c 4 -m 100 -d body.json (TLS h2, 1 thread)',
		req_per_s => r1($rps), seconds => r1($fin, 2), succeeded => 0 + ($ok // 0), status_2xx => 0 + ($x2 // 0),
		sim_cpu_us_per_req => r1($d->{sim} / 200000 * 1e6),
		h2load_cpu_us_per_req => r1($d->{clients} / 200000 * 1e6),
		foreign_cores => r1($d->{foreign_cores}, 2),
	};
	logmsg sprintf("  %.0f req/s (sim CPU %.1f us/req)", $rps // 0, $R{ceiling}{sim_cpu_us_per_req});
	sim_ctl('POST', '/reset');
	sim_ctl('POST', '/config', { webhook => { log_requests => JSON::PP::false } });
}

sub claim_sql
{
	my $src = slurp("$ROOT/src/worker.c") // die "no src/worker.c\n";
	my ($body) = $src =~ /claim_sql\s*=\s*(.*?);\s*\n/s or die "claim_sql not found in src/worker.c\n";
	my $sql = join('', $body =~ /"((?:[^"\\]|\\.)*)"/g);
	$sql =~ s/\\"/"/g;
	return $sql;
}

# EXPLAIN ANALYZE of the worker's claim (rolled back) over a backlog of
# $C{claim_backlog} queued rows; the median of several runs (the prepared
# statement switches to a generic plan after five, as the worker's does).
sub measure_claim
{
	my ($label) = @_;
	pause_provider();
	my $n = $C{claim_backlog};
	$db->q(qq{SELECT count(notify_send('user' || (i % $C{recipients} + 1), 'bench', jsonb_build_object('n', i)))
		FROM generate_series(1, $n) i});
	$db->q('ANALYZE notify.outbox');
	my $sql = claim_sql();
	$db->q('DEALLOCATE ALL');
	$db->q("PREPARE bench_claim(text, int4, int4) AS $sql");
	my (@exec, @plan_ms, $plan_text, $buffers);
	for my $i (1 .. $C{claim_runs})
	{
		# the provider stays paused for the workers; this transaction alone
		# sees it resumed (the claim checks notify.providers itself)
		$db->q('BEGIN');
		$db->q(q{UPDATE notify.providers SET paused = false WHERE name = 'webhook'});
		my @l = $db->q(q{EXPLAIN (ANALYZE, BUFFERS) EXECUTE bench_claim('webhook', 500, 60000)});
		my ($rows) = map { /^Update on outbox .*actual time=\S+ rows=(\d+)/ ? $1 : () } @l;
		die "the claim took no rows:\n" . join("\n", @l) . "\n" unless $rows && $rows == 500;
		$db->q('ROLLBACK');
		my ($e) = map { /Execution Time: ([\d.]+) ms/ ? $1 : () } @l;
		my ($p) = map { /Planning Time: ([\d.]+) ms/ ? $1 : () } @l;
		push @exec, $e;
		push @plan_ms, $p // 0;
		if ($i == $C{claim_runs})
		{
			$plan_text = join("\n", @l);
			($buffers) = map { /Buffers: (.*)/ ? $1 : () } @l;
		}
	}
	my @s = sort { $a <=> $b } @exec;
	my $hist = $db->one('SELECT count(*) FROM notify.deliveries');
	my $notes = $db->one('SELECT count(*) FROM notify.notifications');
	my $outbox_pages = $db->one(q{SELECT pg_relation_size('notify.outbox') / 8192});
	my $idx_pages = $db->one(q{SELECT pg_relation_size('notify.outbox_claim') / 8192});
	my $dead = $db->one(q{SELECT n_dead_tup FROM pg_stat_user_tables WHERE relid = 'notify.outbox'::regclass});
	$db->q('TRUNCATE notify.outbox');
	my $res = {
		label => $label, history_deliveries => 0 + $hist, history_notifications => 0 + $notes,
		backlog => $n, batch => 500,
		exec_ms_median => r1(pct(\@s, 50), 2), exec_ms_min => r1($s[0], 2), exec_ms_max => r1($s[-1], 2),
		plan_ms_last => r1($plan_ms[-1], 3), buffers_top => $buffers,
		outbox_heap_pages => 0 + $outbox_pages, outbox_claim_index_pages => 0 + $idx_pages, outbox_dead_tuples => 0 + ($dead // 0),
	};
	spew("$WORK/claim-$label.plan.txt", $plan_text);
	$res->{plan} = [split /\n/, $plan_text];
	logmsg sprintf("  claim %s: %.2f ms median over %d runs (history %s deliveries)", $label, $res->{exec_ms_median},
		$C{claim_runs}, $hist);
	return $res;
}

sub phase_claim0
{
	logmsg 'claim time at start (empty history)';
	truncate_all();
	$R{claim}{start} = measure_claim('start');
}

sub phase_enqueue
{
	logmsg "enqueue: providers paused; pgbench -T $C{T} per run";
	pause_provider();
	my @runs;
	# BENCH_ENQ=sync:sessions:per_tx,... picks runs (default: the whole matrix)
	my @specs;
	if ($ENV{BENCH_ENQ}) { @specs = map { [split /:/] } split /,/, $ENV{BENCH_ENQ}; }
	else { for my $sc ('on', 'off') { push @specs, (map { [$sc, $_, 1] } 1, 2, 4, 8), [$sc, 8, 100]; } }
	{
		for my $spec (@specs)
		{
			my ($sc, $clients, $per) = @$spec;
			my $script = $per == 100 ? 'send100.sql' : 'send1.sql';
			truncate_all();
			checkpoint();
			my $w0 = wal_lsn();
			$db->q('SELECT pg_stat_statements_reset()') if $ENV{BENCH_PGSS};
			my $c0 = cpu_snapshot();
			perf_start("enqueue-$sc-$clients-$per") if $clients == 8;
			my $r = pgbench(script => $script, clients => $clients, T => $C{T},
				pgoptions => "-c synchronous_commit=$sc");
			perf_stop();
			my $c1 = cpu_snapshot();
			my $w1 = wal_lsn();
			my $rows = $db->one('SELECT count(*) FROM notify.outbox');
			my $sends = $r->{tx} * $per;
			my $d = cpu_delta($c0, $c1);
			print STDERR 'cpu ', join(' ', map { "$_=" . sprintf('%.2f', $d->{$_}) } sort keys %$d), "\n" if $ENV{BENCH_DEBUG};
			my $run = {
				synchronous_commit => $sc, sessions => $clients, sends_per_tx => $per,
				tps => r1($r->{tps}), sends_per_s => r1($r->{tps} * $per),
				sends => $sends, outbox_rows => 0 + $rows,
				tx_latency_ms => r1($r->{latency_ms}, 3),
				wal_bytes_per_send => r1(wal_bytes($w0, $w1) / ($sends || 1)),
				server_cpu_us_per_send => r1($d->{server} / ($sends || 1) * 1e6),
				worker_cpu_us_per_send => r1($d->{notify_worker} / ($sends || 1) * 1e6),
				pgbench_cpu_us_per_send => r1($d->{clients} / ($sends || 1) * 1e6),
				foreign_cores => r1($d->{foreign_cores}, 2),
			};
			die "outbox has $rows rows after $sends sends\n" if $rows != $sends;
			if ($ENV{BENCH_PGSS})
			{
				# statements by total time, per send (microseconds); nested ones
				# (inside notify_send) are included in their callers' time too
				$run->{pgss_us_per_send} = [ map {
					my ($t, $c, $q) = split /\|/, $_, 3;
					{ us_per_send => r1($t * 1000 / ($sends || 1), 1), calls_per_send => r1($c / ($sends || 1), 2), query => $q }
				} $db->q(q{SELECT total_exec_time, calls, regexp_replace(left(query, 110), '\s+', ' ', 'g')
					FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = 'postgres')
					ORDER BY total_exec_time DESC LIMIT 20}) ];
			}
			push @runs, $run;
			logmsg sprintf("  sync=%-3s %d session(s) x %3d/tx: %8.0f sends/s  (%5.1f us server CPU, %4.0f B WAL per send)",
				$sc, $clients, $per, $run->{sends_per_s}, $run->{server_cpu_us_per_send}, $run->{wal_bytes_per_send});
		}
	}
	truncate_all();
	$R{enqueue} = \@runs;
}

sub wait_drained
{
	my ($target, $req0, $timeout, $timeline) = @_;
	my $t0 = time;
	my $deadline = $t0 + $timeout;
	my ($conns_max, $conns_mid) = (0, undef);
	my $last_tl = 0;
	my $self_conn_t;
	while (1)
	{
		my $st = sim_webhook_stats();
		my $got = $st->{requests} - $req0;
		my $now = time;
		if ($now - $last_tl >= 0.5) { push @$timeline, [r1($now - $t0, 2), $got]; $last_tl = $now; }
		if ($now - ($self_conn_t //= 0) >= 0.5 || (!defined $conns_mid && $got >= $target / 2))
		{
			$self_conn_t = $now;
			my $c = tcp_established($SIM->{ports}{webhook_https});
			$conns_max = $c if $c > $conns_max;
			$conns_mid = $c if !defined $conns_mid && $got >= $target / 2;
		}
		last if $got >= $target;
		return (undef, $conns_max, $conns_mid) if $now > $deadline;
		sleep 0.1;
	}
	while (1)
	{
		my $left = $db->one('SELECT EXISTS (SELECT 1 FROM notify.outbox)');
		return (time - $t0, $conns_max, $conns_mid) if $left eq 'f';
		return (undef, $conns_max, $conns_mid) if time > $deadline;
		sleep 0.01;
	}
}

sub phase_e2e
{
	my @runs;
	my $backlog = $C{backlog};
	truncate_all();
	for my $spec (split /,/, $C{e2e})
	{
		# wpp:batch[:name=value...] (other notify.* settings for this run)
		my ($wpp, $batch, @kv) = split /:/, $spec;
		my %extra = map { split /=/, $_, 2 } @kv;
		logmsg "e2e: workers_per_provider=$wpp batch_size=$batch @kv, backlog $backlog";
		set_workers($wpp, $batch, %extra);
		pause_provider();
		$db->q('TRUNCATE notify.outbox');
		checkpoint();
		my $maxid = $db->one('SELECT coalesce(max(id), 0) FROM notify.deliveries');
		my $hist = $db->one('SELECT count(*) FROM notify.deliveries');

		# enqueue the backlog: 8 sessions, 100 sends per transaction
		my $per_client = int(($backlog + 799) / 800);
		my $w0 = wal_lsn();
		my $c0 = cpu_snapshot();
		my $te = time;
		my $pb = pgbench(script => 'send100.sql', clients => 8, tx => $per_client);
		$te = time - $te;
		my $c1 = cpu_snapshot();
		my $w1 = wal_lsn();
		my $n = $db->one('SELECT count(*) FROM notify.outbox');
		$db->q('ANALYZE notify.outbox');
		checkpoint();

		# deliver
		my $st0 = sim_webhook_stats();
		my $hot_sql = q{SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables WHERE relid = 'notify.outbox'::regclass};
		$db->q('SELECT pg_stat_clear_snapshot()');
		my ($upd0, $hot0) = split /\|/, $db->one($hot_sql);
		my $w2 = wal_lsn();
		my $c2 = cpu_snapshot();
		perf_start("e2e-$wpp-$batch");
		resume_provider();
		my @timeline;
		my ($el, $conns_max, $conns_mid) = wait_drained($n, $st0->{requests}, 300, \@timeline);
		perf_stop();
		my $c3 = cpu_snapshot();
		my $w3 = wal_lsn();
		my $st1 = sim_webhook_stats();
		pause_provider();
		sleep 1.1;    # the worker's table statistics reach the shared stats at most once a second
		$db->q('SELECT pg_stat_clear_snapshot()');
		my ($upd1, $hot1) = split /\|/, $db->one($hot_sql);

		my ($sent, $fin) = split /\|/, $db->one(
			"SELECT count(*) FILTER (WHERE status = 'sent'), count(*) FROM notify.deliveries WHERE id > $maxid");
		my $left = $db->one('SELECT count(*) FROM notify.outbox');
		my %retries = map { my ($e, $k) = split /\|/; ($e => 0 + $k) }
		  $db->q("SELECT error, count(*) FROM notify.attempts WHERE outbox_id > $maxid GROUP BY 1");
		my $d_enq = cpu_delta($c0, $c1);
		my $d = cpu_delta($c2, $c3);
		my $distinct = $st1->{distinct_ids} - $st0->{distinct_ids};
		my $dups = $st1->{duplicate_ids} - $st0->{duplicate_ids};
		my $reqs = $st1->{requests} - $st0->{requests};
		my $h2 = $st1->{listeners}{https_h2} - $st0->{listeners}{https_h2};

		# steady rate: between 10% and 90% of the backlog
		my ($ta, $tb, $na, $nb);
		for my $p (@timeline)
		{
			($ta, $na) = @$p if !defined $ta && $p->[1] >= 0.1 * $n;
			($tb, $nb) = @$p if $p->[1] <= 0.9 * $n;
		}
		my $steady = defined $ta && defined $tb && $tb > $ta ? ($nb - $na) / ($tb - $ta) : undef;

		my $run = {
			workers_per_provider => $wpp, batch_size => $batch, backlog => 0 + $n,
			(%extra ? (settings => { map { ("notify.$_" => $extra{$_}) } keys %extra }) : ()),
			history_before => 0 + $hist,
			enqueue_s => r1($te, 2), enqueue_per_s => r1($n / $te),
			enqueue_wal_bytes_per_send => r1(wal_bytes($w0, $w1) / $n),
			enqueue_server_cpu_us_per_send => r1($d_enq->{server} / $n * 1e6),
			drain_s => r1($el, 2),
			delivered_per_s => defined $el ? r1($n / $el) : undef,
			steady_delivered_per_s => r1($steady),
			deliveries_sent => 0 + $sent, deliveries_total => 0 + $fin, outbox_left => 0 + $left,
			sim_requests => $reqs, sim_https_h2 => $h2, sim_distinct_ids => $distinct, sim_duplicate_ids => $dups,
			check_ok => ($sent == $n && $distinct == $n && $dups == 0 && $left == 0) ? JSON::PP::true : JSON::PP::false,
			tls_connections_max => $conns_max, tls_connections_mid => $conns_mid,
			retried_attempts => \%retries,
			outbox_updates => $upd1 - $upd0,
			outbox_hot_update_pct => ($upd1 - $upd0) > 0 ? r1(100 * ($hot1 - $hot0) / ($upd1 - $upd0), 1) : undef,
			foreign_cores => r1($d->{foreign_cores}, 2),
			wal_bytes_per_delivered => r1(wal_bytes($w2, $w3) / $n),
			cpu_us_per_delivered => {
				server_total => r1($d->{server} / $n * 1e6),
				notify_workers => r1($d->{notify_worker} / $n * 1e6),
				autovacuum => r1($d->{autovacuum} / $n * 1e6),
				other_server => r1(($d->{server} - $d->{notify_worker} - $d->{autovacuum}) / $n * 1e6),
				sim => r1($d->{sim} / $n * 1e6),
			},
			cpu_utilisation_cores => defined $el ? {
				server => r1($d->{server} / $el, 2), workers => r1($d->{notify_worker} / $el, 2),
				sim => r1($d->{sim} / $el, 2) } : undef,
		};
		push @runs, $run;
		logmsg sprintf("  %s delivered/s (steady %s) in %ss; sent %d, sim distinct %d, dup %d; %d TLS conns; %.0f B WAL, %.0f us server + %.0f us sim CPU per delivery",
			$run->{delivered_per_s} // 'TIMEOUT', $run->{steady_delivered_per_s} // '-', $run->{drain_s} // '-',
			$sent, $distinct, $dups, $conns_max, $run->{wal_bytes_per_delivered},
			$run->{cpu_us_per_delivered}{server_total}, $run->{cpu_us_per_delivered}{sim});
		$db->q('TRUNCATE notify.outbox') if $left > 0;
	}
	$R{e2e} = \@runs;
}

sub phase_latency
{
	my @runs;
	set_workers(1, 500);    # the defaults
	resume_provider();
	sleep 0.5;
	for my $rate (split /,/, $C{rates})
	{
		my $clients = $rate >= 500 ? 8 : 4;
		logmsg "latency: $rate sends/s for $C{rate_T}s (pgbench --rate, $clients sessions, one send per transaction)";
		my $maxid = $db->one(q{SELECT greatest((SELECT coalesce(max(id), 0) FROM notify.deliveries),
			(SELECT coalesce(max(id), 0) FROM notify.outbox))});
		sim_ctl('POST', '/config', { webhook => { log_requests => JSON::PP::true } });
		my $seq0 = sim_ctl('GET', '/stats')->{log}{last_seq};
		my $c0 = cpu_snapshot();
		my $r = pgbench(script => 'send1.sql', clients => $clients, rate => $rate, T => $C{rate_T});
		my $dcpu = cpu_delta($c0, cpu_snapshot());
		my $deadline = time + 60;
		while ($db->one(qq{SELECT EXISTS (SELECT 1 FROM notify.outbox)}) eq 't')
		{
			die "latency run did not drain\n" if time > $deadline;
			sleep 0.05;
		}
		sim_ctl('POST', '/config', { webhook => { log_requests => JSON::PP::false } });

		# receive times from the simulator's log, by X-Notify-Id (= outbox id)
		my %recv;
		my $since = $seq0;
		while (1)
		{
			my $l = sim_ctl('GET', "/log?sim=webhook&since=$since&limit=5000");
			for my $e (@{ $l->{entries} })
			{
				my $id = $e->{headers}{'x-notify-id'};
				$recv{$id} //= $e->{ts} if defined $id;
			}
			last if @{ $l->{entries} } < 5000;
			$since = $l->{entries}[-1]{seq};
		}
		my @rows = $db->q(qq{SELECT d.id,
				extract(epoch FROM pg_xact_commit_timestamp(n.xmin)) * 1000,
				extract(epoch FROM d.sent_at) * 1000,
				extract(epoch FROM n.created_at) * 1000
			  FROM notify.deliveries d JOIN notify.notifications n ON n.id = d.notification_id
			 WHERE d.id > $maxid AND d.status = 'sent'});
		my (@lat, @lat_db, $missing);
		$missing = 0;
		for (@rows)
		{
			my ($id, $commit, $sent, $created) = split /\|/;
			if (defined $recv{$id}) { push @lat, $recv{$id} - $commit; }
			else { $missing++; }
			push @lat_db, $sent - $commit;
		}
		@lat = sort { $a <=> $b } @lat;
		@lat_db = sort { $a <=> $b } @lat_db;
		my $run = {
			rate => 0 + $rate, seconds => 0 + $C{rate_T}, sessions => $clients,
			achieved_tps => r1($r->{tps}), sends => 0 + $r->{tx}, measured => scalar(@lat), unmatched => $missing,
			commit_to_received_ms => { p50 => r1(pct(\@lat, 50), 1), p95 => r1(pct(\@lat, 95), 1),
				p99 => r1(pct(\@lat, 99), 1), max => r1($lat[-1], 1) },
			commit_to_recorded_sent_at_ms => { p50 => r1(pct(\@lat_db, 50), 1), p95 => r1(pct(\@lat_db, 95), 1),
				p99 => r1(pct(\@lat_db, 99), 1) },
			pgbench_tx_latency_ms => r1($r->{latency_ms}, 2),
			foreign_cores => r1($dcpu->{foreign_cores}, 2),
			server_cores => r1($dcpu->{server} / $C{rate_T}, 2),
		};
		push @runs, $run;
		logmsg sprintf("  %d/s: commit->received p50 %.1f p95 %.1f p99 %.1f max %.1f ms (%d matched, %d unmatched)",
			$rate, map({ $run->{commit_to_received_ms}{$_} // -1 } qw(p50 p95 p99 max)), scalar(@lat), $missing);
	}
	pause_provider();
	$R{latency} = \@runs;
	$R{latency_definition} = 'commit_to_received = simulator receive time (log ts, ms, after the whole request body arrived) '
	  . 'minus pg_xact_commit_timestamp(xmin of the notifications row), i.e. the commit of the sending transaction; '
	  . 'matched by X-Notify-Id = outbox id. Same host clock. commit_to_recorded_sent_at uses deliveries.sent_at '
	  . '(stamped by the worker after its whole batch finished) instead.';
}

sub phase_claim
{
	my $hist = $db->one('SELECT count(*) FROM notify.deliveries');
	my $need = $C{history} - $hist;
	if ($need > 0)
	{
		logmsg "claim: synthesizing $need delivered rows of history (notifications + deliveries)";
		my $t = time;
		my $chunk = 250000;
		while ($need > 0)
		{
			my $k = $need < $chunk ? $need : $chunk;
			$db->q(qq{
				WITH n AS (
					INSERT INTO notify.notifications (recipient_id, recipient, template, params, rendered, versions, created_at)
					SELECT r.id, r.external_id, 'bench', jsonb_build_object('n', g),
						   jsonb_build_object('webhook', jsonb_build_object('body', jsonb_build_object('event', 'order.shipped', 'order', g::text))),
						   '{"webhook": 1}', now() - (g % 86400) * interval '1 second'
					  FROM generate_series(1, $k) g
					  JOIN notify.recipients r ON r.external_id = 'user' || (g % $C{recipients} + 1)
					RETURNING id, recipient_id, created_at)
				INSERT INTO notify.deliveries (id, notification_id, recipient_id, channel, provider, destination, priority,
											   status, attempts, provider_status, provider_message_id, created_at, sent_at, finished_at)
				SELECT nextval(pg_get_serial_sequence('notify.outbox', 'id')), n.id, n.recipient_id, 'webhook', 'webhook', '', 0,
					   'sent', 1, 200, 'synthetic', n.created_at, n.created_at, n.created_at
				  FROM n});
			$need -= $k;
		}
		$db->q('ANALYZE notify.notifications, notify.deliveries');
		$R{claim}{synthesized_s} = r1(time - $t, 1);
	}
	logmsg 'claim time after history';
	$R{claim}{after_history} = measure_claim('after_history');
	$db->q('VACUUM notify.outbox');
	$R{claim}{after_history_vacuumed} = measure_claim('after_history_vacuumed');
}

# ---------------------------------------------------------------- report

sub machine
{
	my $cpu = slurp('/proc/cpuinfo') // '';
	my ($model) = $cpu =~ /^model name\s*:\s*(.*)$/m;
	my ($mhz) = $cpu =~ /^cpu MHz\s*:\s*(.*)$/m;
	my ($mem) = (slurp('/proc/meminfo') // '') =~ /MemTotal:\s*(\d+)/;
	my $nproc = capture('nproc'); chomp $nproc;
	my $pgv = capture('pg_config', '--version'); chomp $pgv;
	my $curl = capture('curl', '--version'); ($curl) = $curl =~ /^(curl \S+ .*?libcurl\/\S+ \S+)/;
	my $node = capture('node', '--version'); chomp $node;
	my $rev = $ENV{BENCH_REV} // eval { my $r = capture('git', '-C', $ROOT, 'rev-parse', '--short', 'HEAD'); chomp $r; $r } // 'unknown';
	my $dirty = $ENV{BENCH_REV} ? '' : eval { capture('git', '-C', $ROOT, 'status', '--porcelain', '--', 'src', 'notify--1.0.sql') } // '';
	return { nproc => 0 + $nproc, cpu_model => $model, cpu_mhz => $mhz, mem_gb => r1(($mem // 0) / 1048576, 1),
		postgres => $pgv, curl => $curl, node => $node, notify_commit => $rev . ($dirty ? '+dirty' : ''),
		tree => $ROOT };
}

sub fmt { my ($v, $f) = @_; return defined $v ? sprintf($f // '%s', $v) : '-'; }

sub report
{
	my @o;
	my $m = $R{machine};
	push @o, '', '=' x 100;
	push @o, sprintf('notify benchmark  %s  nproc=%d  %s  %s  %s', $m->{notify_commit}, $m->{nproc}, $m->{cpu_model},
		$m->{postgres}, $m->{curl} // '');
	push @o, '=' x 100;
	if (my $c = $R{ceiling})
	{
		push @o, '', 'Simulator ceiling (alone): ' . $c->{tool};
		push @o, sprintf('  %-58s %10s', 'h2load req/s', fmt($c->{req_per_s}, '%.0f'));
		push @o, sprintf('  %-58s %10s', 'sim CPU us/request', fmt($c->{sim_cpu_us_per_req}, '%.1f'));
	}
	if (my $e = $R{enqueue})
	{
		push @o, '', 'Enqueue (notify_send, providers paused, pgbench -M prepared)';
		push @o, sprintf('  %-6s %8s %7s %12s %9s %10s %10s %10s %6s   %s', 'sync', 'sessions', 'per tx', 'sends/s', 'tx ms',
			'srv us/snd', 'wrk us/snd', 'WAL B/snd', 'other', 'target');
		for my $r (@$e)
		{
			my $t = '';
			$t = '>= 5,000/s' if $r->{sends_per_tx} == 1 && $r->{sessions} == 8;
			$t = '>= 20,000/s' if $r->{sends_per_tx} == 100;
			push @o, sprintf('  %-6s %8d %7d %12.0f %9.3f %10.1f %10.1f %10.0f %6.2f   %s', $r->{synchronous_commit}, $r->{sessions},
				$r->{sends_per_tx}, $r->{sends_per_s}, $r->{tx_latency_ms} // 0, $r->{server_cpu_us_per_send},
				$r->{worker_cpu_us_per_send}, $r->{wal_bytes_per_send}, $r->{foreign_cores} // 0, $t);
		}
		push @o, '  srv/wrk us/snd: CPU microseconds per send of all server processes / of the (paused) notify workers;';
		push @o, '  other: cores used meanwhile by processes outside the bench (another session\'s load: discount such rows)';
	}
	if (my $e = $R{e2e})
	{
		push @o, '', "End to end (backlog enqueued while paused, then resumed; time until notify.outbox is empty)";
		push @o, sprintf('  %3s %6s %10s %8s %10s %10s %6s %6s %7s %6s %9s %9s %9s %8s   %s', 'wpp', 'batch', 'deliv/s', 'drain s',
			'steady/s', 'enq/s', 'check', 'conns', 'retries', 'HOT%', 'WAL B/d', 'srv us/d', 'wrk us/d', 'sim us/d', 'target');
		for my $r (@$e)
		{
			my $retries = 0;
			$retries += $_ for values %{ $r->{retried_attempts} };
			push @o, sprintf('  %3d %6d %10s %8s %10s %10.0f %6s %6d %7d %6s %9.0f %9.1f %9.1f %8.1f   >= 10,000/s', $r->{workers_per_provider},
				$r->{batch_size}, fmt($r->{delivered_per_s}, '%.0f'), fmt($r->{drain_s}, '%.2f'),
				fmt($r->{steady_delivered_per_s}, '%.0f'), $r->{enqueue_per_s},
				$r->{check_ok} ? 'ok' : 'FAIL', $r->{tls_connections_max}, $retries, fmt($r->{outbox_hot_update_pct}, '%.0f'),
				$r->{wal_bytes_per_delivered},
				$r->{cpu_us_per_delivered}{server_total}, $r->{cpu_us_per_delivered}{notify_workers},
				$r->{cpu_us_per_delivered}{sim});
		}
		push @o, "  check: deliveries sent == backlog, simulator distinct X-Notify-Id == backlog, 0 duplicates, outbox empty";
		push @o, "  conns: established TLS connections to the simulator (max sampled); retries: attempts that failed and were retried;";
		push @o, "  HOT%: share of notify.outbox updates (claims) that were HOT; us/d: CPU microseconds per delivery (srv = all";
		push @o, "  server processes, wrk = the notify workers alone, sim = the simulator)";
		for my $r (@$e)
		{
			my %x = %{ $r->{retried_attempts} };
			push @o, sprintf('  retried (wpp %d, batch %d): %s', $r->{workers_per_provider}, $r->{batch_size},
				join(', ', map { "$x{$_} x $_" } sort keys %x)) if %x;
		}
	}
	if (my $l = $R{latency})
	{
		push @o, '', 'Latency: commit of the sending transaction -> simulator received the request (ms)';
		push @o, sprintf('  %8s %9s %8s %8s %8s %8s %8s   %s', 'rate/s', 'measured', 'p50', 'p95', 'p99', 'max', 'p99 db', 'target');
		for my $r (@$l)
		{
			my $c = $r->{commit_to_received_ms};
			push @o, sprintf('  %8d %9d %8s %8s %8s %8s %8s   %s', $r->{rate}, $r->{measured}, fmt($c->{p50}, '%.1f'),
				fmt($c->{p95}, '%.1f'), fmt($c->{p99}, '%.1f'), fmt($c->{max}, '%.1f'),
				fmt($r->{commit_to_recorded_sent_at_ms}{p99}, '%.1f'), $r->{rate} == 1000 ? 'p99 < 50 ms' : '');
		}
		push @o, '  p99 db: commit -> deliveries.sent_at (stamped when the worker\'s whole batch finished)';
	}
	if (my $c = $R{claim})
	{
		push @o, '', "Claim query (src/worker.c claim_sql, EXPLAIN ANALYZE, batch 500 of a $C{claim_backlog} backlog, median)";
		push @o, sprintf('  %-24s %12s %12s %10s %10s %10s   %s', 'when', 'deliveries', 'exec ms', 'idx pages', 'heap pgs',
			'dead tup', 'target');
		for my $k (qw(start after_history after_history_vacuumed))
		{
			my $r = $c->{$k} or next;
			push @o, sprintf('  %-24s %12d %12.2f %10d %10d %10d   %s', $k, $r->{history_deliveries}, $r->{exec_ms_median},
				$r->{outbox_claim_index_pages}, $r->{outbox_heap_pages}, $r->{outbox_dead_tuples}, 'flat');
		}
	}
	my @f = map { $_->{foreign_cores} // () } (@{ $R{enqueue} // [] }, @{ $R{e2e} // [] }, @{ $R{latency} // [] });
	push @o, '', sprintf('CPU used by processes outside the bench during the runs: %s cores (max %.2f; the machine has %d)',
		@f ? sprintf('%.2f', (eval { my $t = 0; $t += $_ for @f; $t / @f })) . ' avg' : '-', (sort { $b <=> $a } @f, 0)[0], $R{machine}{nproc});
	push @o, sprintf('total bench time %.0f s', time - $T0), '';
	print join("\n", @o), "\n";
}

# ---------------------------------------------------------------- main

sub pause_at
{
	my ($phase) = @_;
	return unless ($ENV{BENCH_PAUSE_AT} // '') eq $phase;
	print "paused before $phase: socket $SOCK port $PORT, sim $SIM->{ports}{control}; press Enter\n";
	my $x = <STDIN>;
}

for my $tool (qw(pgbench psql node h2load pg_config make))
{
	next if system("command -v $tool >/dev/null 2>&1") == 0;
	if ($tool eq 'h2load' && $IS_ROOT)
	{
		logmsg 'installing nghttp2-client (h2load)';
		run('sh', '-c', 'DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nghttp2-client >/dev/null '
			. '|| (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nghttp2-client >/dev/null)');
		next;
	}
	die "bench needs $tool (see test/deps.sh)\n";
}
$ENV{PATH} = capture('pg_config', '--bindir') =~ s/\s+$//r . ":$ENV{PATH}";

$WORK = tempdir('/tmp/notify-bench.XXXXXX');
chmod 0755, $WORK;
if ($IS_ROOT) { my (undef, undef, $uid, $gid) = getpwnam('postgres') or die "no postgres user\n"; chown $uid, $gid, $WORK; }
$R{machine} = machine();
$R{config} = { %C, phases => [grep { $ONLY{$_} } @PHASES] };
$R{targets} = $TARGETS;
build_and_overlay();
$SIM = start_sim();
start_cluster();
setup_schema();

for my $phase (@PHASES)
{
	next unless $ONLY{$phase};
	pause_at($phase);
	no strict 'refs';
	&{"phase_$phase"}();
}

$R{total_s} = r1(time - $T0, 1);
report();
my $json = JSON::PP->new->canonical->encode(\%R);
# the JSON line leaves the claim plans out (they are in results.json)
my %short = %R;
if ($short{claim}) { $short{claim} = { map { ref $R{claim}{$_} eq 'HASH' ? ($_ => { %{ $R{claim}{$_} }, plan => undef }) : ($_ => $R{claim}{$_}) } keys %{ $R{claim} } }; }
delete $short{postgresql_conf};
print 'BENCH_JSON ', JSON::PP->new->canonical->encode(\%short), "\n";
spew("$HERE/results.json", JSON::PP->new->canonical->pretty->encode(\%R));
logmsg "results written to $HERE/results.json";
