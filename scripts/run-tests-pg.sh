#!/bin/sh
# Runs integration tests of one build variant with every server on a
# fresh PostgreSQL database (PARLEY_TEST_STORE=postgresql: the harness
# starts a throwaway PostgreSQL per test process, tests/pgserver.h), when
# that variant's parley has a PostgreSQL store backend; when it has none,
# says so and succeeds, so that the run begins by itself the day the
# backend is registered.
# Usage: scripts/run-tests-pg.sh BUILD_DIR TEST...
build=$1
# Without a backend, migrate refuses the location (exit 2, and this
# message); with one, it tries the URI, whose port nothing listens on,
# and fails otherwise.
probe=$(ASAN_OPTIONS=detect_leaks=0 timeout 60 "$build/parley" migrate \
	--store postgresql://probe@127.0.0.1:1/probe 2>&1)
status=$?
if [ "$status" -eq 2 ] && echo "$probe" | grep -q "no store backend serves that location"; then
	echo "$build: PostgreSQL backend not built: skipping the integration suites' PostgreSQL run"
	exit 0
fi
PARLEY_TEST_STORE=postgresql
export PARLEY_TEST_STORE
exec scripts/run-tests.sh "$@"
