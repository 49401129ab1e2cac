
# NotifyTest.pm -- what the TAP tests share: a PostgreSQL cluster with
# notify preloaded, and the provider simulators (test/sim) on loopback with
# their control API.
#
#   my $sim  = NotifyTest::Sim->start;             # all simulators
#   my $node = NotifyTest::node('main', 'notify.batch_size = 50');
#   $node->safe_psql('postgres', "SELECT notify_send(...)");
#   $sim->fault({sim => 'webhook', status => 503, count => 2});
#   my @got = $sim->log('webhook');
#
# Tests wait for conditions (poll_query_until, wait_until), never for time.

package NotifyTest;

use strict;
use warnings;

use File::Path qw(make_path);
use HTTP::Tiny;
use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep time);

our $ROOT = $ENV{NOTIFY_ROOT} or die "NOTIFY_ROOT is not set (run through make tap)";

# A cluster with notify in shared_preload_libraries, serving database
# "postgres", tuned so tests run quickly (short poll, short backoff).
sub node
{
	my ($name, $extra_conf, %opts) = @_;
	my $node = PostgreSQL::Test::Cluster->new($name);
	$node->init(allows_streaming => $opts{allows_streaming} ? 1 : 0);
	$node->append_conf('postgresql.conf', <<"EOF");
shared_preload_libraries = 'notify'
notify.database = 'postgres'
notify.poll_interval = '200ms'
notify.backoff_base = '200ms'
notify.backoff_max = '2s'
notify.request_timeout = '5s'
notify.lease = '10s'
max_worker_processes = 40
log_min_messages = info
EOF
	$node->append_conf('postgresql.conf', $extra_conf) if $extra_conf;
	$node->start;
	$node->safe_psql('postgres', 'CREATE EXTENSION notify') unless $opts{no_extension};
	return $node;
}

# Wait until $code returns true, up to $timeout seconds (default: the
# PostgreSQL test timeout); returns its last value.
sub wait_until
{
	my ($code, $timeout) = @_;
	$timeout //= $PostgreSQL::Test::Utils::timeout_default;
	my $deadline = time + $timeout;
	while (1)
	{
		my $v = $code->();
		return $v if $v;
		return $v if time > $deadline;
		usleep(50_000);
	}
}

# Count of finished deliveries with a status, optionally for one provider.
sub finished
{
	my ($node, $status, $provider) = @_;
	my $where = "status = '$status'";
	$where .= " AND provider = '$provider'" if defined $provider;
	return $node->safe_psql('postgres', "SELECT count(*) FROM notify.deliveries WHERE $where");
}

# Wait until the outbox is empty (everything finished); true on success.
sub drain
{
	my ($node, $timeout) = @_;
	return wait_until(
		sub { $node->safe_psql('postgres', 'SELECT count(*) FROM notify.outbox') eq '0' },
		$timeout);
}

package NotifyTest::Sim;

use strict;
use warnings;

use File::Spec;
use HTTP::Tiny;
use JSON::PP;
use PostgreSQL::Test::Utils;
use POSIX ();
use Time::HiRes qw(usleep time);

my @running;

# Start sim.js (and make its keys) in a fresh directory.
sub start
{
	my ($class, %opts) = @_;
	my $dir = File::Spec->rel2abs(PostgreSQL::Test::Utils::tempdir());
	my $keys = "$dir/keys";
	system('bash', "$NotifyTest::ROOT/test/sim/keys.sh", $keys) == 0
	  or die "test/sim/keys.sh failed";
	my $state = "$dir/state.json";
	my @args = ('node', "$NotifyTest::ROOT/test/sim/sim.js",
		'--keys', $keys, '--state', $state, '--quiet',
		@{ $opts{args} // [] });
	my $pid = fork();
	die "fork: $!" unless defined $pid;
	if ($pid == 0)
	{
		open(STDOUT, '>>', "$dir/sim.out");
		open(STDERR, '>&', \*STDOUT);
		exec(@args) or POSIX::_exit(127);
	}
	my $deadline = time + 60;
	while (!-s $state)
	{
		die "simulator did not start (see $dir/sim.out)"
		  if time > $deadline || waitpid($pid, POSIX::WNOHANG()) == $pid;
		usleep(50_000);
	}
	my $st = decode_json(slurp_file($state));
	my $self = bless {
		pid => $pid,
		dir => $dir,
		keys => $keys,
		ports => $st->{ports},
		http => HTTP::Tiny->new(timeout => 30),
	}, $class;
	push @running, $self;
	return $self;
}

sub stop
{
	my ($self) = @_;
	return unless $self->{pid};
	kill 'TERM', $self->{pid};
	waitpid($self->{pid}, 0);
	$self->{pid} = undef;
}

END
{
	$_->stop for @running;
}

sub port { my ($self, $name) = @_; return $self->{ports}{$name} // die "no port $name"; }
sub keyfile { my ($self, $name) = @_; return "$self->{keys}/$name"; }
sub ca { my ($self) = @_; return "$self->{keys}/ca.pem"; }

sub control
{
	my ($self, $method, $path, $body) = @_;
	my $url = "http://127.0.0.1:$self->{ports}{control}$path";
	my %o;
	if (defined $body)
	{
		$o{content} = encode_json($body);
		$o{headers} = { 'content-type' => 'application/json' };
	}
	my $r = $self->{http}->request($method, $url, \%o);
	die "control $method $path: $r->{status} $r->{content}" unless $r->{success};
	return length($r->{content}) ? decode_json($r->{content}) : undef;
}

sub fault { my ($self, $spec) = @_; return $self->control('POST', '/faults', $spec); }
sub clear_faults { my ($self) = @_; return $self->control('DELETE', '/faults'); }
sub config { my ($self, $cfg) = @_; return $self->control('POST', '/config', $cfg); }
sub reset { my ($self) = @_; return $self->control('POST', '/reset'); }
sub stats { my ($self) = @_; return $self->control('GET', '/stats'); }

# Log entries of one simulator (all, or those since a sequence number).
sub log
{
	my ($self, $sim, $since) = @_;
	my @all;
	$since //= 0;
	while (1)
	{
		my $r = $self->control('GET', "/log?sim=$sim&since=$since&limit=5000");
		push @all, @{ $r->{entries} };
		last if @{ $r->{entries} } < 5000;
		$since = $r->{entries}[-1]{seq};
	}
	return @all;
}

# Highest sequence number so far, to read only what comes next.
sub seq { my ($self) = @_; return $self->control('GET', '/stats')->{log}{last_seq}; }

1;
