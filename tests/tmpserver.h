/* tmpserver.h - what the tests' throwaway servers (pgserver.h,
 * redisserver.h, natsserver.h) share: free loopback ports, a temporary
 * directory per server, the server's processes and their logs, and the
 * machinery that makes a server end with the test process that started
 * it, however that process ends:
 *
 *  - a normal exit (a cmocka failure included: cmocka longjmps out of the
 *    failed test and main returns): an atexit hook calls the stop
 *    function of every server still registered;
 *  - SIGINT, SIGTERM, SIGHUP, SIGABRT, SIGSEGV, SIGBUS or SIGFPE: a
 *    handler sends every registered server process the signal its kind
 *    asked for (a kill per pid: async-signal-safe), then the signal takes
 *    its course under the action it had before;
 *  - anything else (SIGKILL, which no handler sees): a watchdog process,
 *    in a session of its own, holds one end of a socket whose other end
 *    only the test process has; end-of-file without a "done" line first
 *    means the test process is gone, and the watchdog's script cleans up.
 *
 * A forked child inherits the registry but does not own what is in it:
 * its exit and its signals leave its parent's servers alone, and its own
 * servers take other slots.
 *
 * Errors are said on stderr, prefixed with the caller's name ("who"), so
 * that a test can simply fail. Nothing here is thread-safe: call it from
 * the test's main thread. */
#ifndef PARLEY_TMPSERVER_H
#define PARLEY_TMPSERVER_H

#include <stddef.h>
#include <sys/types.h>

#define TMPSERVER_MAX 16     /* servers live at once in one process */
#define TMPSERVER_MAX_PIDS 8 /* processes of one server */

/* ---- ports, directories, logs --------------------------------------- */

/* A loopback port nobody listens on now: bound and released, so a server
 * may still lose it to another process before it binds; callers retry
 * on a clash. -1 (errno set) when none can be had. */
int tmpserver_free_port(void);
/* n (at most 3 * TMPSERVER_MAX_PIDS) distinct such ports, each held
 * until all are picked. 0 or -1. */
int tmpserver_free_ports(int *ports, int n);

/* Makes "$TMPDIR/parley-KIND-XXXXXX" (/tmp when $TMPDIR is unset or
 * longer than 60 bytes: Unix socket paths inside must fit in 107) into
 * dir (cap bytes). 0, or -1 (said why). */
int tmpserver_make_dir(const char *who, const char *kind, char *dir, size_t cap);
/* rm -rf dir. */
void tmpserver_remove_tree(const char *dir);
/* 1 when the environment variable env is set to anything but "". */
int tmpserver_keep(const char *env);

/* Prints the last 4 KB of the file at path to stderr, headed
 * "WHO: --- WHAT (PATH) ---"; nothing if it cannot be read. */
void tmpserver_show_tail(const char *who, const char *what, const char *path);
/* 1 when the file at path contains needle (a line of it, up to 1 KB). */
int tmpserver_file_has(const char *path, const char *needle);

/* The first executable file named name in $PATH, then /usr/sbin,
 * /usr/bin, /sbin, /bin, copied into out (cap bytes). 0 or -1. */
int tmpserver_find_bin(const char *name, char *out, size_t cap);
/* A server's binary: $env when set (it must be executable), else name as
 * tmpserver_find_bin finds it, copied into out. 0, or -1 (said why,
 * prefixed with who, with hint: how to install it). */
int tmpserver_server_bin(const char *who, const char *env, const char *name, const char *hint, char *out,
                         size_t cap);

/* ---- processes ------------------------------------------------------ */

/* Starts argv[0] (an absolute path) with argv in directory cwd, its
 * stdout and stderr appended to the file log (NULL: /dev/null), stdin
 * /dev/null, no file descriptor of the test's but those; envp NULL is
 * the caller's environment. Never through a shell. Returns the pid, or
 * -1 (said why). An exec failure shows as exit status 127. */
pid_t tmpserver_spawn(const char *who, const char *const *argv, const char *const *envp,
                      const char *cwd, const char *log);
/* 1 while the child pid runs, 0 once it has ended, -1 for no such
 * child. It is not reaped: a process told of the pid (the watchdog) can
 * be told it is gone before the system may reuse the pid. */
int tmpserver_running(pid_t pid);
/* Waits for the child pid to end and reaps it. Its waitpid status, or
 * -1. */
int tmpserver_wait(pid_t pid);
/* Sends the child pid sig and, if it has not ended within ms, SIGKILL;
 * returns once it has ended, unreaped (tmpserver_wait reaps it). 0, or
 * -1 for no such child. */
int tmpserver_end(pid_t pid, int sig, int ms);

/* For tests of the cleanup: 1 when no live process pid runs the
 * program comm (as /proc/PID/stat names it): there is none, it is a
 * zombie nobody has reaped yet, or the pid now belongs to another
 * program. Any process's pid, not only a child's. */
int tmpserver_pid_gone(pid_t pid, const char *comm);

/* Sleeps ms milliseconds: the poll interval of the readiness loops
 * (which wait for a server's answer, never for a fixed time). */
void tmpserver_nap(int ms);
/* A monotonic clock in milliseconds, for deadlines. */
long long tmpserver_now_ms(void);

/* ---- ending with the test process ----------------------------------- */

/* Registers a server: at exit, stop(server) is called if the server is
 * still registered then. Installs the atexit hook and the signal
 * handlers on the first call of the process. Returns the slot, or -1
 * when TMPSERVER_MAX are live (said why). */
int tmpserver_register(const char *who, void (*stop)(void *server), void *server);
/* What the fatal-signal handler does for the slot's i-th process (i <
 * TMPSERVER_MAX_PIDS): kill(pid, sig). pid 0: nothing. */
void tmpserver_set_pid(int slot, int i, pid_t pid, int sig);
/* Forgets the slot (its pids included): the server's stop function
 * calls this. A slot of -1 is ignored. */
void tmpserver_unregister(int slot);

/* A watchdog: /bin/sh -c SCRIPT with args ($0 first), its stdin the
 * socket, stdout /dev/null, stderr the test's (for the one line it says
 * when it has cleaned up), working directory /. The script reads lines
 * from stdin; "done" is the last one it is sent. */
typedef struct tmpserver_watchdog {
	pid_t pid; /* 0: none */
	int fd;    /* the test's end of the socket; -1: none */
} tmpserver_watchdog_t;

/* 0, or -1 (said why). */
int tmpserver_watchdog_start(const char *who, tmpserver_watchdog_t *w, const char *script,
                             const char *const *args);
/* Sends the watchdog one line (without its newline). 0 or -1; never
 * SIGPIPE. */
int tmpserver_watchdog_tell(tmpserver_watchdog_t *w, const char *line);
/* Tells it "done" (or kills it if it cannot be told) and reaps it.
 * Fine on a watchdog never started. */
void tmpserver_watchdog_done(tmpserver_watchdog_t *w);

/* The watchdog of servers that are plain processes (Redis, NATS):
 * started with the server's directory, then told the server's current
 * pids with tmpserver_watchdog_pids whenever they change. When the test
 * process dies, it SIGKILLs them, removes the directory and says so. */
int tmpserver_watchdog_start_killer(const char *who, tmpserver_watchdog_t *w, const char *dir);
/* pids[0..n-1], zeros skipped. 0 or -1. Tell it a process is gone before
 * reaping it, so that it never holds a pid the system may reuse. */
int tmpserver_watchdog_pids(tmpserver_watchdog_t *w, const pid_t *pids, int n);

#endif
