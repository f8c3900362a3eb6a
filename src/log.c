/* log.c - formatted log lines on stderr.
 *
 * The whole line is formatted into a local buffer and written with a single
 * write(2), so lines from different threads never interleave. */
#include "log.h"

#include <pthread.h>
#include <stdatomic.h>
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

static void log_vwrite(int level, const char *fmt, va_list ap)
{
	static const char *names[] = {"debug", "info", "warn", "error"};
	char line[1024];
	struct timespec ts;
	struct tm tm;
	size_t n;
	int r;

	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	n = strftime(line, sizeof line, "%Y-%m-%dT%H:%M:%S", &tm);
	r = snprintf(line + n, sizeof line - n, ".%03ldZ %-5s [%s] ",
	             ts.tv_nsec / 1000000, names[level], thread_name);
	if (r > 0)
		n += (size_t)r;
	r = vsnprintf(line + n, sizeof line - n, fmt, ap);
	if (r > 0)
		n += (size_t)r;
	if (n > sizeof line - 2)
		n = sizeof line - 2; /* truncated: keep the newline */
	line[n++] = '\n';
	if (write(STDERR_FILENO, line, n) < 0) {
		/* Nowhere left to report a failed log write. */
	}
}

void log_write(int level, const char *fmt, ...)
{
	va_list ap;

	if (level < log_level)
		return;
	va_start(ap, fmt);
	log_vwrite(level, fmt, ap);
	va_end(ap);
}

/* The refusal lines of the current second, and those not written. */
static atomic_llong refusal_second;
static atomic_uint refusals, refusals_dropped;

void log_refusal(const char *fmt, ...)
{
	long long now = (long long)time(NULL), was = atomic_load(&refusal_second);
	unsigned dropped;
	va_list ap;

	if (LOG_INFO < log_level)
		return;
	if (now != was && atomic_compare_exchange_strong(&refusal_second, &was, now)) {
		atomic_store(&refusals, 0);
		if ((dropped = atomic_exchange(&refusals_dropped, 0)) != 0)
			log_write(LOG_WARN, "log: %u more refusals in the last second were not logged "
			                    "(at most %d a second are)", dropped, LOG_REFUSALS_PER_S);
	}
	if (atomic_fetch_add(&refusals, 1) >= LOG_REFUSALS_PER_S) {
		atomic_fetch_add(&refusals_dropped, 1);
		return;
	}
	va_start(ap, fmt);
	log_vwrite(LOG_INFO, fmt, ap);
	va_end(ap);
}
