/* haproxyserver.c - the throwaway HAProxy of haproxyserver.h.
 *
 * It runs the deployment's own configuration, so that the tests check
 * what operators run: the listener, the runtime API's socket and the
 * nodes come in as the environment variables documented at the top of
 * deploy/haproxy.cfg. Readiness is the runtime API reporting every node
 * UP, never a sleep. */
#include "haproxyserver.h"
#include "tmpserver.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sys/socket.h>
#include <sys/un.h>

#define HAPROXY_START_TRIES 8
#define HAPROXY_READY_MS 20000   /* every node's first checks included */
#define HAPROXY_STOP_MS 3000

extern char **environ;

struct haproxyserver {
	char dir[128];
	char log[160];
	char sock[160];
	int port, nnodes;
	int slot;
	pid_t pid;
	tmpserver_watchdog_t watchdog;
};

static char bin[512];

static const char *haproxy_bin(void)
{
	if (bin[0] || tmpserver_server_bin("haproxyserver", "PARLEY_HAPROXY", "haproxy",
	                                   "  Run: sudo apt-get install -y haproxy (or, as root: scripts/deps.sh test)\n",
	                                   bin, sizeof bin) == 0)
		return bin;
	return NULL;
}

int haproxyserver_command(haproxyserver_t *h, const char *command, char *out, size_t cap)
{
	struct sockaddr_un a = {.sun_family = AF_UNIX};
	size_t got = 0, len = strlen(command);
	char line[512];
	int fd;
	ssize_t n;

	if (out && cap)
		out[0] = 0;
	if (len + 2 > sizeof line || strlen(h->sock) >= sizeof a.sun_path)
		return -1;
	memcpy(a.sun_path, h->sock, strlen(h->sock) + 1);
	if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0)
		return -1;
	if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) {
		close(fd);
		return -1;
	}
	snprintf(line, sizeof line, "%s\n", command);
	if (send(fd, line, len + 1, MSG_NOSIGNAL) != (ssize_t)(len + 1)) {
		close(fd);
		return -1;
	}
	/* The runtime API answers and closes (no "prompt" mode). */
	for (;;) {
		char buf[4096];
		if ((n = recv(fd, buf, sizeof buf, 0)) <= 0)
			break;
		if (out && got + 1 < cap) {
			size_t k = (size_t)n < cap - 1 - got ? (size_t)n : cap - 1 - got;
			memcpy(out + got, buf, k);
			got += k;
			out[got] = 0;
		}
	}
	close(fd);
	return n < 0 ? -1 : 0;
}

int haproxyserver_node_state(haproxyserver_t *h, int i)
{
	static char stat[65536];
	char name[8], *line, *save = NULL;
	int status_col = -1;

	if (haproxyserver_command(h, "show stat", stat, sizeof stat) < 0)
		return -1;
	snprintf(name, sizeof name, "n%d", i);
	for (line = strtok_r(stat, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		char *f, *fs = NULL;
		int col = 0, is_node = 0, state = -1;
		if (line[0] == '#') {
			/* "# pxname,svname,...": find the status column. */
			for (f = strtok_r(line + 2, ",", &fs); f; f = strtok_r(NULL, ",", &fs), col++)
				if (!strcmp(f, "status"))
					status_col = col;
			continue;
		}
		for (f = line; f && status_col >= 0; col++) {
			char *comma = strchr(f, ',');
			if (comma)
				*comma = 0;
			if (col == 0 && strcmp(f, "parley"))
				break;
			if (col == 1)
				is_node = !strcmp(f, name);
			if (col == status_col && is_node) {
				if (!strcmp(f, "UP"))
					state = 1;
				else if (!strcmp(f, "DRAIN") || !strcmp(f, "MAINT") || !strncmp(f, "MAINT", 5))
					state = 2;
				else if (!strcmp(f, "DOWN"))
					state = 0;
				else
					state = -2; /* on its way: "UP 1/3", "DOWN 1/2", ... */
				return state;
			}
			f = comma ? comma + 1 : NULL;
		}
	}
	return -1;
}

int haproxyserver_wait_node(haproxyserver_t *h, int i, int state, int ms)
{
	long long deadline = tmpserver_now_ms() + ms;

	while (haproxyserver_node_state(h, i) != state) {
		if (tmpserver_now_ms() > deadline || tmpserver_running(h->pid) != 1)
			return -1;
		tmpserver_nap(50);
	}
	return 0;
}

static void publish_pid(haproxyserver_t *h)
{
	tmpserver_set_pid(h->slot, 0, h->pid, SIGKILL);
	tmpserver_watchdog_pids(&h->watchdog, &h->pid, 1);
}

static void forget_pid(haproxyserver_t *h)
{
	pid_t pid = h->pid;

	h->pid = 0;
	publish_pid(h);
	tmpserver_wait(pid);
}

/* Starts haproxy on h->port. 0, 1 when the port was taken, -1. */
static int start_on_port(haproxyserver_t *h, const int *node_ports)
{
	const char *env = getenv("PARLEY_HAPROXY_CFG");
	char cfg[4096];
	const char *argv[] = {bin, "-db", "-f", cfg, NULL};
	char vars[2 + HAPROXYSERVER_MAX_NODES][200];
	const char **envp;
	size_t nenv = 0, k = 0;
	long long deadline;
	int i;

	/* haproxy runs in its own directory: the file by its full name. */
	if (!realpath(env && *env ? env : "deploy/haproxy.cfg", cfg)) {
		fprintf(stderr, "haproxyserver: %s: %s\n", env && *env ? env : "deploy/haproxy.cfg", strerror(errno));
		return -1;
	}
	while (environ[nenv])
		nenv++;
	if (!(envp = calloc(nenv + 3 + HAPROXYSERVER_MAX_NODES, sizeof *envp)))
		return -1;
	for (i = 0; environ[i]; i++)
		if (strncmp(environ[i], "PARLEY_NODE", 11) && strncmp(environ[i], "PARLEY_LB_", 10))
			envp[k++] = environ[i];
	snprintf(vars[0], sizeof vars[0], "PARLEY_LB_LISTEN=127.0.0.1:%d", h->port);
	snprintf(vars[1], sizeof vars[1], "PARLEY_LB_ADMIN=%s", h->sock);
	envp[k++] = vars[0];
	envp[k++] = vars[1];
	for (i = 0; i < h->nnodes; i++) {
		snprintf(vars[2 + i], sizeof vars[2 + i], "PARLEY_NODE%d=127.0.0.1:%d", i + 1, node_ports[i]);
		envp[k++] = vars[2 + i];
	}
	h->pid = tmpserver_spawn("haproxyserver", argv, envp, h->dir, h->log);
	free(envp);
	if (h->pid < 0) {
		h->pid = 0;
		return -1;
	}
	publish_pid(h);
	deadline = tmpserver_now_ms() + HAPROXY_READY_MS;
	for (i = 1; i <= h->nnodes;) {
		if (tmpserver_running(h->pid) != 1) {
			forget_pid(h);
			return tmpserver_file_has(h->log, "cannot bind socket") ? 1 : -1;
		}
		if (haproxyserver_node_state(h, i) == 1) {
			i++;
			continue;
		}
		if (tmpserver_now_ms() > deadline) {
			fprintf(stderr, "haproxyserver: node %d (port %d) never passed its health checks\n", i,
			        node_ports[i - 1]);
			return -1;
		}
		tmpserver_nap(50);
	}
	return 0;
}

static void stop_at_exit(void *h)
{
	haproxyserver_stop(h);
}

haproxyserver_t *haproxyserver_start(const int *node_ports, int n)
{
	haproxyserver_t *h;
	int tries, r;

	if (n < 1 || n > HAPROXYSERVER_MAX_NODES || !haproxy_bin())
		return NULL;
	if (!(h = calloc(1, sizeof *h)))
		return NULL;
	h->slot = -1;
	h->watchdog.fd = -1;
	h->nnodes = n;
	if (tmpserver_make_dir("haproxyserver", "haproxy", h->dir, sizeof h->dir) < 0) {
		free(h);
		return NULL;
	}
	snprintf(h->log, sizeof h->log, "%s/haproxy.log", h->dir);
	snprintf(h->sock, sizeof h->sock, "%s/admin.sock", h->dir);
	if ((h->slot = tmpserver_register("haproxyserver", stop_at_exit, h)) < 0 ||
	    tmpserver_watchdog_start_killer("haproxyserver", &h->watchdog, h->dir) < 0)
		goto err;
	for (tries = 0; tries < HAPROXY_START_TRIES; tries++) {
		if ((h->port = tmpserver_free_port()) < 0) {
			fprintf(stderr, "haproxyserver: no free loopback port: %s\n", strerror(errno));
			goto err;
		}
		unlink(h->log);
		if ((r = start_on_port(h, node_ports)) == 0)
			return h;
		if (r < 0) {
			fprintf(stderr, "haproxyserver: haproxy did not start\n");
			tmpserver_show_tail("haproxyserver", "haproxy.log", h->log);
			goto err;
		}
	}
	fprintf(stderr, "haproxyserver: every port tried was taken before haproxy bound it\n");
err:
	haproxyserver_stop(h);
	return NULL;
}

int haproxyserver_port(const haproxyserver_t *h)
{
	return h->port;
}

pid_t haproxyserver_pid(const haproxyserver_t *h)
{
	return h->pid;
}

void haproxyserver_stop(haproxyserver_t *h)
{
	if (!h)
		return;
	if (h->pid > 0) {
		/* SIGTERM: a hard stop, tunnels and all. */
		tmpserver_end(h->pid, SIGTERM, HAPROXY_STOP_MS);
		forget_pid(h);
	}
	if (h->dir[0] && tmpserver_keep("HAPROXYSERVER_KEEP"))
		fprintf(stderr, "haproxyserver: HAPROXYSERVER_KEEP: kept %s (haproxy.log)\n", h->dir);
	else if (h->dir[0])
		tmpserver_remove_tree(h->dir);
	tmpserver_watchdog_done(&h->watchdog);
	tmpserver_unregister(h->slot);
	free(h);
}
