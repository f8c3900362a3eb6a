#!/bin/sh
# Runs test binaries of one build variant and prints a summary line.
# Usage: scripts/run-tests.sh BUILD_DIR TEST...
# The integration tests start $PARLEY_BIN, the server of the same variant,
# on the store $PARLEY_TEST_STORE names (tests/harness.h; SQLite if unset).
#
# Each test's output is kept in a temporary file and shown when it ends; a
# failed test's assertion lines and the end of its output are printed
# again after the summary, because a CI log is often read from its tail,
# where otherwise only "failed: NAME" would be.
build=$1
shift
PARLEY_BIN="$build/parley"
export PARLEY_BIN
# Sanitizer builds: fail on the first report, with leaks checked.
ASAN_OPTIONS="abort_on_error=0:detect_leaks=1:halt_on_error=1${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}"
export ASAN_OPTIONS UBSAN_OPTIONS
logs=$(mktemp -d "${TMPDIR:-/tmp}/parley-tests.XXXXXX") || exit 1
trap 'rm -rf "$logs"' EXIT INT TERM
passed=0
failed=0
failures=""
n=0
for t in "$@"; do
	n=$((n + 1))
	log="$logs/$n.log"
	echo "== $t"
	start=$(date +%s)
	# To a file, then shown: not through a pipe, which a server a test
	# left behind would hold open.
	"$t" > "$log" 2>&1
	rc=$?
	echo "$rc" > "$log.rc"
	cat "$log"
	if [ "$rc" -eq 0 ]; then
		passed=$((passed + 1))
		rm -f "$log"
	else
		failed=$((failed + 1))
		failures="$failures $t"
		echo "$t" > "$log.name"
	fi
	echo "== $t: $(( $(date +%s) - start ))s"
done
echo "$build${PARLEY_TEST_STORE:+ (store: $PARLEY_TEST_STORE)}: $passed passed, $failed failed"
if [ "$failed" -ne 0 ]; then
	for name in "$logs"/*.log.name; do
		log=${name%.name}
		echo "---- $(cat "$name") (exit $(cat "$log.rc")): its failures, then its last 40 lines"
		grep -E '^\[ +(ERROR|FAILED|LINE) +\]|ERROR: (Address|Leak)Sanitizer|runtime error|SUMMARY:' "$log" | head -40
		echo "...."
		tail -n 40 "$log"
	done
	echo "failed:$failures"
	exit 1
fi
