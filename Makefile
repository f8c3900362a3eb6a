# Parley: one Makefile. `make` builds build/parley; `make run` and
# `make test` first install missing Debian packages (scripts/deps.sh).
#
# Variants build into their own folders: the plain build in build/, the
# AddressSanitizer + UndefinedBehaviorSanitizer build in build/asan/ (SAN=1),
# fuzzers in build/fuzz/.

CC ?= cc
BUILD ?= build
SAN ?=
PKGS := sqlite3 jansson libcrypto libsodium libpq hiredis libnats libcurl
TEST_PKGS := cmocka

LISTEN ?= 127.0.0.1:8080
DATA ?= parley-data
FUZZ_SECONDS ?= 30

OPT := -O2
SANFLAGS :=
ifeq ($(SAN),1)
OPT := -O1
SANFLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
endif

CFLAGS := -std=c11 -D_GNU_SOURCE -Wall -Wextra -g $(OPT) -pthread $(SANFLAGS) -MMD -MP \
          $(shell pkg-config --cflags $(PKGS) 2>/dev/null) $(EXTRA_CFLAGS)
LDFLAGS := -pthread $(SANFLAGS)
LDLIBS := $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lm
TEST_LIBS := $(shell pkg-config --libs $(TEST_PKGS) 2>/dev/null)

LIB_SRC := $(filter-out src/main.c,$(wildcard src/*.c))
LIB_OBJ := $(LIB_SRC:%.c=$(BUILD)/obj/%.o)
CLIENT_OBJ := $(BUILD)/obj/client/pclient.o
UNIT_TESTS := $(patsubst tests/%.c,$(BUILD)/tests/%,$(wildcard tests/unit_*.c))
INTEG_TESTS := $(patsubst tests/%.c,$(BUILD)/tests/%,$(wildcard tests/integ_*.c))

# The tests' throwaway servers, each with what they share (tests/tmpserver.h):
# PostgreSQL (tests/pgserver.h), Redis (tests/redisserver.h) and a NATS
# JetStream cluster (tests/natsserver.h).
TMPSERVER_OBJ := $(BUILD)/obj/tests/tmpserver.o
PGSERVER_OBJ := $(BUILD)/obj/tests/pgserver.o $(TMPSERVER_OBJ)
REDISSERVER_OBJ := $(BUILD)/obj/tests/redisserver.o $(TMPSERVER_OBJ)
NATSSERVER_OBJ := $(BUILD)/obj/tests/natsserver.o $(TMPSERVER_OBJ)

# Keep the test objects: they are intermediate to the pattern rules.
.SECONDARY:

.PHONY: all deps deps-test run test build-clang check check-plain check-asan check-pg check-pg-plain check-pg-asan \
        check-web check-cluster fuzz fuzz-build fuzz-smoke bench bench-smoke clean

all: $(BUILD)/parley $(BUILD)/parley-cli $(BUILD)/parley-bench $(BUILD)/bench-relay

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Isrc -Iclient -c $< -o $@

$(BUILD)/libparley.a: $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/parley: $(BUILD)/obj/src/main.o $(BUILD)/libparley.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/parley-cli: $(BUILD)/obj/client/cli.o $(CLIENT_OBJ) $(BUILD)/libparley.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/parley-bench: $(BUILD)/obj/bench/parley_bench.o $(CLIENT_OBJ) $(PGSERVER_OBJ) $(BUILD)/obj/tests/redisserver.o $(BUILD)/obj/tests/natsserver.o $(BUILD)/obj/tests/haproxyserver.o $(BUILD)/libparley.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/bench-relay: $(BUILD)/obj/bench/relay.o
	$(CC) $(LDFLAGS) -o $@ $^

$(BUILD)/tests/unit_%: $(BUILD)/obj/tests/unit_%.o $(BUILD)/libparley.a
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS) $(TEST_LIBS)

# The tests that start a throwaway PostgreSQL (tests/pgserver.h): the
# store's and the writer's own, and through the harness every
# integration suite; and those that start a Redis or a NATS cluster.
$(BUILD)/tests/unit_store $(BUILD)/tests/unit_store_pg $(BUILD)/tests/unit_writer $(BUILD)/tests/unit_pgserver: $(PGSERVER_OBJ)
$(BUILD)/tests/unit_redisserver $(BUILD)/tests/unit_redis $(BUILD)/tests/unit_bus $(BUILD)/tests/unit_bus_redis: $(REDISSERVER_OBJ)
$(BUILD)/tests/unit_natsserver $(BUILD)/tests/unit_eventlog $(BUILD)/tests/unit_dispatch: $(NATSSERVER_OBJ)
$(BUILD)/tests/integ_fleet: $(REDISSERVER_OBJ)
$(BUILD)/tests/integ_outbox: $(NATSSERVER_OBJ)
$(BUILD)/tests/integ_dispatch: $(NATSSERVER_OBJ) $(BUILD)/obj/tests/redisserver.o
$(BUILD)/tests/integ_haproxy: $(BUILD)/obj/tests/haproxyserver.o
$(BUILD)/tests/integ_failover: $(REDISSERVER_OBJ) $(NATSSERVER_OBJ) $(BUILD)/obj/tests/haproxyserver.o
$(BUILD)/tests/integ_pushsend: $(BUILD)/obj/tests/pushfakes.o
$(BUILD)/tests/integ_pushcluster: $(BUILD)/obj/tests/pushfakes.o $(NATSSERVER_OBJ) $(BUILD)/obj/tests/redisserver.o

$(BUILD)/tests/integ_%: $(BUILD)/obj/tests/integ_%.o $(BUILD)/obj/tests/harness.o $(PGSERVER_OBJ) $(CLIENT_OBJ) $(BUILD)/libparley.a
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS) $(TEST_LIBS)

deps:
	@scripts/deps.sh build

deps-test:
	@scripts/deps.sh test

run: deps
	@$(MAKE) --no-print-directory $(BUILD)/parley $(BUILD)/parley-cli
	./$(BUILD)/parley serve --listen $(LISTEN) --data $(DATA)

# Every test, plain and under ASan+UBSan, on SQLite and (once the build
# has a PostgreSQL backend) on PostgreSQL, then each fuzzer for a moment.
test: deps-test
	@$(MAKE) --no-print-directory build-clang
	@$(MAKE) --no-print-directory check-plain
	@$(MAKE) --no-print-directory check-asan
	@$(MAKE) --no-print-directory check-pg-plain
	@$(MAKE) --no-print-directory check-pg-asan
	@$(MAKE) --no-print-directory check-web
	@$(MAKE) --no-print-directory check-cluster
	@$(MAKE) --no-print-directory fuzz-smoke
	@$(MAKE) --no-print-directory bench-smoke
	@echo "make test: all passed"

# Everything compiles warning-free under clang too (gcc's warnings show in
# the runs below).
build-clang:
	@$(MAKE) --no-print-directory CC=clang BUILD=build/clang EXTRA_CFLAGS=-Werror \
		all $(patsubst build/%,build/clang/%,$(UNIT_TESTS) $(INTEG_TESTS))
	@echo "build-clang: warning-free"

check-plain:
	@$(MAKE) --no-print-directory check BUILD=build

check-asan:
	@$(MAKE) --no-print-directory check BUILD=build/asan SAN=1

# Runs the unit and integration tests of one build variant. unit_store
# runs its list on every backend the build has (PostgreSQL on a throwaway
# server of its own).
check: $(BUILD)/parley $(BUILD)/parley-cli $(UNIT_TESTS) $(INTEG_TESTS)
	@scripts/run-tests.sh $(BUILD) $(UNIT_TESTS) $(INTEG_TESTS)

# The integration suites again, each server on a fresh database of a
# throwaway PostgreSQL (PARLEY_TEST_STORE=postgresql, tests/harness.h),
# when the variant's parley has a PostgreSQL backend; until then they say
# they are skipped. Run them by hand on one suite with, e.g.,
#   PARLEY_TEST_STORE=postgresql build/tests/integ_chat
check-pg-plain:
	@$(MAKE) --no-print-directory check-pg BUILD=build

check-pg-asan:
	@$(MAKE) --no-print-directory check-pg BUILD=build/asan SAN=1

check-pg: $(BUILD)/parley $(BUILD)/parley-cli $(INTEG_TESTS)
	@scripts/run-tests-pg.sh $(BUILD) $(INTEG_TESTS)

# scripts/cluster up, used through its balancer, status, down: every
# part real (PostgreSQL, Redis, NATS, the nodes, HAProxy) on loopback.
check-cluster: build/parley build/parley-cli
	@tests/cluster.sh

# The web client in Debian's Chromium, driven by playwright-core (npm,
# pinned in package-lock.json); screenshots land in build/web-test/.
node_modules/.package-lock.json: package.json package-lock.json
	npm ci --no-audit --no-fund
	@touch $@

check-web: build/parley node_modules/.package-lock.json
	@PARLEY_BIN=build/parley node --test --test-timeout=180000 --test-reporter=spec tests/web/
	@echo "check-web: passed (screenshots in build/web-test/)"

# libFuzzer targets (clang): the HTTP parser, the WebSocket frame parser, the
# web files answered for any parsed request, and the PROXY protocol, address
# list and X-Forwarded-For parsers, the envelopes between nodes; and, against a whole node started in the
# fuzzer's process (fuzz/node.c), the WebSocket frame handlers (fuzz_frames)
# and the REST handlers (fuzz_api).
FUZZ_CFLAGS := -std=c11 -D_GNU_SOURCE -g -O1 -fsanitize=fuzzer,address,undefined -Isrc \
               $(shell pkg-config --cflags libcrypto 2>/dev/null)
FUZZ_LIBS := $(shell pkg-config --libs libcrypto 2>/dev/null)
FUZZ_TARGETS := build/fuzz/fuzz_http build/fuzz/fuzz_ws build/fuzz/fuzz_webfiles build/fuzz/fuzz_proxy \
                build/fuzz/fuzz_frames build/fuzz/fuzz_api build/fuzz/fuzz_envelope build/fuzz/fuzz_spends \
                build/fuzz/fuzz_search

# The node targets link every module but main.c, so modules added to src/
# are fuzzed too; the objects are built once for both, with the fuzzers'
# sanitizers and coverage.
FUZZ_NODE_CFLAGS := $(FUZZ_CFLAGS) -Wall -Wextra -pthread -Iclient -MMD -MP \
                    $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
FUZZ_NODE_LIBS := $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lm -pthread
FUZZ_NODE_OBJ := $(patsubst %.c,build/fuzz/obj/%.o,$(LIB_SRC) client/pclient.c fuzz/node.c)

build/fuzz/obj/%.o: %.c
	@mkdir -p $(dir $@)
	clang $(FUZZ_NODE_CFLAGS) -c $< -o $@

build/fuzz/fuzz_frames build/fuzz/fuzz_api: build/fuzz/%: build/fuzz/obj/fuzz/%.o $(FUZZ_NODE_OBJ)
	@mkdir -p $(dir $@)
	clang $(FUZZ_CFLAGS) -o $@ $^ $(FUZZ_NODE_LIBS)

build/fuzz/fuzz_http: fuzz/fuzz_http.c src/http.c src/sbuf.c src/jbuf.c
	@mkdir -p $(dir $@)
	clang $(FUZZ_CFLAGS) -o $@ $^ $(FUZZ_LIBS)

build/fuzz/fuzz_ws: fuzz/fuzz_ws.c src/ws.c src/utf8.c src/sbuf.c
	@mkdir -p $(dir $@)
	clang $(FUZZ_CFLAGS) -o $@ $^ $(FUZZ_LIBS)

build/fuzz/fuzz_webfiles: fuzz/fuzz_webfiles.c src/webfiles.c src/http.c src/sbuf.c src/jbuf.c src/log.c
	@mkdir -p $(dir $@)
	clang $(FUZZ_CFLAGS) -o $@ $^ $(FUZZ_LIBS)

build/fuzz/fuzz_proxy: fuzz/fuzz_proxy.c src/clientaddr.c src/http.c src/sbuf.c src/jbuf.c
	@mkdir -p $(dir $@)
	clang $(FUZZ_CFLAGS) -o $@ $^ $(FUZZ_LIBS)

build/fuzz/fuzz_envelope: fuzz/fuzz_envelope.c src/bus_envelope.c
	@mkdir -p $(dir $@)
	clang $(FUZZ_CFLAGS) -o $@ $^ $(FUZZ_LIBS)

build/fuzz/fuzz_spends: fuzz/fuzz_spends.c src/spends.c src/budget.c src/ratelimit.c
	@mkdir -p $(dir $@)
	clang $(FUZZ_CFLAGS) -o $@ $^ $(FUZZ_LIBS) -lsodium -lm

build/fuzz/fuzz_search: fuzz/fuzz_search.c src/search.c src/utf8.c src/jbuf.c
	@mkdir -p $(dir $@)
	clang $(FUZZ_CFLAGS) -o $@ $^ $(FUZZ_LIBS) -ljansson

fuzz-build: $(FUZZ_TARGETS)

fuzz: deps-test
	@$(MAKE) --no-print-directory fuzz-build
	@scripts/run-fuzz.sh $(FUZZ_SECONDS) $(FUZZ_TARGETS)

# Replays every seed and every committed corpus input once, then fuzzes
# each target for a few seconds, from the seeds and corpus alone.
fuzz-smoke: fuzz-build
	@scripts/run-fuzz.sh replay $(FUZZ_TARGETS)
	@FUZZ_SCRATCH=1 scripts/run-fuzz.sh 5 $(FUZZ_TARGETS)

# The benchmark suite: each scenario beside the physical baseline, in one
# run. BENCH_CONNECTIONS sizes the idle scenario: the server holds them all
# and may open at most 20,000 files here; two client processes share them.
BENCH_CONNECTIONS ?= 19000

bench: deps
	@$(MAKE) --no-print-directory build/parley build/parley-bench build/bench-relay
	build/parley-bench idle --connections $(BENCH_CONNECTIONS)
	build/parley-bench direct --pairs 50 --rate 2000 --seconds 5
	build/parley-bench direct --find-max 5 --pairs 50
	build/parley-bench direct --throughput 5 --pairs 50 --window 12 --store both
	build/parley-bench history --clients 4 --seconds 5
	build/parley-bench resume --clients 200
	build/parley-bench group --members 1024 --online 800 --messages 30 --batch 10 --throughput 5
	build/parley-bench fleet --pairs 50 --rate 2000 --seconds 5
	build/parley-bench log --rate 1000 --seconds 5
	build/parley-bench log --rate 1000 --seconds 5 --publish-only
	build/parley-bench failover --clients 19000
	build/parley-bench abuse --seconds 10

# make test runs the tool once at a tiny size: it must work and report a
# figure, not a fast one. abuse exits non-zero when the bystander was not
# served at all in some phase, failover when a client did not come back
# or resumed short (their JSON goes to a file so that the exit status is
# not lost in a pipe).
bench-smoke: build/parley build/parley-bench build/bench-relay
	@build/parley-bench idle --connections 200 --processes 2 --json \
		| grep -q '"client_processes":2},"figures":{"parley_user_bytes_per_conn":-\?[0-9]' \
		&& echo "bench-smoke: parley-bench idle works"
	@build/parley-bench history --clients 1 --seconds 1 --json | grep -q '"pages_per_second":[1-9]' \
		&& echo "bench-smoke: parley-bench history works"
	@build/parley-bench resume --clients 5 --json | grep -q '"resume_p50_ms":[0-9]' \
		&& echo "bench-smoke: parley-bench resume works"
	@build/parley-bench direct --pairs 2 --rate 50 --seconds 1 --json | grep -q '"cpu_us_per_message":[0-9]' \
		&& echo "bench-smoke: parley-bench direct works"
	@build/parley-bench direct --throughput 1 --pairs 2 --window 4 --store postgresql --json \
		| grep '"acks_per_s":[1-9]' | grep -q '"relay_deliveries_per_s":[1-9]' \
		&& echo "bench-smoke: parley-bench direct --throughput works (on PostgreSQL)"
	@build/parley-bench group --members 8 --online 6 --messages 2 --batch 1 --throughput 1 --json \
		| grep '"throughput_deliveries_per_s":[1-9]' | grep -q '"relay_cpu_us_per_delivery":[0-9.]*[1-9]' \
		&& echo "bench-smoke: parley-bench group works"
	@build/parley-bench log --rate 100 --seconds 1 --json | grep -q '"handled":100,.*"servers_cpu_us_per_event":[1-9]' \
		&& echo "bench-smoke: parley-bench log works"
	@build/parley-bench fleet --pairs 2 --rate 50 --seconds 1 --json | grep '"cross_deliver_p99_ms":[0-9]' \
		| grep -q '"cross_publishes_per_message":[0-9]' && echo "bench-smoke: parley-bench fleet works"
	@build/parley-bench failover --clients 200 --json > build/bench-smoke-failover.json \
		&& grep -q '"recovered_all_ms":[0-9]*,"recovered":200,' build/bench-smoke-failover.json \
		&& echo "bench-smoke: parley-bench failover works (all 200 clients back and resumed)"
	@build/parley-bench abuse --seconds 1 --quick --json > build/bench-smoke-abuse.json \
		&& grep -q '"baseline_again":{"login_n":[1-9]' build/bench-smoke-abuse.json \
		&& echo "bench-smoke: parley-bench abuse works (the bystander was served in every phase)"

clean:
	rm -rf build

-include $(shell find $(BUILD)/obj build/fuzz/obj -name '*.d' 2>/dev/null)
