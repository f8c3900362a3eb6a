/* redisserver.h - a throwaway Redis for the tests: a real redis-server
 * (Debian's redis-server package) on 127.0.0.1 at a free port, its
 * working directory a fresh temporary directory, nothing persisted
 * (save "", appendonly no): what it holds lives only as long as the
 * process, so a restart brings it back empty. It never touches the
 * system's redis (Debian's package starts one on 6379 where an init
 * system runs): the port is always one picked free, never the default.
 *
 * Lifetime (tmpserver.h): redisserver_stop removes the directory. A
 * server still running when the process exits normally (a cmocka failure
 * included) is stopped by an atexit handler; on SIGINT, SIGTERM, SIGHUP,
 * SIGABRT, SIGSEGV, SIGBUS or SIGFPE a handler SIGKILLs redis-server
 * before the signal takes its course; and a watchdog process, in a
 * session of its own, SIGKILLs it and removes the directory if the test
 * process dies any other way (SIGKILL). The watchdog is told each new
 * pid at restart, and told at redisserver_stop that all is done.
 *
 * Errors: every function that can fail says why on stderr (with the
 * server's log, dir/redis.log, when it is the server that failed), so
 * that a test can simply fail; a missing redis-server names the package
 * to install. Nothing here is thread-safe: call it from the test's main
 * thread. */
#ifndef PARLEY_REDISSERVER_H
#define PARLEY_REDISSERVER_H

#include <sys/types.h>

typedef struct redisserver redisserver_t;

/* Starts a server and returns once it answers PING; NULL (said why)
 * when it cannot. */
redisserver_t *redisserver_start(void);

/* "redis://127.0.0.1:PORT". Valid until stop. */
const char *redisserver_url(const redisserver_t *rs);
int redisserver_port(const redisserver_t *rs);
/* The temporary directory: redis.log, and any file redis writes. */
const char *redisserver_dir(const redisserver_t *rs);
/* The redis-server process, or 0 while it is killed. */
pid_t redisserver_pid(const redisserver_t *rs);

/* For fault tests: SIGKILL, returning once the process is gone (its
 * clients see the connection reset). 0, or -1 when it was not running. */
int redisserver_kill(redisserver_t *rs);
/* Starts a killed server again on the same port, empty; returns once it
 * answers PING. 0, or -1 (said why; also when it is still running). */
int redisserver_restart(redisserver_t *rs);
/* 1 when the process runs and answers PING, else 0. */
int redisserver_alive(const redisserver_t *rs);

/* Stops the server (if running), removes its directory and frees rs.
 * NULL is fine. With $REDISSERVER_KEEP set (to anything but ""), the
 * directory is kept, and named on stderr, for its redis.log. */
void redisserver_stop(redisserver_t *rs);

/* The redis-server binary's path, or NULL (said why, with the apt
 * command that installs it). */
const char *redisserver_bin(void);

#endif
