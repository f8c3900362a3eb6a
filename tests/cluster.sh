#!/bin/bash
# tests/cluster.sh - scripts/cluster up, use, status and down, for real:
# PostgreSQL, Redis, three NATS servers, three nodes and HAProxy come up
# on loopback; two users sign up and chat through the balancer (parley-cli),
# the second message reaching the other user live, and found by a search;
# status sees every part running; down leaves no process and no file.
set -eu
cd "$(dirname "$0")/.."
export PARLEY_CLUSTER_DIR
PARLEY_CLUSTER_DIR=$(mktemp -d /tmp/parley-cluster-test-XXXXXX)
rmdir "$PARLEY_CLUSTER_DIR"
# A base port of its own (the parts use BASE..BASE+53): from the pid, so
# that runs side by side differ.
export PARLEY_CLUSTER_PORT=$((20000 + ($$ % 300) * 60))
trap 'scripts/cluster down >/dev/null 2>&1 || true' EXIT
fail() { echo "cluster.sh: $*" >&2; scripts/cluster status >&2 || true; exit 1; }

scripts/cluster up 3 >/dev/null 2>"$PARLEY_CLUSTER_DIR.up.log" || { cat "$PARLEY_CLUSTER_DIR.up.log" >&2; fail "up failed"; }
rm -f "$PARLEY_CLUSTER_DIR.up.log"
lb=$PARLEY_CLUSTER_PORT
st=$(scripts/cluster status)
for part in haproxy node1 node2 node3 push nats1 nats2 nats3 redis postgresql; do
	echo "$st" | grep -q "^$part: running" || fail "$part is not running"
done
echo "$st" | grep -q 'balancer /healthz: {"status":"ok"}' || fail "no /healthz through the balancer"
echo "$st" | grep -q 'push /healthz: {"status":"ok"}' || fail "no /healthz from the push service"

# The clients' cursors (what each has shown) in a directory of this run's.
PARLEY_CLI_STATE=$(mktemp -d /tmp/parley-cluster-cli-XXXXXX)
export PARLEY_CLI_STATE
trap 'scripts/cluster down >/dev/null 2>&1 || true; rm -rf "$PARLEY_CLI_STATE"' EXIT
cli() { timeout 20 build/parley-cli --server "127.0.0.1:$lb" "$@"; }
cli register clu_a$$ "secret-a-$$" >/dev/null || fail "register a"
cli register clu_b$$ "secret-b-$$" >/dev/null || fail "register b"
ta=$(cli login clu_a$$ "secret-a-$$") || fail "login a"
tb=$(cli login clu_b$$ "secret-b-$$") || fail "login b"
conv=$(cli open "$ta" clu_b$$) || fail "open the direct chat"
# a says hello and is acked; b, on whichever node the balancer picks, has
# it from the shared store when its chat starts (resume from 0).
out=$(echo "hello through the cluster" | timeout 4 build/parley-cli --server "127.0.0.1:$lb" chat "$ta" "$conv" || true)
echo "$out" | grep -q "\[1\] sent" || fail "a's message was not acked: $out"
# b, connected meanwhile (resume from 0 gives it message 1), gets a's next
# message live, whichever nodes the balancer put them on: the nodes share
# who is connected where through Redis.
# (Its input stays open: at its end the client would quit.)
sleep 7 | timeout 6 build/parley-cli --server "127.0.0.1:$lb" chat "$tb" "$conv" >"$PARLEY_CLUSTER_DIR/b.out" 2>&1 &
bpid=$!
for i in $(seq 50); do grep -q "\[1\] them:" "$PARLEY_CLUSTER_DIR/b.out" 2>/dev/null && break; sleep 0.1; done
grep -q "\[1\] them: hello through the cluster" "$PARLEY_CLUSTER_DIR/b.out" || fail "b did not get message 1: $(cat "$PARLEY_CLUSTER_DIR/b.out")"
out=$(echo "live across nodes" | timeout 3 build/parley-cli --server "127.0.0.1:$lb" chat "$ta" "$conv" || true)
echo "$out" | grep -q "\[2\] sent" || fail "a's second message was not acked: $out"
wait "$bpid" || true
grep -q "\[2\] them: live across nodes" "$PARLEY_CLUSTER_DIR/b.out" || fail "b did not get message 2 live: $(cat "$PARLEY_CLUSTER_DIR/b.out")"
# b finds a's first message by a word, through the balancer, whichever
# node answers (the index is PostgreSQL's). Plain HTTP over bash's
# /dev/tcp: no curl on a fresh machine.
found=$(exec 3<>"/dev/tcp/127.0.0.1/$lb" &&
	printf 'GET /api/v1/search?q=cluster HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer %s\r\nConnection: close\r\n\r\n' "$tb" >&3 &&
	timeout 5 cat <&3) || true
echo "$found" | grep -q '"body":"hello through the cluster"' || fail "b's search did not find message 1: $found"
echo "$found" | grep -q '{"text":"cluster","match":true}' || fail "the search's snippet does not mark the word: $found"

scripts/cluster down >/dev/null 2>&1 || fail "down failed"
trap - EXIT
rm -rf "$PARLEY_CLI_STATE"
[ ! -e "$PARLEY_CLUSTER_DIR" ] || fail "down left $PARLEY_CLUSTER_DIR"
for p in $(seq $((lb)) $((lb + 53))); do
	if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then fail "port $p still answers after down"; fi
done
echo "cluster.sh: up, status, sign-ups through the balancer and down all work"
