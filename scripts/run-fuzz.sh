#!/bin/sh
# Runs each libFuzzer target for a fixed time. Usage: run-fuzz.sh SECONDS TARGET...
# Corpora live in build/fuzz/corpus-NAME (seeded from fuzz/seeds/NAME);
# a crash leaves its input in build/fuzz/ and fails the run.
set -eu
secs=$1
shift
for t in "$@"; do
	name=$(basename "$t")
	corpus=build/fuzz/corpus-$name
	mkdir -p "$corpus"
	if [ -d "fuzz/seeds/$name" ]; then
		cp -n fuzz/seeds/"$name"/* "$corpus"/ 2>/dev/null || true
	fi
	echo "== fuzzing $name for ${secs}s"
	"$t" -max_total_time="$secs" -max_len=70000 -artifact_prefix=build/fuzz/ \
		-print_final_stats=1 "$corpus" 2>&1 | grep -E "^(stat::number_of_executed_units|stat::new_units_added|==.*ERROR|SUMMARY)|Done" || true
	# libFuzzer exits non-zero on a crash; check its artifacts too.
	if ls build/fuzz/crash-* build/fuzz/leak-* build/fuzz/timeout-* >/dev/null 2>&1; then
		echo "fuzz: $name found a failing input:"; ls build/fuzz/crash-* build/fuzz/leak-* build/fuzz/timeout-* 2>/dev/null
		exit 1
	fi
done
