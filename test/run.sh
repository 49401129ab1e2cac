#!/usr/bin/env bash
# The test command (README): installs what is missing, builds notify with
# warnings as errors, installs it, and runs every suite on throwaway
# clusters: unit tests (C, under ASan/UBSan), pg_regress, isolation, and
# the TAP tests with the provider simulators; valgrind over the providers.  Fails on any failure.
#
#   bash test/run.sh            everything
#   T=delivery bash test/run.sh only TAP test test/t/delivery.pl (after the rest)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

bash test/deps.sh
export PATH="$(pg_config --bindir):$PATH"

echo "== build"
make -s clean >/dev/null
make -s -j2 COPT="-Werror"
if [ "$(id -u)" -eq 0 ]; then
	make -s install
else
	make -s install || { echo "make install failed: run as root, or make PostgreSQL's directories writable" >&2; exit 1; }
fi

echo "== unit tests (plain C, ASan + UBSan)"
make -s unit

echo "== every provider against the simulators under valgrind"
bash test/unit/valgrind.sh

# PostgreSQL will not run as root: the server-side suites run as postgres in
# a private copy of the tree.
WORK=$(mktemp -d /tmp/notify-test.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
tar --exclude=./.git --exclude=node_modules -cf - . | tar -xf - -C "$WORK"
as_pg() {
	if [ "$(id -u)" -eq 0 ]; then
		chown -R postgres:postgres "$WORK"
		runuser -u postgres -- env PATH="$PATH" T="${T:-}" "$@"
	else
		"$@"
	fi
}

set +e
as_pg bash "$WORK/test/suites.sh" "$WORK"
status=$?
set -e
if [ $status -ne 0 ]; then
	for f in "$WORK"/test/regress-out/regression.diffs "$WORK"/test/isolation-out/regression.diffs; do
		[ -f "$f" ] && { echo "== $f"; cat "$f"; }
	done
	echo "FAILED"
	exit $status
fi
echo "ALL TESTS PASSED"
