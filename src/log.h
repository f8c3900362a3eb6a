/* log.h - one line per event on stderr, safe from any thread.
 *
 * Each line carries a UTC timestamp, the level and the name of the thread that
 * wrote it, so a line from an I/O thread can be told from one of the writer. */
#ifndef PARLEY_LOG_H
#define PARLEY_LOG_H

enum { LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR };

/* Lines below this level are dropped. Set once at start-up. */
extern int log_level;

/* Name of the calling thread in log lines ("main", "io-0", "writer"...).
 * The string must outlive the thread. */
void log_set_thread_name(const char *name);

void log_write(int level, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* A refused request or frame, at info level: one line each, but at most
 * LOG_REFUSALS_PER_S a second for the whole process (then one line saying
 * how many were left out), so that a client sending garbage cannot make
 * the log itself the attack. */
#define LOG_REFUSALS_PER_S 100
void log_refusal(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#define log_debug(...) do { if (log_level <= LOG_DEBUG) log_write(LOG_DEBUG, __VA_ARGS__); } while (0)
#define log_info(...)  log_write(LOG_INFO, __VA_ARGS__)
#define log_warn(...)  log_write(LOG_WARN, __VA_ARGS__)
#define log_error(...) log_write(LOG_ERROR, __VA_ARGS__)

#endif
