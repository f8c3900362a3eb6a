/* integ_web.c - the web client's files as the node serves them, from a
 * folder made for the test: types, caching headers, ETag revalidation,
 * HEAD, methods, and every way a request might try to reach outside the
 * folder (dot segments, encoded ones, hidden files, a symbolic link, a file
 * of unknown type). Also GET /api/v1/users?ids=, which the client uses to
 * name the members it shows. */
#include "harness.h"

#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static hx_server_t srv;
static char webdir[64];

static const char index_html[] = "<!doctype html><title>t</title><script type=module src=app.js></script>\n";
static const char app_js[] = "console.log('hello');\n";

static void put(const char *name, const char *text)
{
	char path[128];
	FILE *f;

	snprintf(path, sizeof path, "%s/%s", webdir, name);
	assert_non_null(f = fopen(path, "w"));
	fputs(text, f);
	fclose(f);
}

static int setup(void **state)
{
	char path[128], arg[80];
	const char *extra[] = {"--web", arg, NULL};

	(void)state;
	snprintf(webdir, sizeof webdir, "/tmp/parley-web-XXXXXX");
	if (!mkdtemp(webdir))
		return -1;
	snprintf(path, sizeof path, "%s/sub", webdir);
	mkdir(path, 0700);
	put("index.html", index_html);
	put("app.js", app_js);
	put("style.css", "body{margin:0}\n");
	put("sub/icon.svg", "<svg xmlns='http://www.w3.org/2000/svg'/>\n");
	put(".hidden.js", "secret\n");
	put("secret.key", "secret\n");
	snprintf(path, sizeof path, "%s/leak.txt", webdir);
	if (symlink("/etc/passwd", path) < 0)
		return -1;
	snprintf(arg, sizeof arg, "%s", webdir);
	return hx_start(&srv, NULL, extra);
}

static int teardown(void **state)
{
	char cmd[128];

	(void)state;
	hx_finish(&srv);
	snprintf(cmd, sizeof cmd, "rm -rf %s", webdir);
	return system(cmd) == 0 ? 0 : -1;
}

/* Sends a raw request (which should say Connection: close) and reads the
 * whole answer until the server closes. */
static size_t exchange(const char *req, char *out, size_t cap)
{
	pc_conn_t *c = pc_connect("127.0.0.1", srv.port);
	struct pollfd pf;
	size_t len = 0;

	assert_non_null(c);
	assert_int_equal(pc_send_raw(c, req, strlen(req)), 0);
	pf.fd = pc_fd(c);
	pf.events = POLLIN;
	for (;;) {
		ssize_t r;
		assert_true(poll(&pf, 1, HX_TIMEOUT) == 1);
		r = read(pf.fd, out + len, cap - 1 - len);
		if (r <= 0)
			break;
		len += (size_t)r;
		assert_true(len < cap - 1);
	}
	out[len] = 0;
	pc_close(c);
	return len;
}

static int status_of(const char *resp)
{
	return strncmp(resp, "HTTP/1.1 ", 9) ? -1 : atoi(resp + 9);
}

/* The value of a header in a raw response, into out. */
static int header_of(const char *resp, const char *name, char *out, size_t cap)
{
	const char *end = strstr(resp, "\r\n\r\n"), *p = resp;
	size_t nlen = strlen(name);

	while ((p = strstr(p, "\r\n")) && p < end) {
		p += 2;
		if (!strncasecmp(p, name, nlen) && p[nlen] == ':') {
			const char *v = p + nlen + 1, *eol = strstr(v, "\r\n");
			while (*v == ' ')
				v++;
			snprintf(out, cap, "%.*s", (int)(eol - v), v);
			return 0;
		}
	}
	return -1;
}

static const char *body_of(const char *resp)
{
	const char *p = strstr(resp, "\r\n\r\n");
	return p ? p + 4 : "";
}

static void get(const char *path, char *resp, size_t cap)
{
	char req[512];

	snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", path);
	exchange(req, resp, cap);
}

static void test_files_and_types(void **state)
{
	static char resp[8192];
	char v[256];

	(void)state;
	get("/", resp, sizeof resp);
	assert_int_equal(status_of(resp), 200);
	assert_string_equal(body_of(resp), index_html);
	assert_int_equal(header_of(resp, "Content-Type", v, sizeof v), 0);
	assert_string_equal(v, "text/html; charset=utf-8");
	assert_int_equal(header_of(resp, "Cache-Control", v, sizeof v), 0);
	assert_string_equal(v, "no-cache");
	assert_int_equal(header_of(resp, "X-Content-Type-Options", v, sizeof v), 0);
	assert_string_equal(v, "nosniff");
	assert_int_equal(header_of(resp, "Content-Security-Policy", v, sizeof v), 0);
	assert_non_null(strstr(v, "default-src 'self'"));
	assert_int_equal(header_of(resp, "ETag", v, sizeof v), 0);
	assert_int_equal(strlen(v), 18);

	get("/index.html", resp, sizeof resp);
	assert_int_equal(status_of(resp), 200);
	assert_string_equal(body_of(resp), index_html);
	get("/app.js?v=2", resp, sizeof resp); /* a query names the same file */
	assert_int_equal(status_of(resp), 200);
	assert_string_equal(body_of(resp), app_js);
	assert_int_equal(header_of(resp, "Content-Type", v, sizeof v), 0);
	assert_string_equal(v, "text/javascript; charset=utf-8");
	get("/style.css", resp, sizeof resp);
	assert_int_equal(header_of(resp, "Content-Type", v, sizeof v), 0);
	assert_string_equal(v, "text/css; charset=utf-8");
	get("/sub/icon.svg", resp, sizeof resp);
	assert_int_equal(status_of(resp), 200);
	assert_int_equal(header_of(resp, "Content-Type", v, sizeof v), 0);
	assert_string_equal(v, "image/svg+xml");
}

static void test_revalidation_and_head(void **state)
{
	static char resp[8192];
	char etag[64], req[512], v[64];

	(void)state;
	get("/app.js", resp, sizeof resp);
	assert_int_equal(header_of(resp, "ETag", etag, sizeof etag), 0);
	snprintf(req, sizeof req,
	         "GET /app.js HTTP/1.1\r\nHost: x\r\nIf-None-Match: \"0000\", %s\r\nConnection: close\r\n\r\n", etag);
	exchange(req, resp, sizeof resp);
	assert_int_equal(status_of(resp), 304);
	assert_string_equal(body_of(resp), "");
	/* Another file's tag does not match. */
	exchange("GET /app.js HTTP/1.1\r\nHost: x\r\nIf-None-Match: \"0123456789abcdef\"\r\n"
	         "Connection: close\r\n\r\n",
	         resp, sizeof resp);
	assert_int_equal(status_of(resp), 200);
	assert_string_equal(body_of(resp), app_js);
	/* HEAD: the GET's head, no body. */
	exchange("HEAD /app.js HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", resp, sizeof resp);
	assert_int_equal(status_of(resp), 200);
	assert_int_equal(header_of(resp, "Content-Length", v, sizeof v), 0);
	assert_int_equal(atoi(v), (int)strlen(app_js));
	assert_string_equal(body_of(resp), "");
	/* Keep-alive: two files on one connection, in order. */
	{
		pc_conn_t *c = pc_connect("127.0.0.1", srv.port);
		pc_response_t r;
		assert_int_equal(pc_http(c, "GET", "/app.js", NULL, NULL, &r, HX_TIMEOUT), 0);
		assert_int_equal(r.status, 200);
		assert_memory_equal(r.body, app_js, strlen(app_js));
		pc_response_free(&r);
		assert_int_equal(pc_http(c, "GET", "/", NULL, NULL, &r, HX_TIMEOUT), 0);
		assert_int_equal(r.status, 200);
		assert_memory_equal(r.body, index_html, strlen(index_html));
		pc_response_free(&r);
		pc_close(c);
	}
}

static void test_nothing_outside(void **state)
{
	static char resp[8192];
	static const char *const refused[] = {
		"/../secret.key", "/sub/../app.js", "/%2e%2e/etc/passwd", "/..%2fetc%2fpasswd",
		"/.hidden.js",    "/secret.key",    "/leak.txt",          "//app.js",
		"/app.js/",       "/sub",           "/sub/",              "/APP.JS",
		"/index.html%00", "/etc/passwd",
	};
	size_t i;

	(void)state;
	for (i = 0; i < sizeof refused / sizeof refused[0]; i++) {
		get(refused[i], resp, sizeof resp);
		if (status_of(resp) != 404 && status_of(resp) != 400)
			fail_msg("GET %s: %d", refused[i], status_of(resp));
		assert_null(strstr(resp, "secret"));
		assert_null(strstr(resp, "root:"));
	}
	/* Methods other than GET and HEAD: 405 with Allow. */
	exchange("POST /app.js HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}", resp,
	         sizeof resp);
	assert_int_equal(status_of(resp), 405);
	assert_non_null(strstr(resp, "Allow: GET, HEAD"));
	assert_non_null(strstr(resp, "\"bad_request\""));
}

static void test_users_by_id(void **state)
{
	hx_user_t a, b, c;
	char path[256];
	json_t *j, *users;
	int st, i, seen_a = 0, seen_b = 0;
	size_t k, len;

	(void)state;
	hx_user(srv.port, "ida", &a);
	hx_user(srv.port, "idb", &b);
	hx_user(srv.port, "idc", &c);
	hx_direct(srv.port, &a, &b);
	/* a shares a chat with b, none with c: c and unknown ids are left out. */
	snprintf(path, sizeof path, "/api/v1/users?ids=%lld,%lld,%lld,999999", (long long)b.id, (long long)c.id,
	         (long long)a.id);
	j = hx_http(srv.port, "GET", path, a.token, NULL, &st);
	assert_int_equal(st, 200);
	users = json_object_get(j, "users");
	assert_int_equal(json_array_size(users), 2);
	for (k = 0; k < json_array_size(users); k++) {
		json_t *u = json_array_get(users, k);
		if (hx_int(u, "user_id") == a.id && !strcmp(hx_str(u, "username"), a.name))
			seen_a = 1;
		if (hx_int(u, "user_id") == b.id && !strcmp(hx_str(u, "username"), b.name))
			seen_b = 1;
	}
	assert_true(seen_a && seen_b);
	json_decref(j);
	/* A token is required; malformed lists are refused whole. */
	j = hx_http(srv.port, "GET", path, NULL, NULL, &st);
	assert_int_equal(st, 401);
	json_decref(j);
	{
		static const char *const bad[] = {"", "1,,2", "1,", ",1", "a", "01", "1;2", "12345678901234567"};
		for (i = 0; i < (int)(sizeof bad / sizeof bad[0]); i++) {
			snprintf(path, sizeof path, "/api/v1/users?ids=%s", bad[i]);
			j = hx_http(srv.port, "GET", path, a.token, NULL, &st);
			if (st != 400)
				fail_msg("ids=%s: %d", bad[i], st);
			json_decref(j);
		}
	}
	/* At most 256 ids. */
	{
		char *big = malloc(4096);
		len = (size_t)sprintf(big, "/api/v1/users?ids=1");
		for (i = 0; i < 256; i++)
			len += (size_t)sprintf(big + len, ",%d", i + 2);
		j = hx_http(srv.port, "GET", big, a.token, NULL, &st);
		assert_int_equal(st, 400);
		json_decref(j);
		free(big);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_files_and_types),
		cmocka_unit_test(test_revalidation_and_head),
		cmocka_unit_test(test_nothing_outside),
		cmocka_unit_test(test_users_by_id),
	};
	hx_filter();
	return cmocka_run_group_tests(tests, setup, teardown);
}
