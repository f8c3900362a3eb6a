#!/bin/sh
# Installs the Debian packages Parley builds and tests with, when missing.
# As root it runs apt-get; otherwise it prints the one command to run and fails.
# Usage: scripts/deps.sh build|test
set -eu

# Installs (or asks for) every package named that is not installed.
need() {
	missing=""
	for p in "$@"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
	done
	[ -z "$missing" ] && return 0
	if [ "$(id -u)" -ne 0 ]; then
		echo "deps: missing packages. Run:" >&2
		echo "  sudo apt-get install -y$missing" >&2
		exit 1
	fi
	echo "deps: installing$missing" >&2
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -q >/dev/null
	apt-get install -y -q --no-install-recommends $missing >/dev/null
}

# hiredis (0.14) and libnats (3.4): the fleet's clients of Redis (the
# presence registry) and NATS JetStream (the message log); the node links
# them. libcurl (7.88, with nghttp2 for HTTP/2): the push providers.
need build-essential pkg-config libsqlite3-dev libjansson-dev libssl-dev libsodium-dev libpq-dev \
	libhiredis-dev libnats-dev libcurl4-openssl-dev
if [ "${1:-build}" = test ]; then
	need libcmocka-dev clang
	# The PostgreSQL store's tests start a throwaway server of their own
	# (initdb and pg_ctl, run as the postgres user when root, which this
	# package creates). Debian 12 puts them in /usr/lib/postgresql/15/bin,
	# where pg_config --bindir (libpq-dev's, or postgresql-common's
	# wrapper) points; tests/pgserver.c looks there, then in
	# /usr/lib/postgresql/*/bin.
	need postgresql-15
	# Throwaway Redis and NATS JetStream servers for the fleet's tests
	# (tests/redisserver.c, tests/natsserver.c), on free loopback ports.
	# Where an init system runs, Debian's redis-server package also starts
	# a system redis on 6379 (and nats-server none); the tests neither use
	# nor mind it.
	need redis-server nats-server
	# The load balancer's tests run deploy/haproxy.cfg in Debian's
	# HAProxy (tests/haproxyserver.c).
	need haproxy
	# libFuzzer comes with clang's runtime, named after its major version.
	need "libclang-rt-$(clang -dumpversion | cut -d. -f1)-dev"
	# The web client's browser test: Debian's Chromium, and Node.js with
	# npm for playwright-core (installed from package-lock.json by make).
	need chromium
	# Reactions are emoji, which people's systems draw with an emoji
	# font; the browser tests' screenshots show them as they would look.
	# (The client's own marks need none: app.css draws them.)
	need fonts-noto-color-emoji
	command -v npm >/dev/null 2>&1 || need nodejs npm
fi
