/* natsserver.c - the throwaway NATS JetStream cluster of natsserver.h.
 *
 * Each nats-server runs as a child of the test process, configured on
 * its command line alone, its log (stderr) into dir/nI.log. Readiness is
 * asked of the servers, never slept for: at start, /healthz on every
 * monitoring port, then a replicated stream created and deleted through
 * libnats; at restart, /healthz on the restarted server, which answers 200
 * only once it is current with the meta leader and its streams. The
 * monitoring endpoints are read with a few lines of HTTP/1.0 over a
 * plain socket. Ports, processes, the watchdog and the cleanup at exit or
 * on a fatal signal are tmpserver.h's. */
#include "natsserver.h"
#include "tmpserver.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>

#include <nats/nats.h>

#define NATS_START_TRIES 8    /* port sets tried before giving up on a clash */
#define NATS_READY_MS 20000   /* start (or restart) to ready; ~0.5 s here */
#define NATS_STOP_MS 5000     /* SIGTERM's grace before SIGKILL */
#define READY_STREAM "NATSCLUSTER_READY"

#define INSTALL_HINT                                                    \
	"  Run: sudo apt-get install -y nats-server\n"                  \
	"  (or, as root: scripts/deps.sh test). Elsewhere, point\n"     \
	"  PARLEY_NATS_SERVER at the nats-server binary.\n"

struct natsnode {
	char name[16];    /* n1.. */
	char store[160];  /* dir/nI: its JetStream store (-sd) */
	char log[160];    /* dir/nI.log */
	char url[48];     /* nats://127.0.0.1:PORT */
	char port_arg[8], http_arg[8], cluster_arg[48];
	int port, cluster_port, http_port;
	pid_t pid;        /* 0: not running */
};

struct natscluster {
	char dir[128];
	int n;
	int slot;         /* in tmpserver's registry; -1: none */
	tmpserver_watchdog_t watchdog;
	char urls[NATSCLUSTER_MAX * 48];
	char routes[NATSCLUSTER_MAX * 48];
	struct natsnode node[NATSCLUSTER_MAX];
};

static char bin[512];

const char *natscluster_bin(void)
{
	if (bin[0] || tmpserver_server_bin("natsserver", "PARLEY_NATS_SERVER", "nats-server", INSTALL_HINT, bin,
	                                   sizeof bin) == 0)
		return bin;
	return NULL;
}

/* ---- asking a server ------------------------------------------------ */

/* A blocking loopback connection with timeout_ms on each read and
 * write; -1 when refused. */
static int dial(int port, int timeout_ms)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((unsigned short)port),
	                        .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd < 0)
		return -1;
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
	if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) {
		close(fd);
		return -1;
	}
	return fd;
}

/* GET path on a monitoring port: the HTTP status, the body (up to cap-1
 * bytes, NUL-terminated) in body if not NULL; -1 when nothing answers. */
static int http_get(int port, const char *path, char *body, size_t cap)
{
	char req[128], buf[16384], *sep;
	size_t len = 0;
	ssize_t r;
	int fd, status = -1;

	if ((fd = dial(port, 2000)) < 0)
		return -1;
	snprintf(req, sizeof req, "GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n", path);
	if (send(fd, req, strlen(req), MSG_NOSIGNAL) != (ssize_t)strlen(req)) {
		close(fd);
		return -1;
	}
	/* HTTP/1.0: the body ends where the connection does. */
	while (len < sizeof buf - 1 && (r = recv(fd, buf + len, sizeof buf - 1 - len, 0)) > 0)
		len += (size_t)r;
	close(fd);
	buf[len] = 0;
	if (sscanf(buf, "HTTP/1.%*d %d", &status) != 1)
		return -1;
	if (body && cap) {
		sep = strstr(buf, "\r\n\r\n");
		snprintf(body, cap, "%s", sep ? sep + 4 : "");
	}
	return status;
}

static int healthy(const struct natsnode *node)
{
	return http_get(node->http_port, "/healthz", NULL, 0) == 200;
}

int natscluster_alive(const natscluster_t *nc, int i)
{
	char greeting[8];
	ssize_t r = 0;
	int fd;

	if (i < 0 || i >= nc->n || nc->node[i].pid <= 0 || tmpserver_running(nc->node[i].pid) != 1)
		return 0;
	/* A NATS server speaks first: "INFO {...}". */
	if ((fd = dial(nc->node[i].port, 2000)) < 0)
		return 0;
	r = recv(fd, greeting, 5, MSG_WAITALL);
	close(fd);
	return r == 5 && !memcmp(greeting, "INFO ", 5);
}

int natscluster_meta_leader(const natscluster_t *nc)
{
	char body[8192], name[16], *p;
	int i, j;

	for (i = 0; i < nc->n; i++) {
		if (nc->node[i].pid <= 0 || http_get(nc->node[i].http_port, "/jsz", body, sizeof body) != 200)
			continue;
		if (nc->n == 1)
			return 0; /* standalone: it is its own leader */
		/* "meta_cluster": { "name": "parley", "leader": "n2", ... } */
		if (!(p = strstr(body, "\"meta_cluster\"")) || !(p = strstr(p, "\"leader\"")) ||
		    sscanf(p, "\"leader\" : \"%15[^\"]\"", name) != 1)
			continue;
		for (j = 0; j < nc->n; j++)
			if (!strcmp(nc->node[j].name, name))
				return j;
	}
	return -1;
}

/* The first error of a failed libnats call, for the message at the
 * deadline. */
static void note_error(char *why, size_t cap, const char *what, natsStatus s, jsErrCode jerr)
{
	const char *text = nats_GetLastError(NULL);

	snprintf(why, cap, "%s: %s%s%s (JetStream error %d)", what, natsStatus_GetText(s),
	         text && *text ? ": " : "", text ? text : "", (int)jerr);
}

/* One try at creating and deleting a file stream with n replicas
 * through a connection to any server. 0, or -1 (why says why). */
static int try_stream(const natscluster_t *nc, char *why, size_t cap)
{
	const char *servers[NATSCLUSTER_MAX], *subjects[] = {"natscluster.ready"};
	natsConnection *conn = NULL;
	natsOptions *opts = NULL;
	jsStreamInfo *si = NULL;
	jsStreamConfig cfg;
	jsOptions jo;
	jsErrCode jerr = 0;
	jsCtx *js = NULL;
	natsStatus s;
	int i, r = -1;

	for (i = 0; i < nc->n; i++)
		servers[i] = nc->node[i].url;
	if ((s = natsOptions_Create(&opts)) != NATS_OK ||
	    (s = natsOptions_SetServers(opts, servers, nc->n)) != NATS_OK ||
	    (s = natsOptions_SetTimeout(opts, 1000)) != NATS_OK ||
	    (s = natsOptions_SetAllowReconnect(opts, false)) != NATS_OK) {
		note_error(why, cap, "natsOptions", s, 0);
		goto out;
	}
	if ((s = natsConnection_Connect(&conn, opts)) != NATS_OK) {
		note_error(why, cap, "connect", s, 0);
		goto out;
	}
	jsOptions_Init(&jo);
	jo.Wait = 2000; /* a request with no meta leader yet waits this long */
	if ((s = natsConnection_JetStream(&js, conn, &jo)) != NATS_OK) {
		note_error(why, cap, "JetStream context", s, 0);
		goto out;
	}
	jsStreamConfig_Init(&cfg);
	cfg.Name = READY_STREAM;
	cfg.Subjects = subjects;
	cfg.SubjectsLen = 1;
	cfg.Storage = js_FileStorage;
	cfg.Replicas = nc->n;
	s = js_AddStream(&si, js, &cfg, NULL, &jerr);
	/* An earlier try may have made it and timed out before the answer. */
	if (s != NATS_OK && jerr != JSStreamNameExistErr) {
		note_error(why, cap, "creating a stream with replicas", s, jerr);
		goto out;
	}
	jerr = 0;
	if ((s = js_DeleteStream(js, READY_STREAM, NULL, &jerr)) != NATS_OK) {
		note_error(why, cap, "deleting the stream", s, jerr);
		goto out;
	}
	r = 0;
out:
	jsStreamInfo_Destroy(si);
	jsCtx_Destroy(js);
	natsConnection_Destroy(conn);
	natsOptions_Destroy(opts);
	return r;
}

/* ---- the servers ---------------------------------------------------- */

/* Tells the fatal-signal handler and the watchdog the current pids. */
static void publish_pids(natscluster_t *nc)
{
	pid_t pids[NATSCLUSTER_MAX];
	int i;

	for (i = 0; i < nc->n; i++) {
		pids[i] = nc->node[i].pid;
		tmpserver_set_pid(nc->slot, i, pids[i], SIGKILL);
	}
	tmpserver_watchdog_pids(&nc->watchdog, pids, nc->n);
}

/* Server i has ended (unreaped): forget it, then reap it. */
static void forget_pid(natscluster_t *nc, int i)
{
	pid_t pid = nc->node[i].pid;

	nc->node[i].pid = 0;
	publish_pids(nc);
	tmpserver_wait(pid);
}

static int spawn(natscluster_t *nc, int i)
{
	struct natsnode *node = &nc->node[i];
	const char *argv[24];
	int n = 0;

	argv[n++] = bin;
	argv[n++] = "-a";
	argv[n++] = "127.0.0.1";
	argv[n++] = "-p";
	argv[n++] = node->port_arg;
	argv[n++] = "-m";
	argv[n++] = node->http_arg;
	argv[n++] = "-n";
	argv[n++] = node->name;
	argv[n++] = "-js";
	argv[n++] = "-sd";
	argv[n++] = node->store;
	if (nc->n > 1) {
		argv[n++] = "--cluster_name";
		argv[n++] = "parley";
		argv[n++] = "--cluster";
		argv[n++] = node->cluster_arg;
		argv[n++] = "--routes";
		argv[n++] = nc->routes;
	}
	argv[n] = NULL;
	if ((node->pid = tmpserver_spawn("natsserver", argv, NULL, nc->dir, node->log)) < 0) {
		node->pid = 0;
		return -1;
	}
	publish_pids(nc);
	return 0;
}

/* Picks the ports, and the URLs and arguments made of them. */
static int pick_ports(natscluster_t *nc)
{
	int ports[3 * NATSCLUSTER_MAX], i;
	size_t u = 0, r = 0;

	if (tmpserver_free_ports(ports, 3 * nc->n) < 0) {
		fprintf(stderr, "natsserver: no free loopback ports: %s\n", strerror(errno));
		return -1;
	}
	for (i = 0; i < nc->n; i++) {
		struct natsnode *node = &nc->node[i];
		node->port = ports[3 * i];
		node->cluster_port = ports[3 * i + 1];
		node->http_port = ports[3 * i + 2];
		snprintf(node->port_arg, sizeof node->port_arg, "%d", node->port);
		snprintf(node->http_arg, sizeof node->http_arg, "%d", node->http_port);
		snprintf(node->cluster_arg, sizeof node->cluster_arg, "nats://127.0.0.1:%d", node->cluster_port);
		snprintf(node->url, sizeof node->url, "nats://127.0.0.1:%d", node->port);
		u += (size_t)snprintf(nc->urls + u, sizeof nc->urls - u, "%s%s", i ? "," : "", node->url);
		r += (size_t)snprintf(nc->routes + r, sizeof nc->routes - r, "%s%s", i ? "," : "",
		                      node->cluster_arg);
	}
	return 0;
}

/* Ends every running server: sig, then SIGKILL after NATS_STOP_MS. */
static void end_all(natscluster_t *nc, int sig)
{
	int i;

	for (i = 0; i < nc->n; i++)
		if (nc->node[i].pid > 0)
			kill(nc->node[i].pid, sig);
	for (i = 0; i < nc->n; i++)
		if (nc->node[i].pid > 0) {
			tmpserver_end(nc->node[i].pid, sig, NATS_STOP_MS);
			forget_pid(nc, i);
		}
}

static void show_logs(const natscluster_t *nc)
{
	int i;

	for (i = 0; i < nc->n; i++)
		tmpserver_show_tail("natsserver", nc->node[i].name, nc->node[i].log);
}

/* 1 when server i has ended; then its log says whether a port was taken
 * (*clash). */
static int ended(const natscluster_t *nc, int i, int *clash)
{
	if (tmpserver_running(nc->node[i].pid) == 1)
		return 0;
	*clash = tmpserver_file_has(nc->node[i].log, "address already in use");
	return 1;
}

/* Starts every server on freshly picked ports and waits until the
 * cluster is ready. 0, 1 when a port was taken (a retry may help), -1 on
 * another failure (said why). */
static int start_on_ports(natscluster_t *nc)
{
	long long deadline;
	char why[512] = "no answer yet";
	int i, j, clash = 0;

	if (pick_ports(nc) < 0)
		return -1;
	for (i = 0; i < nc->n; i++) {
		unlink(nc->node[i].log); /* this attempt's log only, for the clash test */
		if (spawn(nc, i) < 0)
			return -1;
	}
	deadline = tmpserver_now_ms() + NATS_READY_MS;
	/* Every server current with a meta leader first, asked over HTTP
	 * every 50 ms (each failed ask is a line in the server's log): a
	 * JetStream request made before there is a leader goes unanswered
	 * until its timeout. */
	for (i = 0; i < nc->n; i++)
		while (!healthy(&nc->node[i])) {
			for (j = 0; j < nc->n; j++)
				if (ended(nc, j, &clash)) {
					if (clash)
						return 1;
					fprintf(stderr, "natsserver: server %s ended as it started\n", nc->node[j].name);
					return -1;
				}
			if (tmpserver_now_ms() > deadline) {
				fprintf(stderr, "natsserver: server %s is not healthy within %d s\n",
				        nc->node[i].name, NATS_READY_MS / 1000);
				return -1;
			}
			tmpserver_nap(50);
		}
	/* Then what the tests will do: a stream replicated on all n. */
	while (try_stream(nc, why, sizeof why) < 0) {
		if (tmpserver_now_ms() > deadline) {
			fprintf(stderr, "natsserver: no JetStream with %d replicas within %d s; last: %s\n", nc->n,
			        NATS_READY_MS / 1000, why);
			return -1;
		}
		tmpserver_nap(50);
	}
	return 0;
}

/* The registry's stop function, at exit. */
static void stop_at_exit(void *nc)
{
	natscluster_stop(nc);
}

natscluster_t *natscluster_start(int n)
{
	char dir[sizeof ((natscluster_t *)0)->dir];
	natscluster_t *nc;
	int i, tries, r;

	if (n < 1 || n > NATSCLUSTER_MAX) {
		fprintf(stderr, "natsserver: a cluster of 1 to %d servers, not %d\n", NATSCLUSTER_MAX, n);
		return NULL;
	}
	if (!natscluster_bin())
		return NULL;
	if (!(nc = calloc(1, sizeof *nc)))
		return NULL;
	nc->n = n;
	nc->slot = -1;
	nc->watchdog.fd = -1;
	if (tmpserver_make_dir("natsserver", "nats", dir, sizeof dir) < 0) {
		free(nc);
		return NULL;
	}
	memcpy(nc->dir, dir, sizeof nc->dir);
	for (i = 0; i < n; i++) {
		struct natsnode *node = &nc->node[i];
		snprintf(node->name, sizeof node->name, "n%d", i + 1);
		snprintf(node->store, sizeof node->store, "%.127s/n%d", dir, i + 1);
		snprintf(node->log, sizeof node->log, "%.127s/n%d.log", dir, i + 1);
	}
	if ((nc->slot = tmpserver_register("natsserver", stop_at_exit, nc)) < 0 ||
	    tmpserver_watchdog_start_killer("natsserver", &nc->watchdog, nc->dir) < 0)
		goto err;
	for (tries = 0; tries < NATS_START_TRIES; tries++) {
		if ((r = start_on_ports(nc)) == 0)
			return nc;
		end_all(nc, SIGKILL);
		if (r < 0) {
			show_logs(nc);
			goto err;
		}
		/* A clash: a fresh store too, so that no half-made cluster
		 * state (peers on the old ports) is carried over. */
		for (i = 0; i < n; i++)
			tmpserver_remove_tree(nc->node[i].store);
	}
	fprintf(stderr, "natsserver: every set of ports tried had one taken before a server bound it\n");
err:
	natscluster_stop(nc);
	return NULL;
}

const char *natscluster_urls(const natscluster_t *nc)
{
	return nc->urls;
}

const char *natscluster_url(const natscluster_t *nc, int i)
{
	return i >= 0 && i < nc->n ? nc->node[i].url : NULL;
}

int natscluster_size(const natscluster_t *nc)
{
	return nc->n;
}

int natscluster_monitor_port(const natscluster_t *nc, int i)
{
	return i >= 0 && i < nc->n ? nc->node[i].http_port : -1;
}

pid_t natscluster_pid(const natscluster_t *nc, int i)
{
	return i >= 0 && i < nc->n ? nc->node[i].pid : 0;
}

const char *natscluster_dir(const natscluster_t *nc)
{
	return nc->dir;
}

int natscluster_kill(natscluster_t *nc, int i)
{
	if (i < 0 || i >= nc->n || nc->node[i].pid <= 0 || tmpserver_end(nc->node[i].pid, SIGKILL, 0) < 0) {
		fprintf(stderr, "natsserver: natscluster_kill: no server %d running\n", i);
		return -1;
	}
	forget_pid(nc, i);
	return 0;
}

int natscluster_restart(natscluster_t *nc, int i)
{
	struct natsnode *node;
	long long deadline;
	int clash = 0;

	if (i < 0 || i >= nc->n) {
		fprintf(stderr, "natsserver: natscluster_restart: no server %d\n", i);
		return -1;
	}
	node = &nc->node[i];
	if (node->pid > 0) {
		if (tmpserver_running(node->pid) == 1) {
			fprintf(stderr, "natsserver: natscluster_restart: server %s still runs\n", node->name);
			return -1;
		}
		forget_pid(nc, i); /* it died by itself */
	}
	if (spawn(nc, i) < 0)
		return -1;
	deadline = tmpserver_now_ms() + NATS_READY_MS;
	while (!healthy(node)) {
		if (ended(nc, i, &clash) || tmpserver_now_ms() > deadline) {
			fprintf(stderr, "natsserver: server %s did not come back%s\n", node->name,
			        clash ? ": someone else has taken one of its ports"
			              : tmpserver_running(node->pid) == 1 ? " within 20 s" : "");
			tmpserver_show_tail("natsserver", node->name, node->log);
			return -1;
		}
		tmpserver_nap(50);
	}
	return 0;
}

void natscluster_stop(natscluster_t *nc)
{
	if (!nc)
		return;
	/* SIGTERM: nats-server's own shutdown, which closes the stores. */
	end_all(nc, SIGTERM);
	if (nc->dir[0] && tmpserver_keep("NATSSERVER_KEEP"))
		fprintf(stderr, "natsserver: NATSSERVER_KEEP: kept %s (nI.log, and nI/ the stores)\n", nc->dir);
	else if (nc->dir[0])
		tmpserver_remove_tree(nc->dir);
	tmpserver_watchdog_done(&nc->watchdog);
	tmpserver_unregister(nc->slot);
	free(nc);
}
