/* HTTP(S) GET with libcurl (see fetch.h). */
#include "fetch.h"

#include <curl/curl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"

struct sink {
	char *buf;
	size_t len, cap, max;
	int over;
};

static size_t on_data(char *p, size_t size, size_t n, void *user)
{
	struct sink *s = user;
	size_t add = size * n;
	if (s->len + add > s->max) {
		s->over = 1;
		return 0; /* aborts the transfer */
	}
	if (s->len + add + 1 > s->cap) {
		s->cap = (s->len + add + 1) * 2;
		s->buf = pk_xrealloc(s->buf, s->cap);
	}
	memcpy(s->buf + s->len, p, add);
	s->len += add;
	s->buf[s->len] = 0;
	return add;
}

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;

static void curl_init(void)
{
	curl_global_init(CURL_GLOBAL_DEFAULT);
}

int pk_fetch(const char *url, int64_t timeout_ms, size_t max_bytes, char **body, size_t *len,
             char *err, size_t errlen)
{
	pthread_once(&curl_once, curl_init);
	CURL *h = curl_easy_init();
	if (!h) {
		snprintf(err, errlen, "cannot create a curl handle");
		return -1;
	}
	struct sink s = {.max = max_bytes};
	char cerr[CURL_ERROR_SIZE] = "";
	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)(timeout_ms > 0 ? timeout_ms : 10000));
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L); /* worker threads: no SIGALRM */
	curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 1L);
	curl_easy_setopt(h, CURLOPT_MAXREDIRS, 5L);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_data);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, &s);
	curl_easy_setopt(h, CURLOPT_ERRORBUFFER, cerr);
	CURLcode rc = curl_easy_perform(h);
	long status = 0;
	curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
	curl_easy_cleanup(h);
	if (rc != CURLE_OK || status != 200) {
		if (s.over)
			snprintf(err, errlen, "%s: larger than %zu bytes", url, max_bytes);
		else if (rc != CURLE_OK)
			snprintf(err, errlen, "%s: %s", url,
			         cerr[0] ? cerr : curl_easy_strerror(rc));
		else
			snprintf(err, errlen, "%s: status %ld", url, status);
		free(s.buf);
		return -1;
	}
	if (!s.buf)
		s.buf = pk_xcalloc(1, 1);
	*body = s.buf;
	*len = s.len;
	return 0;
}
