#!/usr/bin/env bash
# Installs what building and testing notify needs, with apt-get, when it is
# missing.  Safe to run again; does nothing when everything is there.
set -euo pipefail

packages=(
	build-essential pkg-config ca-certificates curl openssl
	postgresql-15 postgresql-server-dev-15 postgresql-contrib
	libcurl4-openssl-dev libnghttp2-dev libjansson-dev libssl-dev
	libipc-run-perl nghttp2-client valgrind
)

missing=()
for p in "${packages[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
command -v node >/dev/null 2>&1 || missing+=(nodejs)

if [ ${#missing[@]} -gt 0 ]; then
	if [ "$(id -u)" -ne 0 ]; then
		echo "notify needs these packages: ${missing[*]} (run as root, or install them)" >&2
		exit 1
	fi
	echo "== installing ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# PostgreSQL 15's binaries first on PATH (initdb, pg_ctl, pg_regress).
if [ ! -x "$(pg_config --bindir)/initdb" ]; then
	echo "pg_config points at $(pg_config --bindir), which has no initdb" >&2
	exit 1
fi
