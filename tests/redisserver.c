/* redisserver.c - the throwaway Redis of redisserver.h.
 *
 * redis-server runs as a child of the test process, configured on its
 * command line alone (no redis.conf: nothing of the system's redis is
 * read), its log on stdout into dir/redis.log. Readiness is a PING
 * answered through hiredis, never a sleep; a redis-server that cannot
 * bind its port exits at once, saying so in the log, and start() tries
 * another port. Ports, the process, the watchdog and the cleanup at exit
 * or on a fatal signal are tmpserver.h's. */
#include "redisserver.h"
#include "tmpserver.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sys/time.h>

#include <hiredis.h>

#define REDIS_START_TRIES 8   /* ports tried before giving up on a clash */
#define REDIS_READY_MS 10000  /* from exec to PONG; it takes ~5 ms here */
#define REDIS_STOP_MS 2000    /* SIGTERM's grace before SIGKILL */

#define INSTALL_HINT                                                    \
	"  Run: sudo apt-get install -y redis-server\n"                 \
	"  (or, as root: scripts/deps.sh test). Elsewhere, point\n"     \
	"  PARLEY_REDIS_SERVER at the redis-server binary.\n"

struct redisserver {
	char dir[128];  /* the temporary directory, redis's working directory */
	char log[160];  /* dir/redis.log */
	char url[64];
	char port_arg[16];
	int port;
	int slot;       /* in tmpserver's registry; -1: none */
	pid_t pid;      /* 0: not running */
	tmpserver_watchdog_t watchdog;
};

static char bin[512];

const char *redisserver_bin(void)
{
	if (bin[0] || tmpserver_server_bin("redisserver", "PARLEY_REDIS_SERVER", "redis-server", INSTALL_HINT,
	                                   bin, sizeof bin) == 0)
		return bin;
	return NULL;
}

/* 1 when a PING on the port is answered PONG within timeout_ms. */
static int pong(int port, int timeout_ms)
{
	struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
	redisContext *c = redisConnectWithTimeout("127.0.0.1", port, tv);
	redisReply *r;
	int ok = 0;

	if (!c)
		return 0;
	if (!c->err && redisSetTimeout(c, tv) == REDIS_OK && (r = redisCommand(c, "PING"))) {
		ok = r->type == REDIS_REPLY_STATUS && !strcmp(r->str, "PONG");
		freeReplyObject(r);
	}
	redisFree(c);
	return ok;
}

int redisserver_alive(const redisserver_t *rs)
{
	return rs->pid > 0 && tmpserver_running(rs->pid) == 1 && pong(rs->port, 2000);
}

/* Tells the fatal-signal handler and the watchdog the current pid. */
static void publish_pid(redisserver_t *rs)
{
	tmpserver_set_pid(rs->slot, 0, rs->pid, SIGKILL);
	tmpserver_watchdog_pids(&rs->watchdog, &rs->pid, 1);
}

/* The process has ended (unreaped): forget it, then reap it. */
static void forget_pid(redisserver_t *rs)
{
	pid_t pid = rs->pid;

	rs->pid = 0;
	publish_pid(rs);
	tmpserver_wait(pid);
}

/* Starts redis-server on rs->port; returns once it answers PING. 0, 1
 * when the port was taken (a retry may help), -1 on another failure. */
static int start_on_port(redisserver_t *rs)
{
	/* save "" and appendonly no: nothing written, so a restart is empty
	 * and the disk is never waited on. */
	const char *argv[] = {bin, "--port", rs->port_arg, "--bind", "127.0.0.1", "--dir", rs->dir,
	                      "--save", "", "--appendonly", "no", "--daemonize", "no",
	                      "--logfile", "", NULL};
	long long deadline;

	snprintf(rs->port_arg, sizeof rs->port_arg, "%d", rs->port);
	if ((rs->pid = tmpserver_spawn("redisserver", argv, NULL, rs->dir, rs->log)) < 0) {
		rs->pid = 0;
		return -1;
	}
	publish_pid(rs);
	deadline = tmpserver_now_ms() + REDIS_READY_MS;
	while (!pong(rs->port, 500)) {
		if (tmpserver_running(rs->pid) != 1) {
			forget_pid(rs);
			return tmpserver_file_has(rs->log, "Address already in use") ? 1 : -1;
		}
		if (tmpserver_now_ms() > deadline) {
			fprintf(stderr, "redisserver: redis-server on port %d started but does not answer PING\n",
			        rs->port);
			return -1;
		}
		tmpserver_nap(5);
	}
	return 0;
}

/* The registry's stop function, at exit. */
static void stop_at_exit(void *rs)
{
	redisserver_stop(rs);
}

redisserver_t *redisserver_start(void)
{
	redisserver_t *rs;
	int tries, r;

	if (!redisserver_bin())
		return NULL;
	if (!(rs = calloc(1, sizeof *rs)))
		return NULL;
	rs->slot = -1;
	rs->watchdog.fd = -1;
	if (tmpserver_make_dir("redisserver", "redis", rs->dir, sizeof rs->dir) < 0) {
		free(rs);
		return NULL;
	}
	snprintf(rs->log, sizeof rs->log, "%s/redis.log", rs->dir);
	if ((rs->slot = tmpserver_register("redisserver", stop_at_exit, rs)) < 0 ||
	    tmpserver_watchdog_start_killer("redisserver", &rs->watchdog, rs->dir) < 0)
		goto err;
	for (tries = 0; tries < REDIS_START_TRIES; tries++) {
		if ((rs->port = tmpserver_free_port()) < 0) {
			fprintf(stderr, "redisserver: no free loopback port: %s\n", strerror(errno));
			goto err;
		}
		unlink(rs->log); /* this attempt's log only, for the clash test */
		if ((r = start_on_port(rs)) == 0)
			break;
		if (r < 0) {
			fprintf(stderr, "redisserver: redis-server did not start\n");
			tmpserver_show_tail("redisserver", "redis.log", rs->log);
			goto err;
		}
	}
	if (tries == REDIS_START_TRIES) {
		fprintf(stderr, "redisserver: every port tried was taken before redis-server bound it\n");
		goto err;
	}
	snprintf(rs->url, sizeof rs->url, "redis://127.0.0.1:%d", rs->port);
	return rs;
err:
	redisserver_stop(rs);
	return NULL;
}

const char *redisserver_url(const redisserver_t *rs)
{
	return rs->url;
}

int redisserver_port(const redisserver_t *rs)
{
	return rs->port;
}

const char *redisserver_dir(const redisserver_t *rs)
{
	return rs->dir;
}

pid_t redisserver_pid(const redisserver_t *rs)
{
	return rs->pid;
}

int redisserver_kill(redisserver_t *rs)
{
	if (rs->pid <= 0 || tmpserver_end(rs->pid, SIGKILL, 0) < 0) {
		fprintf(stderr, "redisserver: redisserver_kill: redis-server on port %d is not running\n",
		        rs->port);
		return -1;
	}
	forget_pid(rs);
	return 0;
}

int redisserver_restart(redisserver_t *rs)
{
	char path[200];
	int r;

	if (rs->pid > 0) {
		if (tmpserver_running(rs->pid) == 1) {
			fprintf(stderr, "redisserver: redisserver_restart: redis-server on port %d still runs\n",
			        rs->port);
			return -1;
		}
		forget_pid(rs); /* it died by itself */
	}
	/* Empty, as promised, even after a test's own SAVE. */
	snprintf(path, sizeof path, "%s/dump.rdb", rs->dir);
	unlink(path);
	snprintf(path, sizeof path, "%s/appendonlydir", rs->dir);
	tmpserver_remove_tree(path);
	if ((r = start_on_port(rs)) == 0)
		return 0;
	fprintf(stderr, "redisserver: redis-server did not start again on port %d%s\n", rs->port,
	        r > 0 ? " (someone else has taken the port)" : "");
	tmpserver_show_tail("redisserver", "redis.log", rs->log);
	return -1;
}

void redisserver_stop(redisserver_t *rs)
{
	if (!rs)
		return;
	/* SIGTERM: redis's own shutdown, which with nothing to save takes a
	 * tick of its clock (100 ms). */
	if (rs->pid > 0) {
		tmpserver_end(rs->pid, SIGTERM, REDIS_STOP_MS);
		forget_pid(rs);
	}
	if (rs->dir[0] && tmpserver_keep("REDISSERVER_KEEP"))
		fprintf(stderr, "redisserver: REDISSERVER_KEEP: kept %s (redis.log)\n", rs->dir);
	else if (rs->dir[0])
		tmpserver_remove_tree(rs->dir);
	tmpserver_watchdog_done(&rs->watchdog);
	tmpserver_unregister(rs->slot);
	free(rs);
}
