#!/bin/sh
# Runs test binaries of one build variant and prints a summary line.
# Usage: scripts/run-tests.sh BUILD_DIR TEST...
# The integration tests start $PARLEY_BIN, the server of the same variant,
# on the store $PARLEY_TEST_STORE names (tests/harness.h; SQLite if unset).
build=$1
shift
PARLEY_BIN="$build/parley"
export PARLEY_BIN
# Sanitizer builds: fail on the first report, with leaks checked.
ASAN_OPTIONS="abort_on_error=0:detect_leaks=1:halt_on_error=1${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}"
export ASAN_OPTIONS UBSAN_OPTIONS
passed=0
failed=0
failures=""
for t in "$@"; do
	echo "== $t"
	start=$(date +%s)
	if "$t"; then
		passed=$((passed + 1))
	else
		failed=$((failed + 1))
		failures="$failures $t"
	fi
	echo "== $t: $(( $(date +%s) - start ))s"
done
echo "$build${PARLEY_TEST_STORE:+ (store: $PARLEY_TEST_STORE)}: $passed passed, $failed failed"
if [ "$failed" -ne 0 ]; then
	echo "failed:$failures"
	exit 1
fi
