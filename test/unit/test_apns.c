/*-------------------------------------------------------------------------
 *
 * test_apns.c
 *	  Unit tests for apns.c without a network: configuration checks, the
 *	  payload built from rendered messages, the request prepare() builds
 *	  on a curl easy handle (URL, headers, body, the provider token as
 *	  OpenSSL verifies it), the classification of every APNS answer, the
 *	  provider-token storm rule and the warm-up flag.
 *
 *-------------------------------------------------------------------------
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "crypto.h"
#include "provider.h"
#include "testutil.h"

static const NotifyProviderOps *ops = &notify_apns_ops;

#define TOKEN "0123456789ABCDEF0123456789abcdef0123456789abcdef0123456789ABCDEF"

static EVP_PKEY *ec_key;
static char *ec_pem;

static json_t *
config_new(void)
{
	return json_pack("{s:s, s:s, s:s, s:s, s:s}",
					 "team_id", "TEAM123456", "key_id", "KEY1234567",
					 "key", ec_pem, "topic", "com.example.app",
					 "endpoint", "https://apns.test:8443/");
}

static json_t *
msg(const char *text)
{
	json_error_t jerr;
	json_t	   *m = json_loads(text, 0, &jerr);

	if (m == NULL)
	{
		fprintf(stderr, "bad test JSON: %s\n", jerr.text);
		exit(2);
	}
	return m;
}

/* A delivery as the engine hands it to prepare(). */
static void
d_init(NotifyDelivery *d, int64_t id, const char *token, json_t *message)
{
	memset(d, 0, sizeof(*d));
	d->id = id;
	d->channel = "push";
	d->destination = token;
	d->recipient = "user-1";
	d->message = message;
	d->attempt = 1;
	d->retry_after = -1;
	d->outcome = NOTIFY_OUTCOME_RETRY;
	d->easy = curl_easy_init();
}

/* What the engine does after finish(). */
static void
d_cleanup(void *state, NotifyDelivery *d)
{
	if (ops->release)
		ops->release(state, d);
	curl_slist_free_all(d->headers);
	free(d->body);
	curl_easy_cleanup(d->easy);
	notify_buf_free(&d->response);
	notify_buf_free(&d->response_headers);
	memset(d, 0, sizeof(*d));
}

/* Feed an answer to finish(). */
static void
answer(void *state, NotifyDelivery *d, CURLcode rc, long status,
	   const char *body, const char *headers)
{
	d->http_status = status;
	if (body)
		notify_buf_append(&d->response, body, strlen(body));
	if (headers)
		notify_buf_append(&d->response_headers, headers, strlen(headers));
	d->outcome = NOTIFY_OUTCOME_RETRY;	/* as the engine leaves it */
	d->retry_after = -1;
	ops->finish(state, d, rc);
}

/* The bearer token a prepared delivery carries (static copy). */
static const char *
bearer(NotifyDelivery *d)
{
	static char buf[1024];
	const char *v = tu_header(d->headers, "authorization");

	if (v == NULL || strncmp(v, "bearer ", 7) != 0)
		return "";
	snprintf(buf, sizeof(buf), "%s", v + 7);
	return buf;
}

static void
test_config(void)
{
	json_t	   *c = config_new();
	char	   *err;
	EVP_PKEY   *rsa;
	char	   *rsa_pem;
	const char *const *sk;
	bool		key_secret = false;

	err = ops->check_config(c);
	CHECK(err == NULL, "valid config accepted (%s)", err ? err : "");
	free(err);

	for (sk = ops->secret_keys; sk && *sk; sk++)
		if (strcmp(*sk, "key") == 0)
			key_secret = true;
	CHECK(key_secret, "\"key\" is a secret key");
	CHECK(strcmp(ops->kind, "apns") == 0 && strcmp(ops->channel, "push") == 0,
		  "kind apns, channel push");

	json_object_del(c, "team_id");
	err = ops->check_config(c);
	CHECK(err && strstr(err, "team_id"), "missing team_id: %s", err);
	free(err);
	json_decref(c);

	c = config_new();
	json_object_set_new(c, "topic", json_string(""));
	err = ops->check_config(c);
	CHECK(err && strstr(err, "topic"), "empty topic: %s", err);
	free(err);
	json_decref(c);

	c = config_new();
	json_object_set_new(c, "key", json_string("-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg\n-----END PRIVATE KEY-----\n"));
	err = ops->check_config(c);
	CHECK(err && strstr(err, "key") && !strstr(err, "MIGHAgEA") &&
		  !strstr(err, "BEGIN"), "bad key refused without echoing it: %s", err);
	free(err);
	json_decref(c);

	rsa = tu_keygen("RSA");
	rsa_pem = tu_pem(rsa, false);
	c = config_new();
	json_object_set_new(c, "key", json_string(rsa_pem));
	err = ops->check_config(c);
	CHECK(err && strstr(err, "P-256"), "RSA key refused: %s", err);
	free(err);
	json_decref(c);
	free(rsa_pem);
	EVP_PKEY_free(rsa);

	c = config_new();
	json_object_set_new(c, "sandbox", json_string("yes"));
	err = ops->check_config(c);
	CHECK(err && strstr(err, "sandbox"), "non-boolean sandbox: %s", err);
	free(err);
	json_decref(c);

	c = config_new();
	json_object_set_new(c, "push_type", json_string("telepathy"));
	err = ops->check_config(c);
	CHECK(err && strstr(err, "push_type"), "unknown push_type: %s", err);
	free(err);
	json_decref(c);

	c = config_new();
	json_object_set_new(c, "endpoint", json_string("ftp://x"));
	err = ops->check_config(c);
	CHECK(err && strstr(err, "endpoint"), "bad endpoint: %s", err);
	free(err);
	json_decref(c);

	err = ops->check_config(json_null());
	CHECK(err != NULL, "non-object config refused");
	free(err);

	{
		void	   *st;

		c = config_new();
		json_object_del(c, "key");
		st = ops->create(c, &err);
		CHECK(st == NULL && err && strstr(err, "key"),
			  "create refuses a bad config: %s", err);
		free(err);
		json_decref(c);
	}
}

static const char *full_message =
"{\"title\":\"Hi\",\"subtitle\":\"Sub\",\"body\":\"Body text\",\"sound\":\"default\","
"\"badge\":3,\"category\":\"cat\",\"thread_id\":\"t1\",\"collapse_id\":\"c1\","
"\"mutable_content\":true,\"image\":\"https://img\",\"url\":\"https://u\","
"\"data\":{\"order_id\":\"42\",\"nested\":{\"a\":1}},"
"\"apns\":{\"interruption-level\":\"time-sensitive\"}}";

static const char *full_payload =
"{\"aps\":{\"alert\":{\"title\":\"Hi\",\"subtitle\":\"Sub\",\"body\":\"Body text\"},"
"\"badge\":3,\"sound\":\"default\",\"thread-id\":\"t1\",\"category\":\"cat\","
"\"mutable-content\":1,\"interruption-level\":\"time-sensitive\"},"
"\"order_id\":\"42\",\"nested\":{\"a\":1}}";

static void
test_payload(void)
{
	json_t	   *m;
	long		limit = 0;
	long		n;
	char	   *err = NULL;

	m = msg(full_message);
	n = ops->payload_size(m, &limit, &err);
	CHECK(n == (long) strlen(full_payload) && limit == 4096,
		  "payload_size %ld (expected %zu), limit %ld", n,
		  strlen(full_payload), limit);
	json_decref(m);

	m = msg("{\"content_available\":true,\"data\":{\"k\":\"v\"}}");
	n = ops->payload_size(m, &limit, &err);
	CHECK(n == (long) strlen("{\"aps\":{\"content-available\":1},\"k\":\"v\"}"),
		  "background payload size %ld", n);
	json_decref(m);

	m = msg("{\"title\":\"\",\"body\":null,\"data\":{}}");
	err = NULL;
	n = ops->payload_size(m, &limit, &err);
	CHECK(n == -1 && err && strstr(err, "title"),
		  "nothing to show refused: %s", err);
	free(err);
	json_decref(m);

	m = msg("{\"title\":\"x\",\"data\":{\"aps\":1}}");
	err = NULL;
	n = ops->payload_size(m, &limit, &err);
	CHECK(n == -1 && err && strstr(err, "aps"), "data key aps refused: %s", err);
	free(err);
	json_decref(m);

	m = msg("{\"title\":7}");
	err = NULL;
	n = ops->payload_size(m, &limit, &err);
	CHECK(n == -1 && err && strstr(err, "title"), "non-string title: %s", err);
	free(err);
	json_decref(m);

	m = msg("{\"title\":\"x\",\"badge\":\"lots\"}");
	err = NULL;
	n = ops->payload_size(m, &limit, &err);
	CHECK(n == -1 && err && strstr(err, "badge"), "bad badge: %s", err);
	free(err);
	json_decref(m);

	m = msg("{\"title\":\"x\",\"badge\":\"5\"}");
	err = NULL;
	n = ops->payload_size(m, &limit, &err);
	CHECK(n == (long) strlen("{\"aps\":{\"alert\":{\"title\":\"x\"},\"badge\":5}}"),
		  "badge as a rendered string becomes an integer");
	json_decref(m);

	m = msg("{\"title\":\"x\",\"apns\":{\"headers\":{\"authorization\":\"y\"}}}");
	err = NULL;
	n = ops->payload_size(m, &limit, &err);
	CHECK(n == -1 && err && strstr(err, "authorization"),
		  "apns.headers cannot set authorization: %s", err);
	free(err);
	json_decref(m);

	m = msg("{\"title\":\"x\",\"collapse_id\":\"0123456789012345678901234567890123456789012345678901234567890123456789\"}");
	err = NULL;
	n = ops->payload_size(m, &limit, &err);
	CHECK(n == -1 && err && strstr(err, "collapse_id"),
		  "collapse_id over 64 bytes: %s", err);
	free(err);
	json_decref(m);
}

static void
test_prepare(void)
{
	json_t	   *c = config_new();
	char	   *err = NULL;
	void	   *st = ops->create(c, &err);
	NotifyDelivery d;
	json_t	   *m;
	char		uuid[37];
	char	   *url = NULL;
	char	   *h = NULL;
	char	   *cl = NULL;
	time_t		now = time(NULL);
	bool		ok;

	json_decref(c);				/* the state holds its own reference */
	CHECK(st != NULL, "create (%s)", err ? err : "");
	if (st == NULL)
		return;
	CHECK(ops->needs_warmup(st), "needs warm-up before any request");

	m = msg(full_message);
	d_init(&d, 12345, TOKEN, m);
	d.priority = 0;
	d.expires_at = 1900000000;
	ok = ops->prepare(st, &d);
	CHECK(ok, "prepare a full alert (%s)", d.error);

	curl_easy_getinfo(d.easy, CURLINFO_EFFECTIVE_URL, &url);
	CHECK(url && strcmp(url, "https://apns.test:8443/3/device/"
						"0123456789abcdef0123456789abcdef"
						"0123456789abcdef0123456789abcdef") == 0,
		  "URL is endpoint/3/device/<lower-case token> (%s)", url ? url : "");
	CHECK(d.body && d.body_len == strlen(full_payload) &&
		  strcmp(d.body, full_payload) == 0, "body is the expected payload");
	if (d.body && strcmp(d.body, full_payload) != 0)
		printf("# body %s\n", d.body);

	notify_uuid_for_id(12345, uuid);
	CHECK(tu_header_count(d.headers) == 9, "9 header lines, Expect: suppressed (%d)",
		  tu_header_count(d.headers));
	CHECK(tu_header(d.headers, "apns-topic") &&
		  strcmp(tu_header(d.headers, "apns-topic"), "com.example.app") == 0,
		  "apns-topic");
	CHECK(tu_header(d.headers, "apns-push-type") &&
		  strcmp(tu_header(d.headers, "apns-push-type"), "alert") == 0,
		  "apns-push-type alert");
	CHECK(tu_header(d.headers, "apns-priority") &&
		  strcmp(tu_header(d.headers, "apns-priority"), "10") == 0,
		  "apns-priority 10");
	CHECK(tu_header(d.headers, "apns-expiration") &&
		  strcmp(tu_header(d.headers, "apns-expiration"), "1900000000") == 0,
		  "apns-expiration from expires_at");
	CHECK(tu_header(d.headers, "apns-collapse-id") &&
		  strcmp(tu_header(d.headers, "apns-collapse-id"), "c1") == 0,
		  "apns-collapse-id");
	CHECK(tu_header(d.headers, "apns-id") &&
		  strcmp(tu_header(d.headers, "apns-id"), uuid) == 0,
		  "apns-id = uuid_for_id(id) (%s)", uuid);
	CHECK(tu_header(d.headers, "content-type") &&
		  strcmp(tu_header(d.headers, "content-type"), "application/json") == 0,
		  "content-type json");

	CHECK(tu_jwt_verify(bearer(&d), ec_key, "ES256", &h, &cl),
		  "bearer token is an ES256 JWT that verifies with the key");
	CHECK(h && strcmp(h, "{\"alg\":\"ES256\",\"kid\":\"KEY1234567\"}") == 0,
		  "token header %s", h ? h : "");
	{
		json_t	   *claims = cl ? json_loads(cl, 0, NULL) : NULL;
		json_int_t	iat = json_integer_value(json_object_get(claims, "iat"));

		CHECK(claims &&
			  strcmp(json_string_value(json_object_get(claims, "iss")),
					 "TEAM123456") == 0 &&
			  iat >= now - 5 && iat <= now + 5 && json_object_size(claims) == 2,
			  "token claims iss=team_id, iat=now (%s)", cl ? cl : "");
		json_decref(claims);
	}
	free(h);
	free(cl);

	/* a second delivery reuses the token */
	{
		char		first[1024];
		NotifyDelivery d2;

		snprintf(first, sizeof(first), "%s", bearer(&d));
		d_init(&d2, 12346, TOKEN, m);
		CHECK(ops->prepare(st, &d2) && strcmp(bearer(&d2), first) == 0,
			  "the provider token is reused");
		d_cleanup(st, &d2);
	}

	/* 200: SENT with the apns-id header, and warm */
	answer(st, &d, CURLE_OK, 200, "",
		   "HTTP/2 200\r\napns-id: 7B2C5C6E-AAAA-BBBB-CCCC-0123456789AB\r\n\r\n");
	CHECK(d.outcome == NOTIFY_OUTCOME_SENT &&
		  strcmp(d.provider_id, "7B2C5C6E-AAAA-BBBB-CCCC-0123456789AB") == 0,
		  "200 -> SENT, provider_id from apns-id (%s)", d.provider_id);
	CHECK(!ops->needs_warmup(st), "warm after one success");
	d_cleanup(st, &d);
	json_decref(m);

	/* background push */
	m = msg("{\"content_available\":true,\"data\":{\"k\":\"v\"}}");
	d_init(&d, 1, TOKEN, m);
	d.priority = 5;
	ok = ops->prepare(st, &d);
	CHECK(ok && strcmp(tu_header(d.headers, "apns-push-type"), "background") == 0 &&
		  strcmp(tu_header(d.headers, "apns-priority"), "5") == 0 &&
		  tu_header(d.headers, "apns-expiration") == NULL &&
		  tu_header(d.headers, "apns-collapse-id") == NULL,
		  "content_available alone -> background, priority 5, no apns-expiration (stored)");
	CHECK(d.body && strcmp(d.body, "{\"aps\":{\"content-available\":1},\"k\":\"v\"}") == 0,
		  "background body %s", d.body ? d.body : "");
	d_cleanup(st, &d);
	json_decref(m);

	/* low priority alert, ttl, header overrides */
	m = msg("{\"title\":\"t\",\"ttl\":600,\"apns\":{\"headers\":{\"apns-push-type\":\"voip\",\"apns-topic\":\"com.example.app.voip\"}}}");
	d_init(&d, 2, TOKEN, m);
	d.priority = -1;
	now = time(NULL);
	ok = ops->prepare(st, &d);
	{
		const char *exp = tu_header(d.headers, "apns-expiration");
		long long	e = exp ? atoll(exp) : 0;

		CHECK(ok && strcmp(tu_header(d.headers, "apns-priority"), "5") == 0,
			  "negative notify priority -> apns-priority 5");
		CHECK(e >= now + 595 && e <= now + 605,
			  "apns-expiration = now + ttl without expires_at");
		CHECK(strcmp(tu_header(d.headers, "apns-push-type"), "voip") == 0 &&
			  strcmp(tu_header(d.headers, "apns-topic"), "com.example.app.voip") == 0,
			  "apns.headers override push type and topic");
	}
	d_cleanup(st, &d);
	json_decref(m);

	/* bad device tokens fail without a request */
	m = msg("{\"title\":\"t\"}");
	{
		static const char *const bad[] = {
			"abc", "", "zz23456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
			TOKEN "0", "<" TOKEN ">", NULL
		};
		int			i;

		for (i = 0; bad[i]; i++)
		{
			d_init(&d, 3, bad[i], m);
			ok = ops->prepare(st, &d);
			CHECK(!ok && d.outcome == NOTIFY_OUTCOME_FAILED &&
				  d.deactivate_device && strstr(d.error, "BadDeviceToken"),
				  "bad token #%d -> FAILED + deactivate (%s)", i, d.error);
			d_cleanup(st, &d);
		}
		d_init(&d, 3, NULL, m);
		ok = ops->prepare(st, &d);
		CHECK(!ok && d.outcome == NOTIFY_OUTCOME_FAILED, "NULL token -> FAILED");
		d_cleanup(st, &d);
	}
	json_decref(m);

	/* oversized payload */
	{
		char	   *big = malloc(5001);
		json_t	   *mm;
		long		limit;

		memset(big, 'x', 5000);
		big[5000] = '\0';
		mm = json_pack("{s:s}", "body", big);
		CHECK(ops->payload_size(mm, &limit, &err) > limit,
			  "payload_size reports more than the limit");
		d_init(&d, 4, TOKEN, mm);
		ok = ops->prepare(st, &d);
		CHECK(!ok && d.outcome == NOTIFY_OUTCOME_FAILED &&
			  strstr(d.error, "PayloadTooLarge"), "oversized -> FAILED (%s)",
			  d.error);
		d_cleanup(st, &d);
		json_decref(mm);
		free(big);
	}

	ops->destroy(st);
}

typedef struct Case
{
	long		status;
	const char *body;
	const char *headers;
	NotifyOutcome outcome;
	bool		deactivate;
	int			retry_after;
	const char *error;
} Case;

static void
test_finish(void)
{
	static const Case cases[] = {
		{410, "{\"reason\":\"Unregistered\",\"timestamp\":1700000000000}", NULL,
		NOTIFY_OUTCOME_FAILED, true, -1, "apns 410 Unregistered"},
		{400, "{\"reason\":\"BadDeviceToken\"}", NULL,
		NOTIFY_OUTCOME_FAILED, true, -1, "apns 400 BadDeviceToken"},
		{400, "{\"reason\":\"DeviceTokenNotForTopic\"}", NULL,
		NOTIFY_OUTCOME_FAILED, false, -1, "apns 400 DeviceTokenNotForTopic"},
		{400, "{\"reason\":\"BadCollapseId\"}", NULL,
		NOTIFY_OUTCOME_FAILED, false, -1, "apns 400 BadCollapseId"},
		{400, "{\"reason\":\"TopicDisallowed\"}", NULL,
		NOTIFY_OUTCOME_FAILED, false, -1, "apns 400 TopicDisallowed"},
		{403, "{\"reason\":\"Forbidden\"}", NULL,
		NOTIFY_OUTCOME_FAILED, false, -1, "apns 403 Forbidden"},
		{403, "{\"reason\":\"BadCertificateEnvironment\"}", NULL,
		NOTIFY_OUTCOME_FAILED, false, -1, "apns 403 BadCertificateEnvironment"},
		{404, "{\"reason\":\"BadPath\"}", NULL,
		NOTIFY_OUTCOME_FAILED, false, -1, "apns 404 BadPath"},
		{405, "{\"reason\":\"MethodNotAllowed\"}", NULL,
		NOTIFY_OUTCOME_FAILED, false, -1, "apns 405 MethodNotAllowed"},
		{413, "{\"reason\":\"PayloadTooLarge\"}", NULL,
		NOTIFY_OUTCOME_FAILED, false, -1, "apns 413 PayloadTooLarge"},
		{429, "{\"reason\":\"TooManyRequests\"}", "HTTP/2 429\r\nretry-after: 30\r\n\r\n",
		NOTIFY_OUTCOME_RETRY, false, 30, "apns 429 TooManyRequests"},
		{429, "{\"reason\":\"TooManyProviderTokenUpdates\"}", NULL,
		NOTIFY_OUTCOME_RETRY, false, -1, "apns 429 TooManyProviderTokenUpdates"},
		{500, "{\"reason\":\"InternalServerError\"}", NULL,
		NOTIFY_OUTCOME_RETRY, false, -1, "apns 500 InternalServerError"},
		{503, "{\"reason\":\"ServiceUnavailable\"}", "HTTP/2 503\r\nRetry-After: 7\r\n\r\n",
		NOTIFY_OUTCOME_RETRY, false, 7, "apns 503 ServiceUnavailable"},
		{503, "{\"reason\":\"Shutdown\"}", NULL,
		NOTIFY_OUTCOME_RETRY, false, -1, "apns 503 Shutdown"},
		{400, "{\"reason\":\"IdleTimeout\"}", NULL,
		NOTIFY_OUTCOME_RETRY, false, 0, "apns 400 IdleTimeout"},
		{502, "<html>bad gateway</html>", NULL,
		NOTIFY_OUTCOME_RETRY, false, -1, "apns 502 (no reason)"},
		{400, "{\"reason\":\"Bad\\r\\nInjected: x\"}", NULL,
		NOTIFY_OUTCOME_FAILED, false, -1, "apns 400 BadInjectedx"},
	};
	json_t	   *c = config_new();
	char	   *err = NULL;
	void	   *st = ops->create(c, &err);
	json_t	   *m = msg("{\"title\":\"t\"}");
	size_t		i;

	json_decref(c);
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
	{
		const Case *k = &cases[i];
		NotifyDelivery d;
		char		jwt[1024];

		d_init(&d, 10 + (int64_t) i, TOKEN, m);
		ops->prepare(st, &d);
		snprintf(jwt, sizeof(jwt), "%s", bearer(&d));
		answer(st, &d, CURLE_OK, k->status, k->body, k->headers);
		CHECK(d.outcome == k->outcome && d.deactivate_device == k->deactivate &&
			  d.retry_after == k->retry_after &&
			  strcmp(d.error, k->error) == 0 && strstr(d.error, jwt) == NULL,
			  "%ld %s -> %s%s retry_after %d \"%s\"", k->status, k->body,
			  d.outcome == NOTIFY_OUTCOME_SENT ? "SENT" :
			  d.outcome == NOTIFY_OUTCOME_RETRY ? "RETRY" : "FAILED",
			  d.deactivate_device ? " +deactivate" : "", d.retry_after, d.error);
		d_cleanup(st, &d);
	}

	/* a transport error: the engine's RETRY stands, warm-up again */
	{
		NotifyDelivery d;

		d_init(&d, 99, TOKEN, m);
		ops->prepare(st, &d);
		answer(st, &d, CURLE_OK, 200, "", "apns-id: x\r\n");
		CHECK(!ops->needs_warmup(st), "warm after a 200");
		d_cleanup(st, &d);
		d_init(&d, 100, TOKEN, m);
		ops->prepare(st, &d);
		snprintf(d.error, sizeof(d.error), "curl: stream error");
		answer(st, &d, CURLE_HTTP2_STREAM, 0, NULL, NULL);
		CHECK(d.outcome == NOTIFY_OUTCOME_RETRY &&
			  strcmp(d.error, "curl: stream error") == 0,
			  "curl error left as the engine set it");
		CHECK(ops->needs_warmup(st), "a transport error asks for warm-up");
		d_cleanup(st, &d);
	}

	json_decref(m);
	ops->destroy(st);
}

/*
 * A storm of 403 ExpiredProviderToken for one token mints one new token;
 * late 403s for the old token mint nothing; a re-minted token rejected
 * again before any success is not re-minted at once.
 */
static void
test_token_storm(void)
{
	json_t	   *c = config_new();
	char	   *err = NULL;
	void	   *st = ops->create(c, &err);
	json_t	   *m = msg("{\"title\":\"t\"}");
	NotifyDelivery d[8];
	char		t1[1024];
	char		t2[1024];
	const char *expired = "{\"reason\":\"ExpiredProviderToken\"}";
	int			i;

	json_decref(c);
	for (i = 0; i < 3; i++)
	{
		d_init(&d[i], 200 + i, TOKEN, m);
		ops->prepare(st, &d[i]);
	}
	snprintf(t1, sizeof(t1), "%s", bearer(&d[0]));
	CHECK(strcmp(bearer(&d[1]), t1) == 0 && strcmp(bearer(&d[2]), t1) == 0,
		  "one batch carries one token");

	answer(st, &d[0], CURLE_OK, 403, expired, NULL);
	CHECK(d[0].outcome == NOTIFY_OUTCOME_RETRY && d[0].retry_after == 0 &&
		  strcmp(d[0].error, "apns 403 ExpiredProviderToken") == 0,
		  "403 ExpiredProviderToken -> RETRY now (%s)", d[0].error);
	answer(st, &d[1], CURLE_OK, 403, expired, NULL);
	CHECK(d[1].outcome == NOTIFY_OUTCOME_RETRY && d[1].retry_after == 0,
		  "second 403 of the storm -> RETRY now");
	CHECK(ops->needs_warmup(st), "a rejected token asks for warm-up");

	d_init(&d[3], 203, TOKEN, m);
	ops->prepare(st, &d[3]);
	snprintf(t2, sizeof(t2), "%s", bearer(&d[3]));
	CHECK(t2[0] && strcmp(t2, t1) != 0, "next request carries a new token");
	CHECK(tu_jwt_verify(t2, ec_key, "ES256", NULL, NULL), "the new token verifies");

	/* the straggler of the storm, answered after the re-mint */
	answer(st, &d[2], CURLE_OK, 403, "{\"reason\":\"InvalidProviderToken\"}", NULL);
	CHECK(d[2].outcome == NOTIFY_OUTCOME_RETRY && d[2].retry_after == 0,
		  "late 403 for the old token -> RETRY now");
	d_init(&d[4], 204, TOKEN, m);
	ops->prepare(st, &d[4]);
	CHECK(strcmp(bearer(&d[4]), t2) == 0,
		  "a late 403 for the old token does not mint again");

	/* the new token rejected before any success: do not churn */
	answer(st, &d[3], CURLE_OK, 403, expired, NULL);
	CHECK(d[3].outcome == NOTIFY_OUTCOME_RETRY && d[3].retry_after == -1,
		  "re-minted token rejected again -> RETRY with backoff");
	d_init(&d[5], 205, TOKEN, m);
	ops->prepare(st, &d[5]);
	CHECK(strcmp(bearer(&d[5]), t2) == 0,
		  "no second re-mint within 20 minutes without a success");

	/* once it has worked, a later rejection mints again */
	answer(st, &d[4], CURLE_OK, 200, "", NULL);
	CHECK(d[4].outcome == NOTIFY_OUTCOME_SENT && !ops->needs_warmup(st),
		  "success on the new token; warm");
	answer(st, &d[5], CURLE_OK, 403, expired, NULL);
	CHECK(d[5].retry_after == 0, "rejection after a success -> RETRY now");
	d_init(&d[6], 206, TOKEN, m);
	ops->prepare(st, &d[6]);
	CHECK(strcmp(bearer(&d[6]), t2) != 0 && strcmp(bearer(&d[6]), t1) != 0,
		  "and a third token is minted");

	for (i = 0; i < 7; i++)
		d_cleanup(st, &d[i]);
	json_decref(m);
	ops->destroy(st);
}

static void
test_sandbox_default(void)
{
	json_t	   *c = config_new();
	char	   *err = NULL;
	void	   *st;
	NotifyDelivery d;
	json_t	   *m = msg("{\"title\":\"t\"}");
	char	   *url = NULL;

	json_object_del(c, "endpoint");
	json_object_set_new(c, "sandbox", json_true());
	st = ops->create(c, &err);
	d_init(&d, 1, TOKEN, m);
	ops->prepare(st, &d);
	curl_easy_getinfo(d.easy, CURLINFO_EFFECTIVE_URL, &url);
	CHECK(url && strncmp(url, "https://api.sandbox.push.apple.com/3/device/", 44) == 0,
		  "sandbox endpoint by default (%s)", url ? url : "");
	d_cleanup(st, &d);
	ops->destroy(st);

	json_object_del(c, "sandbox");
	st = ops->create(c, &err);
	d_init(&d, 1, TOKEN, m);
	ops->prepare(st, &d);
	curl_easy_getinfo(d.easy, CURLINFO_EFFECTIVE_URL, &url);
	CHECK(url && strncmp(url, "https://api.push.apple.com/3/device/", 36) == 0,
		  "production endpoint by default (%s)", url ? url : "");
	d_cleanup(st, &d);
	ops->destroy(st);
	json_decref(c);
	json_decref(m);
}

int
main(void)
{
	int			rc;

	curl_global_init(CURL_GLOBAL_DEFAULT);
	ec_key = tu_keygen("EC");
	ec_pem = tu_pem(ec_key, false);

	test_config();
	test_payload();
	test_prepare();
	test_finish();
	test_token_storm();
	test_sandbox_default();

	rc = tu_done();
	free(ec_pem);
	EVP_PKEY_free(ec_key);
	curl_global_cleanup();
	return rc;
}
