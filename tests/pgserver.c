/* pgserver.c - the throwaway PostgreSQL server of pgserver.h.
 *
 * Everything runs through the server's own tools (initdb, pg_ctl) as
 * child processes, never through a shell but for the watchdog; readiness
 * is pg_ctl -w (which reads the postmaster's own "ready" status) and then
 * PQping, never a sleep. Ports, processes, the watchdog and the cleanup
 * at exit or on a fatal signal are tmpserver.h's. */
#include "pgserver.h"
#include "tmpserver.h"

#include <errno.h>
#include <glob.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <libpq-fe.h>

#define PG_START_TRIES 8   /* ports tried before giving up on a clash */

#define INSTALL_HINT                                                      \
	"  Run: sudo apt-get install -y postgresql-15 libpq-dev\n"        \
	"  (or, as root: scripts/deps.sh test). Elsewhere, point\n"       \
	"  PARLEY_PG_BINDIR at the directory holding initdb and pg_ctl.\n"

struct pgserver {
	char dir[128];     /* the temporary directory */
	char data[160];    /* dir/data: the cluster */
	char log[160];     /* dir/server.log: the postmaster's log */
	char cmdlog[160];  /* dir/cmd.log: what initdb and pg_ctl said */
	char url[128];
	int port;
	int slot;          /* in tmpserver's registry; -1: none */
	pid_t postmaster;  /* 0: not running (as far as we know) */
	tmpserver_watchdog_t watchdog;
	unsigned dbs;      /* databases named by this process so far */
};

static char bindir[512];
static char initdb_bin[600], pg_ctl_bin[600];
static char runuser_bin[64];
static uid_t pg_uid;
static gid_t pg_gid;

/* ---- where the binaries are ---------------------------------------- */

static int has_tools(const char *dir)
{
	char a[600], b[600];

	snprintf(a, sizeof a, "%s/initdb", dir);
	snprintf(b, sizeof b, "%s/pg_ctl", dir);
	return access(a, X_OK) == 0 && access(b, X_OK) == 0;
}

const char *pgserver_bindir(void)
{
	const char *env = getenv("PARLEY_PG_BINDIR");
	char tried[1400] = "";
	FILE *p;

	if (bindir[0])
		return bindir;
	if (env && *env) {
		if (has_tools(env)) {
			snprintf(bindir, sizeof bindir, "%s", env);
			goto found;
		}
		snprintf(tried, sizeof tried, " %s (PARLEY_PG_BINDIR)", env);
	}
	/* pg_config (libpq-dev) names the server's directory even where the
	 * server is not installed; Debian's is /usr/lib/postgresql/15/bin,
	 * never /usr/local/bin. */
	if ((p = popen("pg_config --bindir 2>/dev/null", "r"))) {
		char line[512] = "";
		if (fgets(line, sizeof line, p)) {
			line[strcspn(line, "\n")] = 0;
			if (line[0] && has_tools(line)) {
				snprintf(bindir, sizeof bindir, "%s", line);
				pclose(p);
				goto found;
			}
			if (line[0] && strlen(tried) + strlen(line) + 32 < sizeof tried)
				snprintf(tried + strlen(tried), sizeof tried - strlen(tried),
				         " %s (pg_config --bindir)", line);
		}
		pclose(p);
	}
	/* Without pg_config: Debian's layout, the newest version first. */
	{
		glob_t g;
		size_t i;
		if (glob("/usr/lib/postgresql/*/bin", 0, NULL, &g) == 0) {
			for (i = g.gl_pathc; i-- > 0;) {
				if (has_tools(g.gl_pathv[i])) {
					snprintf(bindir, sizeof bindir, "%s", g.gl_pathv[i]);
					globfree(&g);
					goto found;
				}
			}
			globfree(&g);
		}
		if (strlen(tried) + 40 < sizeof tried)
			snprintf(tried + strlen(tried), sizeof tried - strlen(tried),
			         " /usr/lib/postgresql/*/bin");
	}
	fprintf(stderr,
	        "pgserver: PostgreSQL's server programs (initdb, pg_ctl) are not installed;\n"
	        "  looked in:%s\n" INSTALL_HINT,
	        tried);
	return NULL;
found:
	snprintf(initdb_bin, sizeof initdb_bin, "%s/initdb", bindir);
	snprintf(pg_ctl_bin, sizeof pg_ctl_bin, "%s/pg_ctl", bindir);
	return bindir;
}

/* As root, the tools run as postgres: PostgreSQL refuses root. */
static int find_run_as(void)
{
	static const char *const where[] = {"/usr/sbin/runuser", "/sbin/runuser", "/usr/bin/runuser",
	                                    "/bin/runuser"};
	struct passwd *pw;
	size_t i;

	if (geteuid() != 0)
		return 0;
	if (!(pw = getpwnam("postgres"))) {
		fprintf(stderr, "pgserver: running as root, and PostgreSQL refuses root; there is no postgres\n"
		                "  user to run it as (the postgresql-15 package creates it).\n" INSTALL_HINT);
		return -1;
	}
	pg_uid = pw->pw_uid;
	pg_gid = pw->pw_gid;
	for (i = 0; i < sizeof where / sizeof *where; i++)
		if (access(where[i], X_OK) == 0) {
			snprintf(runuser_bin, sizeof runuser_bin, "%s", where[i]);
			return 0;
		}
	fprintf(stderr, "pgserver: running as root, and PostgreSQL refuses root, but there is no\n"
	                "  runuser to run it as postgres (it comes with util-linux).\n");
	return -1;
}

/* ---- running the tools --------------------------------------------- */

extern char **environ;

/* The caller's environment without PostgreSQL's own variables: the
 * tools' settings (data directory, port, user) come from the command
 * line only, never from a PGPORT or PGDATA of whoever runs the tests.
 * Built before fork, so that the child only execs. */
static void tool_env(const char **envp, size_t cap)
{
	size_t n = 0;
	char **e;

	for (e = environ; *e && n + 1 < cap; e++)
		if (strncmp(*e, "PG", 2) != 0)
			envp[n++] = *e;
	envp[n] = NULL;
}

/* Runs tool (an absolute path) with args as the server's user, in the
 * server's directory, its output appended to out (NULL: discarded).
 * Returns the exit status, or -1. */
static int run_tool(const pgserver_t *pg, const char *tool, const char *const *args, const char *out)
{
	const char *argv[32], *envp[256];
	int n = 0, status;
	pid_t pid;

	if (runuser_bin[0]) {
		argv[n++] = runuser_bin;
		argv[n++] = "-u";
		argv[n++] = "postgres";
		argv[n++] = "--";
	}
	argv[n++] = tool;
	while (*args && n < 31)
		argv[n++] = *args++;
	argv[n] = NULL;
	tool_env(envp, sizeof envp / sizeof *envp);
	pid = tmpserver_spawn("pgserver", argv, envp, pg->dir, out);
	if (pid < 0)
		return -1;
	if ((status = tmpserver_wait(pid)) < 0)
		return -1;
	return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static int pg_ctl(const pgserver_t *pg, const char *const *args)
{
	return run_tool(pg, pg_ctl_bin, args, pg->cmdlog);
}

/* ---- the server ---------------------------------------------------- */

static void conninfo(const pgserver_t *pg, const char *db, char *out, size_t cap)
{
	snprintf(out, cap, "host=127.0.0.1 port=%d user=postgres dbname=%s connect_timeout=5", pg->port,
	         db);
}

int pgserver_alive(const pgserver_t *pg)
{
	char ci[160];

	conninfo(pg, "postgres", ci, sizeof ci);
	return PQping(ci) == PQPING_OK;
}

/* The postmaster's pid, from the first line of its pid file; 0 if none. */
static pid_t read_postmaster_pid(const pgserver_t *pg)
{
	char path[200], line[32] = "";
	FILE *f;

	snprintf(path, sizeof path, "%s/postmaster.pid", pg->data);
	if (!(f = fopen(path, "r")))
		return 0;
	if (!fgets(line, sizeof line, f))
		line[0] = 0;
	fclose(f);
	return (pid_t)atol(line);
}

/* 1 when the server's log says its port was taken (a retry may help). */
static int port_clash(const pgserver_t *pg)
{
	return tmpserver_file_has(pg->log, "could not bind") ||
	       tmpserver_file_has(pg->log, "Address already in use");
}

/* pg_ctl start -w on pg->port; then waits until PQping answers.
 * Returns 0, 1 when the port was taken, -1 on another failure. */
static int start_on_port(pgserver_t *pg)
{
	char opts[64];
	const char *args[] = {"-D", pg->data, "-l", pg->log, "-w", "-t", "60", "-o", opts, "start", NULL};
	time_t deadline;

	snprintf(opts, sizeof opts, "-p %d", pg->port);
	if (pg_ctl(pg, args) != 0)
		return port_clash(pg) ? 1 : -1;
	/* pg_ctl -w has seen the postmaster report "ready"; the ping checks
	 * that the TCP listener is the one answering. */
	deadline = time(NULL) + 30;
	while (!pgserver_alive(pg)) {
		struct timespec ts = {0, 20 * 1000 * 1000};
		if (time(NULL) > deadline) {
			fprintf(stderr, "pgserver: the server on port %d started but does not answer\n", pg->port);
			return -1;
		}
		nanosleep(&ts, NULL);
	}
	/* For the fatal-signal handler: SIGQUIT is PostgreSQL's immediate
	 * shutdown. */
	pg->postmaster = read_postmaster_pid(pg);
	tmpserver_set_pid(pg->slot, 0, pg->postmaster, SIGQUIT);
	return 0;
}

/* The watchdog (tmpserver.h) outlives a test process killed outright
 * (SIGKILL, which no handler sees). "done" means the server was stopped;
 * end-of-file without it means the process died, and the shell stops the
 * server and removes the directory. */
static const char watchdog_script[] =
	"IFS= read -r word\n"
	"[ \"$word\" = done ] && exit 0\n"
	"dir=$1; shift\n"
	"[ -f \"$dir/data/postmaster.pid\" ] && \"$@\" -D \"$dir/data\" -m immediate -w -t 60 stop >/dev/null 2>&1\n"
	"rm -rf \"$dir\"\n"
	"echo \"pgserver: the test process ended without stopping its PostgreSQL; stopped it and removed $dir\" >&2\n";

static int start_watchdog(pgserver_t *pg)
{
	const char *args[8];
	int n = 0;

	args[n++] = "pgserver-watchdog";
	args[n++] = pg->dir;
	if (runuser_bin[0]) {
		args[n++] = runuser_bin;
		args[n++] = "-u";
		args[n++] = "postgres";
		args[n++] = "--";
	}
	args[n++] = pg_ctl_bin;
	args[n] = NULL;
	return tmpserver_watchdog_start("pgserver", &pg->watchdog, watchdog_script, args);
}

/* The registry's stop function, at exit. */
static void stop_at_exit(void *pg)
{
	pgserver_stop(pg);
}

/* Appended to initdb's postgresql.conf. fsync and synchronous_commit are
 * PostgreSQL's defaults, said here so that nobody turns them off for speed
 * without seeing that durability is what the store's tests test (on this
 * machine's disk an fsync costs ~80 us: they do not matter for time). */
static int write_conf(const pgserver_t *pg)
{
	char path[200];
	FILE *f;

	snprintf(path, sizeof path, "%s/postgresql.conf", pg->data);
	if (!(f = fopen(path, "a")))
		return -1;
	fprintf(f,
	        "\n# pgserver (tests/pgserver.c)\n"
	        "listen_addresses = '127.0.0.1'\n"
	        "unix_socket_directories = '%s'\n"
	        "max_connections = 200\n"
	        "shared_buffers = 32MB\n"
	        "fsync = on\n"
	        "synchronous_commit = on\n"
	        "full_page_writes = on\n"
	        "timezone = 'UTC'\n",
	        pg->dir);
	return fclose(f) == 0 ? 0 : -1;
}

pgserver_t *pgserver_start(void)
{
	pgserver_t *pg;
	int tries, r;

	if (!pgserver_bindir() || find_run_as() < 0)
		return NULL;
	if (!(pg = calloc(1, sizeof *pg)))
		return NULL;
	pg->slot = -1;
	pg->watchdog.fd = -1;
	/* Short (tmpserver_make_dir): the socket's path (dir/.s.PGSQL.PORT)
	 * must fit in 107 bytes. */
	if (tmpserver_make_dir("pgserver", "pg", pg->dir, sizeof pg->dir) < 0) {
		free(pg);
		return NULL;
	}
	snprintf(pg->data, sizeof pg->data, "%s/data", pg->dir);
	snprintf(pg->log, sizeof pg->log, "%s/server.log", pg->dir);
	snprintf(pg->cmdlog, sizeof pg->cmdlog, "%s/cmd.log", pg->dir);
	if (runuser_bin[0] && chown(pg->dir, pg_uid, pg_gid) < 0) {
		fprintf(stderr, "pgserver: chown %s to postgres: %s\n", pg->dir, strerror(errno));
		goto err;
	}
	if ((pg->slot = tmpserver_register("pgserver", stop_at_exit, pg)) < 0 || start_watchdog(pg) < 0)
		goto err;
	{
		const char *args[] = {"-D", pg->data, "-A", "trust", "-U", "postgres", "-E", "UTF8",
		                      "--locale=C", "--no-sync", "--no-instructions", NULL};
		if (run_tool(pg, initdb_bin, args, pg->cmdlog) != 0) {
			fprintf(stderr, "pgserver: initdb failed\n");
			tmpserver_show_tail("pgserver", "initdb", pg->cmdlog);
			goto err;
		}
	}
	if (write_conf(pg) < 0) {
		fprintf(stderr, "pgserver: cannot write %s/postgresql.conf: %s\n", pg->data, strerror(errno));
		goto err;
	}
	for (tries = 0; tries < PG_START_TRIES; tries++) {
		if ((pg->port = tmpserver_free_port()) < 0) {
			fprintf(stderr, "pgserver: no free loopback port: %s\n", strerror(errno));
			goto err;
		}
		unlink(pg->log); /* this attempt's log only, for port_clash */
		if ((r = start_on_port(pg)) == 0)
			break;
		if (r < 0) {
			fprintf(stderr, "pgserver: the server did not start\n");
			tmpserver_show_tail("pgserver", "pg_ctl", pg->cmdlog);
			tmpserver_show_tail("pgserver", "server log", pg->log);
			goto err;
		}
	}
	if (tries == PG_START_TRIES) {
		fprintf(stderr, "pgserver: every port tried was taken before the server bound it\n");
		goto err;
	}
	snprintf(pg->url, sizeof pg->url, "postgresql://postgres@127.0.0.1:%d/postgres", pg->port);
	return pg;
err:
	pgserver_stop(pg);
	return NULL;
}

const char *pgserver_url(const pgserver_t *pg)
{
	return pg->url;
}

int pgserver_port(const pgserver_t *pg)
{
	return pg->port;
}

const char *pgserver_dir(const pgserver_t *pg)
{
	return pg->dir;
}

int pgserver_crash(pgserver_t *pg)
{
	const char *args[] = {"-D", pg->data, "-m", "immediate", "-w", "-t", "60", "stop", NULL};

	if (pg_ctl(pg, args) != 0) {
		fprintf(stderr, "pgserver: pg_ctl stop -m immediate failed\n");
		tmpserver_show_tail("pgserver", "pg_ctl", pg->cmdlog);
		return -1;
	}
	pg->postmaster = 0;
	tmpserver_set_pid(pg->slot, 0, 0, 0);
	return 0;
}

int pgserver_restart(pgserver_t *pg)
{
	int r = start_on_port(pg);

	if (r == 0)
		return 0;
	fprintf(stderr, "pgserver: the server did not start again on port %d%s\n", pg->port,
	        r > 0 ? " (someone else has taken the port)" : "");
	tmpserver_show_tail("pgserver", "pg_ctl", pg->cmdlog);
	tmpserver_show_tail("pgserver", "server log", pg->log);
	return -1;
}

void pgserver_stop(pgserver_t *pg)
{
	if (!pg)
		return;
	if (read_postmaster_pid(pg) > 0) {
		const char *fast[] = {"-D", pg->data, "-m", "fast", "-w", "-t", "60", "stop", NULL};
		const char *now[] = {"-D", pg->data, "-m", "immediate", "-w", "-t", "60", "stop", NULL};
		if (pg_ctl(pg, fast) != 0 && pg_ctl(pg, now) != 0) {
			fprintf(stderr, "pgserver: the server in %s does not stop\n", pg->dir);
			tmpserver_show_tail("pgserver", "pg_ctl", pg->cmdlog);
			if (pg->postmaster > 0)
				kill(pg->postmaster, SIGKILL);
		}
	}
	pg->postmaster = 0;
	tmpserver_set_pid(pg->slot, 0, 0, 0);
	if (pg->dir[0] && tmpserver_keep("PGSERVER_KEEP"))
		fprintf(stderr, "pgserver: PGSERVER_KEEP: kept %s (server.log, and data/ to start again)\n",
		        pg->dir);
	else if (pg->dir[0])
		tmpserver_remove_tree(pg->dir);
	tmpserver_watchdog_done(&pg->watchdog);
	tmpserver_unregister(pg->slot);
	free(pg);
}

/* ---- databases ----------------------------------------------------- */

static int valid_name(const char *name)
{
	size_t i, n = strlen(name);

	if (n == 0 || n > 63)
		return 0;
	for (i = 0; i < n; i++)
		if (!((name[i] >= 'a' && name[i] <= 'z') || (name[i] >= '0' && name[i] <= '9') ||
		      name[i] == '_'))
			return 0;
	return 1;
}

/* Runs one statement on the maintenance database. Returns 0 or -1. */
static int maintenance(const pgserver_t *pg, const char *sql)
{
	char ci[160];
	PGconn *c;
	PGresult *res;
	int r = -1;

	conninfo(pg, "postgres", ci, sizeof ci);
	c = PQconnectdb(ci);
	if (PQstatus(c) != CONNECTION_OK) {
		fprintf(stderr, "pgserver: cannot connect to %s: %s", pg->url, PQerrorMessage(c));
		PQfinish(c);
		return -1;
	}
	res = PQexec(c, sql);
	if (PQresultStatus(res) == PGRES_COMMAND_OK)
		r = 0;
	else
		fprintf(stderr, "pgserver: %s: %s", sql, PQerrorMessage(c));
	PQclear(res);
	PQfinish(c);
	return r;
}

int pgserver_create_db(pgserver_t *pg, const char *name, char *url, size_t cap)
{
	char made[64], sql[128];

	if (!name) {
		snprintf(made, sizeof made, "parley_%d_%u", (int)getpid(), ++pg->dbs);
		name = made;
	}
	if (!valid_name(name)) {
		fprintf(stderr, "pgserver: '%s' is no database name of the tests ([a-z0-9_], 1-63)\n", name);
		return -1;
	}
	snprintf(sql, sizeof sql, "CREATE DATABASE %s", name);
	if (maintenance(pg, sql) < 0)
		return -1;
	if ((size_t)snprintf(url, cap, "postgresql://postgres@127.0.0.1:%d/%s", pg->port, name) >= cap) {
		fprintf(stderr, "pgserver: no room for the database's URI\n");
		return -1;
	}
	return 0;
}

int pgserver_drop_db(pgserver_t *pg, const char *name_or_url)
{
	const char *slash = strrchr(name_or_url, '/');
	char name[64], sql[160];

	snprintf(name, sizeof name, "%.*s", (int)strcspn(slash ? slash + 1 : name_or_url, "?"),
	         slash ? slash + 1 : name_or_url);
	if (!valid_name(name) || !strcmp(name, "postgres")) {
		fprintf(stderr, "pgserver: will not drop '%s'\n", name_or_url);
		return -1;
	}
	snprintf(sql, sizeof sql, "DROP DATABASE IF EXISTS %s WITH (FORCE)", name);
	return maintenance(pg, sql);
}
