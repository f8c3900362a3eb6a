/* loop.c - the epoll loop of loop.h.
 *
 * Posted tasks go into a mutex-protected array that the loop swaps out and
 * runs in one go; the eventfd that wakes the loop is written only when the
 * array goes from empty to non-empty, so a burst of posts from the writer
 * thread costs one wake-up, not one per task. */
#include "loop.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

typedef struct task {
	loop_task_fn fn;
	void *p;
	uint64_t u;
} task_t;

struct loop {
	int epfd;
	int wakefd;
	int running;
	loop_watch_t wake_watch;
	loop_hooks_t hooks;
	uint32_t now_s;
	int64_t now_ms;

	pthread_mutex_t lock; /* guards posted, nposted, capposted */
	task_t *posted;
	size_t nposted, capposted;
	task_t *running_tasks; /* swapped with posted; owned by the loop */
	size_t caprunning;
};

int64_t clock_mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t clock_wall_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void on_wake(loop_t *loop, loop_watch_t *w, uint32_t events)
{
	uint64_t v;

	(void)w;
	(void)events;
	if (read(loop->wakefd, &v, sizeof v) < 0 && errno != EAGAIN)
		log_warn("loop: eventfd read: %s", strerror(errno));
}

loop_t *loop_new(const loop_hooks_t *hooks)
{
	loop_t *loop = calloc(1, sizeof *loop);

	if (!loop)
		return NULL;
	loop->epfd = epoll_create1(EPOLL_CLOEXEC);
	loop->wakefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (loop->epfd < 0 || loop->wakefd < 0)
		goto err;
	pthread_mutex_init(&loop->lock, NULL);
	if (hooks)
		loop->hooks = *hooks;
	loop->wake_watch.on_io = on_wake;
	if (loop_watch_add(loop, loop->wakefd, EPOLLIN, &loop->wake_watch) < 0)
		goto err;
	loop->now_ms = clock_mono_ms();
	loop->now_s = (uint32_t)(loop->now_ms / 1000);
	return loop;
err:
	if (loop->epfd >= 0)
		close(loop->epfd);
	if (loop->wakefd >= 0)
		close(loop->wakefd);
	free(loop);
	return NULL;
}

void loop_free(loop_t *loop)
{
	size_t i;

	if (!loop)
		return;
	/* Tasks never run still own what they carry; run them so they can
	 * release it (the gateway's tasks tolerate a vanished connection). */
	for (i = 0; i < loop->nposted; i++)
		loop->posted[i].fn(loop, loop->posted[i].p, loop->posted[i].u);
	close(loop->epfd);
	close(loop->wakefd);
	pthread_mutex_destroy(&loop->lock);
	free(loop->posted);
	free(loop->running_tasks);
	free(loop);
}

int loop_watch_add(loop_t *loop, int fd, uint32_t events, loop_watch_t *w)
{
	struct epoll_event ev = {.events = events, .data.ptr = w};

	return epoll_ctl(loop->epfd, EPOLL_CTL_ADD, fd, &ev);
}

int loop_watch_mod(loop_t *loop, int fd, uint32_t events, loop_watch_t *w)
{
	struct epoll_event ev = {.events = events, .data.ptr = w};

	return epoll_ctl(loop->epfd, EPOLL_CTL_MOD, fd, &ev);
}

int loop_watch_del(loop_t *loop, int fd)
{
	return epoll_ctl(loop->epfd, EPOLL_CTL_DEL, fd, NULL);
}

int loop_post(loop_t *loop, loop_task_fn fn, void *p, uint64_t u)
{
	int was_empty;

	pthread_mutex_lock(&loop->lock);
	if (loop->nposted == loop->capposted) {
		size_t cap = loop->capposted ? loop->capposted * 2 : 256;
		task_t *t = realloc(loop->posted, cap * sizeof *t);
		if (!t) {
			pthread_mutex_unlock(&loop->lock);
			return -1;
		}
		loop->posted = t;
		loop->capposted = cap;
	}
	was_empty = loop->nposted == 0;
	loop->posted[loop->nposted++] = (task_t){fn, p, u};
	pthread_mutex_unlock(&loop->lock);
	if (was_empty) {
		uint64_t one = 1;
		if (write(loop->wakefd, &one, sizeof one) < 0 && errno != EAGAIN)
			log_warn("loop: eventfd write: %s", strerror(errno));
	}
	return 0;
}

static void run_posted(loop_t *loop)
{
	task_t *tasks;
	size_t n, i, cap;

	pthread_mutex_lock(&loop->lock);
	tasks = loop->posted;
	n = loop->nposted;
	cap = loop->capposted;
	loop->posted = loop->running_tasks;
	loop->capposted = loop->caprunning;
	loop->nposted = 0;
	pthread_mutex_unlock(&loop->lock);
	for (i = 0; i < n; i++)
		tasks[i].fn(loop, tasks[i].p, tasks[i].u);
	loop->running_tasks = tasks;
	loop->caprunning = cap;
}

static void update_clock(loop_t *loop)
{
	loop->now_ms = clock_mono_ms();
	loop->now_s = (uint32_t)(loop->now_ms / 1000);
}

void loop_run(loop_t *loop)
{
	struct epoll_event events[256];
	uint32_t last_tick;

	update_clock(loop);
	last_tick = loop->now_s;
	loop->running = 1;
	while (loop->running) {
		int n, i, timeout;

		timeout = (int)(1000 - loop->now_ms % 1000);
		n = epoll_wait(loop->epfd, events, 256, timeout);
		if (n < 0 && errno != EINTR) {
			log_error("loop: epoll_wait: %s", strerror(errno));
			break;
		}
		update_clock(loop);
		for (i = 0; i < n; i++) {
			loop_watch_t *w = events[i].data.ptr;
			w->on_io(loop, w, events[i].events);
		}
		run_posted(loop);
		if (loop->now_s != last_tick && loop->hooks.tick) {
			last_tick = loop->now_s;
			loop->hooks.tick(loop, loop->hooks.ud, loop->now_s);
		}
		if (loop->hooks.before_sleep)
			loop->hooks.before_sleep(loop, loop->hooks.ud);
	}
}

void loop_stop(loop_t *loop)
{
	loop->running = 0;
}

uint32_t loop_now_s(const loop_t *loop)
{
	return loop->now_s;
}

int64_t loop_now_ms(const loop_t *loop)
{
	return loop->now_ms;
}

void *loop_hooks_ud(const loop_t *loop)
{
	return loop->hooks.ud;
}
