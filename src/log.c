/* log.c - formatted log lines on stderr.
 *
 * The whole line is formatted into a local buffer and written with a single
 * write(2), so lines from different threads never interleave. */
#include "log.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

int log_level = LOG_INFO;
static _Thread_local const char *thread_name = "main";

void log_set_thread_name(const char *name)
{
	thread_name = name;
	/* Also the kernel's name, so top -H and perf tell threads apart. */
	pthread_setname_np(pthread_self(), name);
}

void log_write(int level, const char *fmt, ...)
{
	static const char *names[] = {"debug", "info", "warn", "error"};
	char line[1024];
	struct timespec ts;
	struct tm tm;
	size_t n;
	va_list ap;
	int r;

	if (level < log_level)
		return;
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	n = strftime(line, sizeof line, "%Y-%m-%dT%H:%M:%S", &tm);
	r = snprintf(line + n, sizeof line - n, ".%03ldZ %-5s [%s] ",
	             ts.tv_nsec / 1000000, names[level], thread_name);
	if (r > 0)
		n += (size_t)r;
	va_start(ap, fmt);
	r = vsnprintf(line + n, sizeof line - n, fmt, ap);
	va_end(ap);
	if (r > 0)
		n += (size_t)r;
	if (n > sizeof line - 2)
		n = sizeof line - 2; /* truncated: keep the newline */
	line[n++] = '\n';
	if (write(STDERR_FILENO, line, n) < 0) {
		/* Nowhere left to report a failed log write. */
	}
}
