/* unit_natsserver.c - the tests' throwaway NATS JetStream cluster
 * (natsserver.h) by itself: one server and three start with JetStream
 * ready for streams of as many replicas; a three-server cluster keeps
 * acknowledging publishes with one server killed, and the server
 * restarted rejoins and catches up; stopping leaves nothing behind; and a
 * test process that ends without stopping its cluster (a plain exit, a
 * fatal signal, SIGKILL) still leaves no nats-server running and no
 * directory. Needs nats-server: without it it fails, saying what to
 * install.
 *
 * The tests that fork run first, before this process has used libnats
 * (natsserver.h: a child forked after that must not use it). */
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>

#include <cmocka.h>
#include <nats/nats.h>

#include "natsserver.h"
#include "tmpserver.h"

static int exists(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0;
}

/* 1 when nothing accepts a connection on the port. */
static int refused(int port)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((unsigned short)port),
	                        .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	int fd = socket(AF_INET, SOCK_STREAM, 0), r;

	assert_true(fd >= 0);
	r = connect(fd, (struct sockaddr *)&a, sizeof a) < 0;
	close(fd);
	return r;
}

/* The port of "nats://127.0.0.1:P". */
static int url_port(const char *url)
{
	const char *colon = strrchr(url, ':');

	return colon ? atoi(colon + 1) : -1;
}

/* A connection to every server of the cluster that reconnects to
 * another when its server goes, and its JetStream context. */
static natsConnection *connect_js(const natscluster_t *nc, jsCtx **js)
{
	const char *servers[NATSCLUSTER_MAX];
	natsConnection *conn = NULL;
	natsOptions *opts = NULL;
	natsStatus s;
	int i;

	for (i = 0; i < natscluster_size(nc); i++)
		servers[i] = natscluster_url(nc, i);
	assert_int_equal(natsOptions_Create(&opts), NATS_OK);
	assert_int_equal(natsOptions_SetServers(opts, servers, natscluster_size(nc)), NATS_OK);
	assert_int_equal(natsOptions_SetTimeout(opts, 1000), NATS_OK);
	assert_int_equal(natsOptions_SetReconnectWait(opts, 50), NATS_OK);
	assert_int_equal(natsOptions_SetMaxReconnect(opts, -1), NATS_OK);
	s = natsConnection_Connect(&conn, opts);
	natsOptions_Destroy(opts);
	if (s != NATS_OK)
		fail_msg("connect to %s: %s", natscluster_urls(nc), natsStatus_GetText(s));
	assert_int_equal(natsConnection_JetStream(js, conn, NULL), NATS_OK);
	return conn;
}

static void add_stream(jsCtx *js, const char *name, const char *subject, int replicas)
{
	const char *subjects[] = {subject};
	jsStreamInfo *si = NULL;
	jsStreamConfig cfg;
	jsErrCode jerr = 0;
	natsStatus s;

	jsStreamConfig_Init(&cfg);
	cfg.Name = name;
	cfg.Subjects = subjects;
	cfg.SubjectsLen = 1;
	cfg.Storage = js_FileStorage;
	cfg.Replicas = replicas;
	s = js_AddStream(&si, js, &cfg, NULL, &jerr);
	if (s != NATS_OK)
		fail_msg("js_AddStream %s (replicas %d): %s (%d)", name, replicas, natsStatus_GetText(s),
		         (int)jerr);
	assert_int_equal(si->Config->Replicas, replicas);
	jsStreamInfo_Destroy(si);
}

/* Publishes data on subject and returns the sequence number of its ack,
 * retrying for up to ms (while the client finds another server). */
static uint64_t publish_acked(jsCtx *js, const char *subject, const char *data, int ms)
{
	long long deadline = tmpserver_now_ms() + ms;
	jsPubOptions po;
	jsPubAck *ack = NULL;
	jsErrCode jerr = 0;
	natsStatus s;
	uint64_t seq;

	jsPubOptions_Init(&po);
	po.MaxWait = 1000;
	po.MsgId = data; /* a retry of a publish that did land is not stored twice */
	while ((s = js_Publish(&ack, js, subject, data, (int)strlen(data), &po, &jerr)) != NATS_OK) {
		if (tmpserver_now_ms() > deadline)
			fail_msg("js_Publish %s: %s (%d)", subject, natsStatus_GetText(s), (int)jerr);
		tmpserver_nap(20);
	}
	seq = ack->Sequence;
	jsPubAck_Destroy(ack);
	return seq;
}

/* The index of the server named "nI". */
static int index_of(const char *name)
{
	return name && name[0] == 'n' ? atoi(name + 1) - 1 : -1;
}

static void test_one_server(void **state)
{
	natscluster_t *nc;
	natsConnection *conn;
	jsCtx *js;
	char dir[160];

	(void)state;
	assert_null(natscluster_start(0));
	assert_null(natscluster_start(NATSCLUSTER_MAX + 1));
	nc = natscluster_start(1);
	assert_non_null(nc);
	assert_int_equal(natscluster_size(nc), 1);
	assert_string_equal(natscluster_urls(nc), natscluster_url(nc, 0));
	assert_null(natscluster_url(nc, 1));
	assert_true(natscluster_alive(nc, 0));
	assert_int_equal(natscluster_meta_leader(nc), 0);
	snprintf(dir, sizeof dir, "%s", natscluster_dir(nc));
	conn = connect_js(nc, &js);
	add_stream(js, "PARLEY_ONE", "parley.one", 1);
	assert_int_equal(publish_acked(js, "parley.one", "m1", 2000), 1);
	assert_int_equal(publish_acked(js, "parley.one", "m2", 2000), 2);
	jsCtx_Destroy(js);
	natsConnection_Destroy(conn);
	natscluster_stop(nc);
	assert_false(exists(dir));
	natscluster_stop(NULL);
}

static void test_three_servers_survive_one(void **state)
{
	natscluster_t *nc;
	natsConnection *conn;
	jsStreamInfo *si = NULL;
	jsErrCode jerr = 0;
	jsCtx *js;
	char dir[160], url[48], urls[160];
	int i, victim, stream_leader, meta_leader, ports[3];
	pid_t pids[3];
	long long deadline;

	(void)state;
	nc = natscluster_start(3);
	assert_non_null(nc);
	assert_int_equal(natscluster_size(nc), 3);
	urls[0] = 0;
	for (i = 0; i < 3; i++) {
		assert_true(natscluster_alive(nc, i));
		ports[i] = url_port(natscluster_url(nc, i));
		pids[i] = natscluster_pid(nc, i);
		assert_true(ports[i] > 0 && pids[i] > 0);
		snprintf(url, sizeof url, "nats://127.0.0.1:%d", ports[i]);
		assert_string_equal(natscluster_url(nc, i), url);
		snprintf(urls + strlen(urls), sizeof urls - strlen(urls), "%s%s", i ? "," : "", url);
	}
	assert_string_equal(natscluster_urls(nc), urls);
	snprintf(dir, sizeof dir, "%s", natscluster_dir(nc));

	conn = connect_js(nc, &js);
	add_stream(js, "PARLEY_LOG", "parley.log", 3);
	assert_int_equal(publish_acked(js, "parley.log", "before", 5000), 1);
	assert_int_equal(js_GetStreamInfo(&si, js, "PARLEY_LOG", NULL, &jerr), NATS_OK);
	assert_non_null(si->Cluster);
	assert_int_equal(si->Cluster->ReplicasLen, 2);
	stream_leader = index_of(si->Cluster->Leader);
	jsStreamInfo_Destroy(si);
	meta_leader = natscluster_meta_leader(nc);
	assert_true(stream_leader >= 0 && stream_leader < 3);
	assert_true(meta_leader >= 0 && meta_leader < 3);
	/* A follower of both: its loss costs no election (~3 s each here),
	 * only its share of the quorum. */
	for (victim = 0; victim == stream_leader || victim == meta_leader; victim++)
		;

	assert_int_equal(natscluster_kill(nc, victim), 0);
	assert_false(natscluster_alive(nc, victim));
	assert_int_equal(natscluster_pid(nc, victim), 0);
	assert_true(tmpserver_pid_gone(pids[victim], "nats-server"));
	assert_true(refused(ports[victim]));
	assert_int_equal(natscluster_kill(nc, victim), -1);
	/* Two of three still make a quorum: every publish is acknowledged. */
	assert_int_equal(publish_acked(js, "parley.log", "during-1", 10000), 2);
	assert_int_equal(publish_acked(js, "parley.log", "during-2", 10000), 3);
	assert_int_equal(natscluster_restart(nc, (victim + 1) % 3), -1); /* it runs */

	assert_int_equal(natscluster_restart(nc, victim), 0);
	assert_true(natscluster_alive(nc, victim));
	assert_int_equal(url_port(natscluster_url(nc, victim)), ports[victim]);
	/* Back in the stream's group, and caught up: every replica current. */
	deadline = tmpserver_now_ms() + 10000;
	for (;;) {
		int current = 0;
		assert_int_equal(js_GetStreamInfo(&si, js, "PARLEY_LOG", NULL, &jerr), NATS_OK);
		for (i = 0; i < si->Cluster->ReplicasLen; i++)
			current += si->Cluster->Replicas[i]->Current && !si->Cluster->Replicas[i]->Offline;
		assert_int_equal(si->State.Msgs, 3);
		jsStreamInfo_Destroy(si);
		if (current == 2)
			break;
		if (tmpserver_now_ms() > deadline)
			fail_msg("server n%d rejoined but its replica is not current", victim + 1);
		tmpserver_nap(50);
	}
	assert_int_equal(publish_acked(js, "parley.log", "after", 5000), 4);
	jsCtx_Destroy(js);
	natsConnection_Destroy(conn);

	for (i = 0; i < 3; i++)
		pids[i] = natscluster_pid(nc, i);
	natscluster_stop(nc);
	assert_false(exists(dir));
	for (i = 0; i < 3; i++) {
		assert_true(tmpserver_pid_gone(pids[i], "nats-server"));
		assert_true(refused(ports[i]));
	}
}

/* How the child of process_ends leaves. */
enum { END_EXIT, END_SIGTERM, END_SIGKILL };

/* A child process starts a cluster of n, tells us where, and ends the
 * given way without stopping it: every server must go, and the
 * directory. A plain exit stops them before the process is gone
 * (atexit); a fatal signal kills them at once (the handler); SIGKILL
 * leaves them to the watchdog. */
static void process_ends(int n, int how)
{
	struct {
		int ports[NATSCLUSTER_MAX];
		pid_t pids[NATSCLUSTER_MAX];
		char dir[160];
	} where;
	int p[2], status, i, left;
	long long deadline;
	pid_t pid;

	assert_int_equal(pipe(p), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		natscluster_t *nc = natscluster_start(n);
		close(p[0]);
		memset(&where, 0, sizeof where);
		if (nc) {
			for (i = 0; i < n; i++) {
				where.ports[i] = url_port(natscluster_url(nc, i));
				where.pids[i] = natscluster_pid(nc, i);
			}
			snprintf(where.dir, sizeof where.dir, "%s", natscluster_dir(nc));
		}
		if (write(p[1], &where, sizeof where) != (ssize_t)sizeof where || !nc)
			_exit(3);
		switch (how) {
		case END_EXIT:
			exit(0);
		case END_SIGTERM:
			raise(SIGTERM);
			break;
		case END_SIGKILL:
			raise(SIGKILL);
			break;
		}
		_exit(4);
	}
	close(p[1]);
	assert_int_equal(read(p[0], &where, sizeof where), (ssize_t)sizeof where);
	close(p[0]);
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	for (i = 0; i < n; i++)
		assert_true(where.ports[i] > 0 && where.pids[i] > 0);
	if (how == END_EXIT)
		assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	else
		assert_true(WIFSIGNALED(status));
	/* After an exit, stopped before the process was gone; otherwise the
	 * watchdog needs a moment: poll for its end. */
	deadline = tmpserver_now_ms() + (how == END_EXIT ? 0 : 10000);
	for (;;) {
		left = exists(where.dir);
		for (i = 0; i < n; i++)
			left += !tmpserver_pid_gone(where.pids[i], "nats-server") || !refused(where.ports[i]);
		if (!left)
			break;
		if (tmpserver_now_ms() > deadline)
			fail_msg("the nats-servers of a dead test process are still there (%s)", where.dir);
		tmpserver_nap(10);
	}
}

static void test_sigkill_leaves_it_to_the_watchdog(void **state)
{
	(void)state;
	process_ends(3, END_SIGKILL);
}

static void test_fatal_signal_stops_it(void **state)
{
	(void)state;
	process_ends(1, END_SIGTERM);
}

static void test_exit_stops_it(void **state)
{
	(void)state;
	process_ends(1, END_EXIT);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		/* Forking first: see the top of the file. */
		cmocka_unit_test(test_sigkill_leaves_it_to_the_watchdog),
		cmocka_unit_test(test_fatal_signal_stops_it),
		cmocka_unit_test(test_exit_stops_it),
		cmocka_unit_test(test_one_server),
		cmocka_unit_test(test_three_servers_survive_one),
	};
	int failed;

	/* What is tested is that nothing is left behind. */
	unsetenv("NATSSERVER_KEEP");
	/* A missing binary fails every test; say why once, up front. */
	if (!natscluster_bin())
		return 1;
	failed = cmocka_run_group_tests_name("unit_natsserver", tests, NULL, NULL);
	/* libnats' threads and memory, for the leak checker. */
	nats_CloseAndWait(5000);
	return failed;
}
