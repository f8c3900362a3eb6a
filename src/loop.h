/* loop.h - one epoll event loop, owned by one I/O thread.
 *
 * A loop watches file descriptors, runs tasks posted to it from any thread,
 * calls a tick hook once a second and a before-sleep hook at the end of every
 * turn (where the gateway flushes the writes the turn produced). Everything
 * but loop_post and loop_wake runs on the loop's own thread. */
#ifndef PARLEY_LOOP_H
#define PARLEY_LOOP_H

#include <stdint.h>
#include <sys/epoll.h>

typedef struct loop loop_t;
typedef struct loop_watch loop_watch_t;

/* Called with the epoll events of a watched descriptor. */
typedef void (*loop_io_fn)(loop_t *loop, loop_watch_t *w, uint32_t events);

/* Embedded first in whatever owns a watched descriptor. */
struct loop_watch {
	loop_io_fn on_io;
};

/* A posted task: fn(loop, p, u) runs on the loop's thread. */
typedef void (*loop_task_fn)(loop_t *loop, void *p, uint64_t u);

typedef struct loop_hooks {
	void (*before_sleep)(loop_t *loop, void *ud);
	void (*tick)(loop_t *loop, void *ud, uint32_t now_s);
	void *ud;
} loop_hooks_t;

/* Returns NULL on failure (errno set). */
loop_t *loop_new(const loop_hooks_t *hooks);
void loop_free(loop_t *loop);

int loop_watch_add(loop_t *loop, int fd, uint32_t events, loop_watch_t *w);
int loop_watch_mod(loop_t *loop, int fd, uint32_t events, loop_watch_t *w);
int loop_watch_del(loop_t *loop, int fd);

/* Queues fn(loop, p, u) to run on the loop's thread, in posting order for
 * any one posting thread. Safe from any thread. Returns 0, or -1 when out
 * of memory (the task is not queued). */
int loop_post(loop_t *loop, loop_task_fn fn, void *p, uint64_t u);

/* Runs until loop_stop is called on the loop's thread. */
void loop_run(loop_t *loop);
void loop_stop(loop_t *loop);

/* The ud of the hooks the loop was made with. */
void *loop_hooks_ud(const loop_t *loop);

/* Monotonic seconds and milliseconds, read once per loop turn. */
uint32_t loop_now_s(const loop_t *loop);
int64_t loop_now_ms(const loop_t *loop);

/* Monotonic clock in milliseconds. */
int64_t clock_mono_ms(void);
/* Wall clock, Unix milliseconds. */
int64_t clock_wall_ms(void);

#endif
