#!/bin/sh
# Runs libFuzzer targets.
#
#   run-fuzz.sh SECONDS TARGET...  fuzz each target for SECONDS
#   run-fuzz.sh replay TARGET...   run every input of fuzz/seeds/NAME and
#                                  fuzz/corpus/NAME once (no fuzzing)
#   run-fuzz.sh merge TARGET...    minimize what fuzzing found, with the
#                                  seeds and the committed corpus, into
#                                  fuzz/corpus/NAME (to commit after a
#                                  campaign)
#
# Fuzzing works in build/fuzz/corpus-NAME, seeded from fuzz/seeds/NAME and
# fuzz/corpus/NAME, and kept from run to run; with FUZZ_SCRATCH=1 (make
# fuzz-smoke) in a fresh build/fuzz/smoke-NAME instead, so that a short
# run does not first spend its time on all that earlier runs found. A
# crash leaves its input in build/fuzz/ and fails the run; so does any
# other failing exit (a leak found at exit leaves no input), with the log
# in build/fuzz/NAME.log.
set -eu
mode=$1
shift

# Fails with the end of the log when the fuzzer exited non-zero or left an
# artifact behind.
check() {
	name=$1 rc=$2 log=$3
	if [ "$rc" -ne 0 ] || ls build/fuzz/crash-* build/fuzz/leak-* build/fuzz/timeout-* >/dev/null 2>&1; then
		echo "fuzz: $name failed (exit $rc); the end of $log:"
		tail -n 40 "$log"
		ls build/fuzz/crash-* build/fuzz/leak-* build/fuzz/timeout-* 2>/dev/null || true
		exit 1
	fi
}

mkdir -p build/fuzz
for t in "$@"; do
	name=$(basename "$t")
	log=build/fuzz/$name.log
	inputs=""
	for d in fuzz/seeds/$name fuzz/corpus/$name; do
		[ -d "$d" ] && inputs="$inputs $d"
	done
	case $mode in
	replay)
		[ -n "$inputs" ] || continue
		echo "== replaying $name:$inputs ($(cat $(find $inputs -type f) | wc -c | tr -d ' ') bytes in $(find $inputs -type f | wc -l | tr -d ' ') inputs)"
		rc=0
		# shellcheck disable=SC2086 # $inputs is a list of folders
		"$t" -runs=0 -max_len=70000 -artifact_prefix=build/fuzz/ $inputs >"$log" 2>&1 || rc=$?
		check "$name" "$rc" "$log"
		grep -E "INITED|DONE" "$log" | tail -n 1
		;;
	merge)
		corpus=build/fuzz/corpus-$name
		out=fuzz/corpus/$name
		new=build/fuzz/merge-$name
		rm -rf "$new"
		mkdir -p "$new" "$corpus"
		echo "== merging$inputs $corpus into $out"
		rc=0
		# Edges only (-use_counters=0): a set that reaches every edge is a
		# few hundred inputs, where one for every hit-count bucket too is
		# thousands, too many to keep in the repository and replay in
		# every make test.
		# shellcheck disable=SC2086
		"$t" -merge=1 -use_counters=0 -max_len=70000 -artifact_prefix=build/fuzz/ "$new" $inputs "$corpus" \
			>"$log" 2>&1 || rc=$?
		check "$name" "$rc" "$log"
		grep -E "MERGE-OUTER: [0-9]+ new files" "$log" || true
		rm -rf "$out"
		mkdir -p "$(dirname "$out")"
		mv "$new" "$out"
		echo "$out: $(ls "$out" | wc -l | tr -d ' ') files"
		;;
	*)
		secs=$mode
		corpus=build/fuzz/corpus-$name
		if [ "${FUZZ_SCRATCH:-0}" = 1 ]; then
			corpus=build/fuzz/smoke-$name
			rm -rf "$corpus"
		fi
		mkdir -p "$corpus"
		for d in $inputs; do
			cp -n "$d"/* "$corpus"/ 2>/dev/null || true
		done
		echo "== fuzzing $name for ${secs}s"
		rc=0
		"$t" -max_total_time="$secs" -max_len=70000 -artifact_prefix=build/fuzz/ \
			-print_final_stats=1 "$corpus" >"$log" 2>&1 || rc=$?
		grep -E "^(stat::number_of_executed_units|stat::average_exec_per_sec|stat::new_units_added|==.*ERROR|SUMMARY)|INVARIANT|Done|DONE" "$log" || true
		check "$name" "$rc" "$log"
		;;
	esac
done
