/* tmpserver.c - the parts of the tests' throwaway servers that do not
 * depend on which server it is (tmpserver.h): ports, directories, logs,
 * child processes, and the registry, signal handler, atexit hook and
 * watchdog that stop a server when its test process ends. */
#include "tmpserver.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>

extern char **environ;

/* ---- ports, directories, logs --------------------------------------- */

/* A socket bound to a free loopback port, and the port; -1 if none. */
static int bind_free(int *port)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof a;
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd < 0)
		return -1;
	if (bind(fd, (struct sockaddr *)&a, sizeof a) < 0 ||
	    getsockname(fd, (struct sockaddr *)&a, &len) < 0) {
		close(fd);
		return -1;
	}
	*port = ntohs(a.sin_port);
	return fd;
}

int tmpserver_free_port(void)
{
	int port, fd = bind_free(&port);

	if (fd < 0)
		return -1;
	close(fd);
	return port;
}

int tmpserver_free_ports(int *ports, int n)
{
	int fds[3 * TMPSERVER_MAX_PIDS], i, r = 0;

	if (n < 0 || n > (int)(sizeof fds / sizeof *fds)) {
		errno = EINVAL;
		return -1;
	}
	/* All held at once, so that the kernel hands out n different ones. */
	for (i = 0; i < n; i++)
		if ((fds[i] = bind_free(&ports[i])) < 0) {
			r = -1;
			break;
		}
	while (i-- > 0)
		close(fds[i]);
	return r;
}

int tmpserver_make_dir(const char *who, const char *kind, char *dir, size_t cap)
{
	const char *tmp = getenv("TMPDIR");

	if (!tmp || !*tmp || strlen(tmp) > 60)
		tmp = "/tmp";
	if ((size_t)snprintf(dir, cap, "%s/parley-%s-XXXXXX", tmp, kind) >= cap) {
		fprintf(stderr, "%s: no room for the directory's name\n", who);
		return -1;
	}
	if (!mkdtemp(dir)) {
		fprintf(stderr, "%s: mkdtemp %s: %s\n", who, dir, strerror(errno));
		dir[0] = 0;
		return -1;
	}
	return 0;
}

static int rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb;
	(void)flag;
	(void)ftw;
	return remove(path);
}

void tmpserver_remove_tree(const char *dir)
{
	nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

int tmpserver_keep(const char *env)
{
	const char *v = getenv(env);

	return v && *v;
}

void tmpserver_show_tail(const char *who, const char *what, const char *path)
{
	char buf[4096];
	FILE *f = fopen(path, "r");
	long size;
	size_t n;

	if (!f)
		return;
	fseek(f, 0, SEEK_END);
	size = ftell(f);
	fseek(f, size > (long)sizeof buf - 1 ? size - (long)sizeof buf + 1 : 0, SEEK_SET);
	n = fread(buf, 1, sizeof buf - 1, f);
	buf[n] = 0;
	fclose(f);
	if (n)
		fprintf(stderr, "%s: --- %s (%s) ---\n%s%s--- end ---\n", who, what, path, buf,
		        buf[n - 1] == '\n' ? "" : "\n");
}

int tmpserver_file_has(const char *path, const char *needle)
{
	char line[1024];
	FILE *f = fopen(path, "r");
	int has = 0;

	if (!f)
		return 0;
	while (!has && fgets(line, sizeof line, f))
		has = strstr(line, needle) != NULL;
	fclose(f);
	return has;
}

int tmpserver_find_bin(const char *name, char *out, size_t cap)
{
	const char *path = getenv("PATH");
	char dirs[2048];
	char *dir, *save = NULL;

	snprintf(dirs, sizeof dirs, "%s:/usr/sbin:/usr/bin:/sbin:/bin", path && *path ? path : "");
	for (dir = strtok_r(dirs, ":", &save); dir; dir = strtok_r(NULL, ":", &save)) {
		struct stat st;
		if (!*dir || (size_t)snprintf(out, cap, "%s/%s", dir, name) >= cap)
			continue;
		if (stat(out, &st) == 0 && S_ISREG(st.st_mode) && access(out, X_OK) == 0)
			return 0;
	}
	out[0] = 0;
	return -1;
}

int tmpserver_server_bin(const char *who, const char *env, const char *name, const char *hint, char *out,
                         size_t cap)
{
	const char *v = getenv(env);

	if (v && *v) {
		if (access(v, X_OK) == 0) {
			snprintf(out, cap, "%s", v);
			return 0;
		}
		fprintf(stderr, "%s: %s=%s is not an executable\n", who, env, v);
		return -1;
	}
	if (tmpserver_find_bin(name, out, cap) == 0)
		return 0;
	fprintf(stderr, "%s: %s is not installed (looked in $PATH, /usr/sbin, /usr/bin)\n%s", who, name, hint);
	return -1;
}

/* ---- processes ------------------------------------------------------ */

/* In a forked child: nothing of the test's stays open but 0-2 (its
 * servers' sockets, pipes to its other children). */
static void close_from_3(void)
{
	int fd, maxfd;

	if (close_range(3, ~0U, 0) == 0)
		return;
	maxfd = (int)sysconf(_SC_OPEN_MAX);
	for (fd = 3; fd < (maxfd > 0 && maxfd < 65536 ? maxfd : 65536); fd++)
		close(fd);
}

pid_t tmpserver_spawn(const char *who, const char *const *argv, const char *const *envp,
                      const char *cwd, const char *log)
{
	pid_t pid = fork();

	if (pid < 0) {
		fprintf(stderr, "%s: fork: %s\n", who, strerror(errno));
		return -1;
	}
	if (pid == 0) {
		/* Only async-signal-safe calls here: the test may have threads. */
		int fd = open(log ? log : "/dev/null", O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
		int in = open("/dev/null", O_RDONLY | O_CLOEXEC);
		sigset_t none;
		if (fd >= 0) {
			dup2(fd, STDOUT_FILENO);
			dup2(fd, STDERR_FILENO);
		}
		if (in >= 0)
			dup2(in, STDIN_FILENO);
		/* A mask the test set (a thread blocking SIGTERM) is not the
		 * server's: its stop must be able to reach it. */
		sigemptyset(&none);
		sigprocmask(SIG_SETMASK, &none, NULL);
		if (chdir(cwd) < 0)
			_exit(126);
		close_from_3();
		execve(argv[0], (char *const *)argv, envp ? (char *const *)envp : environ);
		_exit(127);
	}
	return pid;
}

int tmpserver_running(pid_t pid)
{
	siginfo_t si;

	memset(&si, 0, sizeof si);
	while (waitid(P_PID, (id_t)pid, &si, WEXITED | WNOHANG | WNOWAIT) < 0)
		if (errno != EINTR)
			return -1;
	return si.si_pid == 0;
}

int tmpserver_wait(pid_t pid)
{
	int status;

	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR)
			return -1;
	return status;
}

int tmpserver_end(pid_t pid, int sig, int ms)
{
	long long deadline = tmpserver_now_ms() + ms;
	int r;

	if (kill(pid, sig) < 0 && errno != ESRCH)
		return -1;
	while ((r = tmpserver_running(pid)) == 1) {
		if (tmpserver_now_ms() >= deadline && sig != SIGKILL)
			kill(pid, sig = SIGKILL);
		tmpserver_nap(5);
	}
	return r;
}

int tmpserver_pid_gone(pid_t pid, const char *comm)
{
	char path[64], buf[512], *open_paren, *close_paren;
	size_t n;
	FILE *f;

	snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
	if (!(f = fopen(path, "r")))
		return 1;
	n = fread(buf, 1, sizeof buf - 1, f);
	fclose(f);
	buf[n] = 0;
	/* "PID (COMM) STATE ...": COMM may hold spaces and parentheses. */
	if (!(open_paren = strchr(buf, '(')) || !(close_paren = strrchr(buf, ')')) || close_paren[1] != ' ')
		return 1;
	*close_paren = 0;
	if (strcmp(open_paren + 1, comm) != 0)
		return 1;
	return close_paren[2] == 'Z' || close_paren[2] == 'X';
}

void tmpserver_nap(int ms)
{
	struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000 * 1000};

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

long long tmpserver_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- ending with the test process ----------------------------------- */

/* What the signal handler reads is volatile and set before it matters:
 * a pid is stored once the process exists, cleared before it is reaped. */
static struct slot {
	void (*stop)(void *server); /* NULL: a free slot */
	void *server;
	volatile pid_t owner; /* the process that started it */
	volatile pid_t pids[TMPSERVER_MAX_PIDS];
	volatile int sigs[TMPSERVER_MAX_PIDS];
} slots[TMPSERVER_MAX];
/* The handlers and the atexit hook, once; a fork inherits them. */
static int cleanup_installed;

static const int fatal_signals[] = {SIGINT, SIGTERM, SIGHUP, SIGABRT, SIGSEGV, SIGBUS, SIGFPE};
#define NFATAL (sizeof fatal_signals / sizeof *fatal_signals)
static struct sigaction old_actions[NFATAL];

static void on_fatal_signal(int sig, siginfo_t *si, void *uc)
{
	pid_t self = getpid();
	size_t i, j;

	(void)uc;
	for (i = 0; i < TMPSERVER_MAX; i++)
		if (slots[i].owner == self)
			for (j = 0; j < TMPSERVER_MAX_PIDS; j++)
				if (slots[i].pids[j] > 0)
					kill(slots[i].pids[j], slots[i].sigs[j]);
	for (i = 0; i < NFATAL; i++)
		if (fatal_signals[i] == sig)
			sigaction(sig, &old_actions[i], NULL);
	/* A fault the kernel raised happens again as soon as this returns,
	 * now under the old action (a sanitizer's report, or the default);
	 * any other signal is raised again for it. */
	if ((sig == SIGSEGV || sig == SIGBUS || sig == SIGFPE) && si && si->si_code > 0)
		return;
	raise(sig);
}

static void stop_all_at_exit(void)
{
	size_t i;

	for (i = 0; i < TMPSERVER_MAX; i++)
		if (slots[i].stop && slots[i].owner == getpid())
			slots[i].stop(slots[i].server);
}

/* Once per process, before the first server starts. */
static void install_cleanup(void)
{
	struct sigaction sa;
	size_t i;

	if (cleanup_installed)
		return;
	cleanup_installed = 1;
	atexit(stop_all_at_exit);
	memset(&sa, 0, sizeof sa);
	sa.sa_sigaction = on_fatal_signal;
	sa.sa_flags = SA_SIGINFO;
	sigemptyset(&sa.sa_mask);
	for (i = 0; i < NFATAL; i++) {
		sigaction(fatal_signals[i], NULL, &old_actions[i]);
		/* An ignored signal (nohup's SIGHUP) stays ignored. */
		if (old_actions[i].sa_handler != SIG_IGN)
			sigaction(fatal_signals[i], &sa, NULL);
	}
}

int tmpserver_register(const char *who, void (*stop)(void *server), void *server)
{
	int i;

	/* A slot of a parent's server (this is a forked child) is taken:
	 * not ours to reuse, nor to free. */
	for (i = 0; i < TMPSERVER_MAX && slots[i].stop; i++)
		;
	if (i == TMPSERVER_MAX) {
		fprintf(stderr, "%s: more than %d servers at once\n", who, TMPSERVER_MAX);
		return -1;
	}
	install_cleanup();
	memset(&slots[i], 0, sizeof slots[i]);
	slots[i].stop = stop;
	slots[i].server = server;
	slots[i].owner = getpid();
	return i;
}

void tmpserver_set_pid(int slot, int i, pid_t pid, int sig)
{
	if (slot < 0 || slot >= TMPSERVER_MAX || i < 0 || i >= TMPSERVER_MAX_PIDS)
		return;
	slots[slot].sigs[i] = sig;
	slots[slot].pids[i] = pid;
}

void tmpserver_unregister(int slot)
{
	int i;

	if (slot < 0 || slot >= TMPSERVER_MAX)
		return;
	slots[slot].owner = 0;
	for (i = 0; i < TMPSERVER_MAX_PIDS; i++)
		slots[slot].pids[i] = 0;
	slots[slot].stop = NULL;
	slots[slot].server = NULL;
}

/* The watchdog outlives a test process killed outright: a shell in a
 * session of its own, reading its end of a socket. A socket rather than
 * a pipe so that telling it is a send with MSG_NOSIGNAL: no SIGPIPE if
 * it has gone. */
int tmpserver_watchdog_start(const char *who, tmpserver_watchdog_t *w, const char *script,
                             const char *const *args)
{
	const char *argv[16];
	int sv[2], n = 0;

	w->pid = 0;
	w->fd = -1;
	argv[n++] = "/bin/sh";
	argv[n++] = "-c";
	argv[n++] = script;
	while (*args && n < 15)
		argv[n++] = *args++;
	argv[n] = NULL;
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
		fprintf(stderr, "%s: cannot start the watchdog: %s\n", who, strerror(errno));
		return -1;
	}
	w->pid = fork();
	if (w->pid < 0) {
		fprintf(stderr, "%s: cannot start the watchdog: %s\n", who, strerror(errno));
		w->pid = 0;
		close(sv[0]);
		close(sv[1]);
		return -1;
	}
	if (w->pid == 0) {
		int fd;
		/* Out of the test's process group and terminal: a Ctrl-C or a
		 * kill of the group leaves it to clean up after the test. */
		setsid();
		signal(SIGHUP, SIG_IGN);
		signal(SIGINT, SIG_IGN);
		signal(SIGPIPE, SIG_IGN);
		dup2(sv[1], STDIN_FILENO);
		if ((fd = open("/dev/null", O_WRONLY)) >= 0) {
			dup2(fd, STDOUT_FILENO);
			close(fd);
		}
		/* stderr stays, for the one line it says. */
		close_from_3();
		if (chdir("/") < 0)
			_exit(126);
		execv(argv[0], (char *const *)argv);
		_exit(127);
	}
	close(sv[1]);
	w->fd = sv[0];
	return 0;
}

int tmpserver_watchdog_tell(tmpserver_watchdog_t *w, const char *line)
{
	char buf[512];
	size_t n = (size_t)snprintf(buf, sizeof buf, "%s\n", line);

	if (w->fd < 0 || n >= sizeof buf)
		return -1;
	return send(w->fd, buf, n, MSG_NOSIGNAL) == (ssize_t)n ? 0 : -1;
}

void tmpserver_watchdog_done(tmpserver_watchdog_t *w)
{
	if (w->pid <= 0)
		return;
	if (tmpserver_watchdog_tell(w, "done") < 0)
		kill(w->pid, SIGKILL);
	close(w->fd);
	w->fd = -1;
	tmpserver_wait(w->pid);
	w->pid = 0;
}

/* "pids P..." lines keep the list current; end-of-file without "done"
 * means the test process is gone. The second rm covers a process that
 * was still finishing a write into the directory as it died. */
static const char killer_script[] =
	"dir=$1 pids=\n"
	"while IFS= read -r line; do\n"
	"\tcase $line in\n"
	"\tdone) exit 0 ;;\n"
	"\tpids*) pids=${line#pids} ;;\n"
	"\tesac\n"
	"done\n"
	"[ -n \"$pids\" ] && kill -KILL $pids 2>/dev/null\n"
	"rm -rf \"$dir\" 2>/dev/null || { sleep 1; rm -rf \"$dir\"; }\n"
	"echo \"$0: the test process ended without stopping its server; killed it and removed $dir\" >&2\n";

int tmpserver_watchdog_start_killer(const char *who, tmpserver_watchdog_t *w, const char *dir)
{
	const char *args[] = {who, dir, NULL};

	return tmpserver_watchdog_start(who, w, killer_script, args);
}

int tmpserver_watchdog_pids(tmpserver_watchdog_t *w, const pid_t *pids, int n)
{
	char line[16 + 12 * TMPSERVER_MAX_PIDS] = "pids";
	size_t len = 4;
	int i;

	for (i = 0; i < n && i < TMPSERVER_MAX_PIDS; i++)
		if (pids[i] > 0)
			len += (size_t)snprintf(line + len, sizeof line - len, " %d", (int)pids[i]);
	return tmpserver_watchdog_tell(w, line);
}
