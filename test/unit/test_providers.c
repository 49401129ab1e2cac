/*-------------------------------------------------------------------------
 *
 * test_providers.c
 *	  Unit tests of the provider helpers and of how each HTTP/SMTP
 *	  provider builds its requests and reads the answers, without a
 *	  network: Retry-After parsing, status classification, the FCM payload
 *	  (data stringification, size), the Twilio form body, the SMTP headers
 *	  (RFC 2047 subject), the webhook signature, and the finish()
 *	  classification of canned answers.
 *
 * Requests are built by the providers' own prepare() on a real curl easy
 * handle that is never performed.  End-to-end runs against the simulators
 * are deliver.c's job.
 *
 *-------------------------------------------------------------------------
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "crypto.h"
#include "provider.h"
#include "testutil.h"

/* fcm.c, exported for this test */
extern json_t *notify_fcm_request(json_t *message, const char *token,
								  int priority, int64_t expires_at,
								  time_t now, char **err);

/* one check, described by its own source text */
#define OK(cond) CHECK((cond), "%s", #cond)

static json_t *
J(const char *text)
{
	json_error_t e;
	json_t	   *v = json_loads(text, 0, &e);

	if (v == NULL)
	{
		printf("bad test JSON: %s: %s\n", text, e.text);
		exit(1);
	}
	return v;
}

static void
buf_set(NotifyBuf *b, const char *text)
{
	notify_buf_free(b);
	notify_buf_append(b, text, strlen(text));
}

/* A delivery ready for prepare(), with a fresh easy handle. */
static void
delivery_setup(NotifyDelivery *d, json_t *message, const char *dest)
{
	memset(d, 0, sizeof(*d));
	d->id = 42;
	d->destination = dest;
	d->recipient = "user 7";
	d->message = message;
	d->attempt = 1;
	d->retry_after = -1;
	d->easy = curl_easy_init();
}

static void
delivery_teardown(const NotifyProviderOps *ops, void *state, NotifyDelivery *d)
{
	if (ops->release)
		ops->release(state, d);
	curl_slist_free_all(d->headers);
	free(d->body);
	curl_slist_free_all(d->rcpt);
	if (d->easy)
		curl_easy_cleanup(d->easy);
	curl_mime_free(d->mime);
	notify_buf_free(&d->response);
	notify_buf_free(&d->response_headers);
	memset(d, 0, sizeof(*d));
}

/* Run finish() on a canned answer. */
static void
answer(const NotifyProviderOps *ops, void *state, NotifyDelivery *d,
	   long status, const char *headers, const char *body)
{
	memset(d, 0, sizeof(*d));
	d->id = 7;
	d->retry_after = -1;
	d->outcome = NOTIFY_OUTCOME_RETRY;
	d->http_status = status;
	buf_set(&d->response_headers, headers);
	buf_set(&d->response, body);
	ops->finish(state, d, CURLE_OK);
	notify_buf_free(&d->response);
	notify_buf_free(&d->response_headers);
}

/* ------------------------------------------------------------------ */

static void
test_registry(void)
{
	const char *const *kinds = notify_provider_kinds();
	int			i;

	for (i = 0; kinds[i]; i++)
	{
		const NotifyProviderOps *ops = notify_provider_lookup(kinds[i]);

		OK(ops != NULL && strcmp(ops->kind, kinds[i]) == 0);
	}
	OK(i == 6);
	OK(notify_provider_lookup("pigeon") == NULL);
	OK(notify_provider_lookup(NULL) == NULL);
	OK(strcmp(notify_provider_lookup("smtp")->channel, "email") == 0);
}

static int
retry_after(const char *headers)
{
	NotifyBuf	b = {0};
	int			r;

	buf_set(&b, headers);
	r = notify_parse_retry_after(&b);
	notify_buf_free(&b);
	return r;
}

static void
test_retry_after(void)
{
	char		hdr[200];
	char		date[64];
	time_t		t;
	struct tm	tm;
	static const char *const days[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
	static const char *const months[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
	"Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
	int			r;
	NotifyBuf	empty = {0};

	OK(retry_after("HTTP/2 429\r\nretry-after: 120\r\n\r\n") == 120);
	OK(retry_after("HTTP/1.1 503 x\r\nRETRY-AFTER:7\r\n\r\n") == 7);
	OK(retry_after("HTTP/1.1 503 x\r\nRetry-After:   0  \r\n") == 0);
	OK(retry_after("HTTP/2 503\r\ncontent-type: text/plain\r\n\r\n") == -1);
	OK(retry_after("HTTP/2 503\r\nretry-after: soon\r\n\r\n") == -1);
	OK(retry_after("HTTP/2 503\r\nretry-after: 99999999999999\r\n") == 86400);
	OK(retry_after("HTTP/2 503\r\nx-retry-after: 5\r\n") == -1);
	OK(notify_parse_retry_after(&empty) == -1);
	OK(notify_parse_retry_after(NULL) == -1);
	/* only the last response's headers count */
	OK(retry_after("HTTP/1.1 100 Continue\r\nRetry-After: 9\r\n\r\n"
					  "HTTP/1.1 503 x\r\n\r\n") == -1);
	OK(retry_after("HTTP/1.1 100 Continue\r\n\r\n"
					  "HTTP/1.1 503 x\r\nRetry-After: 9\r\n\r\n") == 9);

	/* IMF-fixdate, 100 s ahead */
	t = time(NULL) + 100;
	gmtime_r(&t, &tm);
	snprintf(date, sizeof(date), "%s, %02d %s %04d %02d:%02d:%02d GMT",
			 days[tm.tm_wday], tm.tm_mday, months[tm.tm_mon],
			 tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
	snprintf(hdr, sizeof(hdr), "HTTP/2 503\r\nretry-after: %s\r\n\r\n", date);
	r = retry_after(hdr);
	OK(r >= 98 && r <= 100);
	/* in the past: now */
	OK(retry_after("HTTP/2 503\r\nRetry-After: Sun, 06 Nov 1994 08:49:37 GMT\r\n") == 0);
	/* far future: clamped */
	OK(retry_after("HTTP/2 503\r\nRetry-After: Fri, 31 Dec 2100 23:59:59 GMT\r\n") == 86400);
}

static void
test_status(void)
{
	long		transient[] = {408, 425, 429, 500, 502, 503, 504, 599};
	long		permanent[] = {200, 201, 301, 400, 401, 403, 404, 410, 413, 600, 0};
	size_t		i;

	for (i = 0; i < sizeof(transient) / sizeof(transient[0]); i++)
		OK(notify_http_status_transient(transient[i]));
	for (i = 0; i < sizeof(permanent) / sizeof(permanent[0]); i++)
		OK(!notify_http_status_transient(permanent[i]));
}

static void
test_helpers(void)
{
	char		out[16];
	NotifyBuf	b = {0};
	struct curl_slist *l = NULL;
	char		longval[3000];

	notify_printable_copy(out, sizeof(out), "a\r\n\tb\x01\xc3\xa9z", 100);
	OK(strcmp(out, "a b???z") == 0);
	notify_printable_copy(out, sizeof(out), "0123456789abcdefghij", 100);
	OK(strlen(out) == 15);
	notify_printable_copy(out, sizeof(out), NULL, 0);
	OK(out[0] == '\0');

	notify_buf_append(&b, "ab", 2);
	notify_buf_append(&b, "", 0);
	notify_buf_append(&b, "cd", 2);
	OK(b.len == 4 && strcmp(b.data, "abcd") == 0);
	notify_buf_free(&b);
	OK(b.data == NULL && b.len == 0);

	memset(longval, 'x', sizeof(longval) - 1);
	longval[sizeof(longval) - 1] = '\0';
	OK(notify_add_header(&l, "A: %d", 1));
	OK(notify_add_header(&l, "B: %s", longval));
	OK(strcmp(tu_header(l, "A"), "1") == 0);
	OK(strlen(tu_header(l, "B")) == sizeof(longval) - 1);
	curl_slist_free_all(l);
}

/* ------------------------------------------------------------------ */

static char *
rsa_pem(void)
{
	EVP_PKEY   *key = tu_keygen("RSA");
	char	   *pem = tu_pem(key, false);

	EVP_PKEY_free(key);
	return pem;
}

static void
test_fcm(void)
{
	const NotifyProviderOps *ops = &notify_fcm_ops;
	json_t	   *m;
	json_t	   *req;
	json_t	   *msg;
	json_t	   *data;
	char	   *err = NULL;
	long		limit = 0;
	long		size;
	char	   *pem;
	json_t	   *config;
	void	   *state;
	NotifyDelivery d;
	char	   *problem;
	char	   *text;
	char		big[5000];

	m = J("{\"title\":\"Hi\",\"body\":\"There\",\"image\":\"https://x/i.png\","
		  "\"collapse_id\":\"c1\",\"sound\":\"default\",\"badge\":3,"
		  "\"subtitle\":\"Sub\",\"thread_id\":\"t\","
		  "\"data\":{\"s\":\"x\",\"n\":1,\"f\":1.5,\"b\":true,\"z\":null,"
		  "\"o\":{\"k\":[1,2]}},"
		  "\"android\":{\"notification\":{\"channel_id\":\"news\"}},"
		  "\"apns\":{\"headers\":{\"apns-push-type\":\"alert\"}}}");
	req = notify_fcm_request(m, "tok:en", 5, 1000 + 3600, 1000, &err);
	OK(req != NULL && err == NULL);
	msg = json_object_get(req, "message");
	OK(strcmp(json_string_value(json_object_get(msg, "token")), "tok:en") == 0);
	OK(strcmp(json_string_value(json_object_get(json_object_get(msg, "notification"), "title")), "Hi") == 0);
	OK(strcmp(json_string_value(json_object_get(json_object_get(msg, "notification"), "image")), "https://x/i.png") == 0);
	data = json_object_get(msg, "data");
	OK(strcmp(json_string_value(json_object_get(data, "s")), "x") == 0);
	OK(strcmp(json_string_value(json_object_get(data, "n")), "1") == 0);
	OK(strcmp(json_string_value(json_object_get(data, "f")), "1.5") == 0);
	OK(strcmp(json_string_value(json_object_get(data, "b")), "true") == 0);
	OK(strcmp(json_string_value(json_object_get(data, "z")), "null") == 0);
	OK(strcmp(json_string_value(json_object_get(data, "o")), "{\"k\":[1,2]}") == 0);
	{
		json_t	   *android = json_object_get(msg, "android");
		json_t	   *apns = json_object_get(msg, "apns");
		json_t	   *aps = json_object_get(json_object_get(apns, "payload"), "aps");
		json_t	   *wp = json_object_get(msg, "webpush");

		OK(strcmp(json_string_value(json_object_get(android, "priority")), "high") == 0);
		OK(strcmp(json_string_value(json_object_get(android, "ttl")), "3600s") == 0);
		OK(strcmp(json_string_value(json_object_get(android, "collapse_key")), "c1") == 0);
		OK(strcmp(json_string_value(json_object_get(json_object_get(android, "notification"), "channel_id")), "news") == 0);
		OK(strcmp(json_string_value(json_object_get(json_object_get(android, "notification"), "tag")), "c1") == 0);
		OK(strcmp(json_string_value(json_object_get(json_object_get(apns, "headers"), "apns-priority")), "10") == 0);
		OK(strcmp(json_string_value(json_object_get(json_object_get(apns, "headers"), "apns-expiration")), "4600") == 0);
		OK(strcmp(json_string_value(json_object_get(json_object_get(apns, "headers"), "apns-push-type")), "alert") == 0);
		OK(json_integer_value(json_object_get(aps, "badge")) == 3);
		OK(json_integer_value(json_object_get(aps, "mutable-content")) == 1);
		OK(strcmp(json_string_value(json_object_get(json_object_get(aps, "alert"), "subtitle")), "Sub") == 0);
		OK(strcmp(json_string_value(json_object_get(aps, "thread-id")), "t") == 0);
		OK(strcmp(json_string_value(json_object_get(json_object_get(wp, "headers"), "TTL")), "3600") == 0);
		OK(strcmp(json_string_value(json_object_get(json_object_get(wp, "headers"), "Urgency")), "high") == 0);
	}
	json_decref(req);

	/* the template's nested objects are copied, not modified */
	text = json_dumps(json_object_get(m, "android"), JSON_COMPACT);
	OK(strcmp(text, "{\"notification\":{\"channel_id\":\"news\"}}") == 0);
	free(text);

	size = ops->payload_size(m, &limit, &err);
	OK(size > 100 && size < 1000 && limit == 4096 && err == NULL);
	json_decref(m);

	/* a silent push: normal priority, apns priority 5, background */
	m = J("{\"content_available\":true,\"data\":{\"k\":\"v\"},\"ttl\":60}");
	req = notify_fcm_request(m, "t", 0, 0, 1000, &err);
	OK(req != NULL);
	msg = json_object_get(req, "message");
	OK(json_object_get(msg, "notification") == NULL);
	OK(strcmp(json_string_value(json_object_get(json_object_get(msg, "android"), "priority")), "normal") == 0);
	OK(strcmp(json_string_value(json_object_get(json_object_get(msg, "android"), "ttl")), "60s") == 0);
	OK(strcmp(json_string_value(json_object_get(json_object_get(json_object_get(msg, "apns"), "headers"), "apns-priority")), "5") == 0);
	OK(strcmp(json_string_value(json_object_get(json_object_get(json_object_get(msg, "apns"), "headers"), "apns-push-type")), "background") == 0);
	OK(json_integer_value(json_object_get(json_object_get(json_object_get(json_object_get(msg, "apns"), "payload"), "aps"), "content-available")) == 1);
	json_decref(req);
	json_decref(m);

	/* refused messages */
	m = J("{\"data\":{\"k\":\"v\"}}");
	OK(ops->payload_size(m, &limit, &err) == -1 && err != NULL);
	free(err);
	err = NULL;
	json_decref(m);
	m = J("{\"title\":\"x\",\"data\":{\"from\":\"me\"}}");
	OK(ops->payload_size(m, &limit, &err) == -1 && err != NULL && strstr(err, "from"));
	free(err);
	err = NULL;
	json_decref(m);

	/* oversized */
	memset(big, 'a', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	m = json_pack("{s:s, s:s}", "title", "big", "body", big);
	size = ops->payload_size(m, &limit, &err);
	OK(size > 4096 && limit == 4096);
	json_decref(m);

	/* config */
	pem = rsa_pem();
	config = json_pack("{s:{s:s, s:s, s:s, s:s}}", "service_account",
					   "project_id", "proj-1", "client_email", "sa@proj-1.iam",
					   "private_key", pem, "token_uri", "http://127.0.0.1:1/token");
	problem = ops->check_config(config);
	OK(problem == NULL);
	free(problem);
	state = ops->create(config, &err);
	OK(state != NULL);

	/* the same config with the service account as JSON text */
	{
		json_t	   *sa = json_object_get(config, "service_account");
		char	   *satext = json_dumps(sa, JSON_COMPACT);
		json_t	   *config2 = json_pack("{s:s, s:s}", "service_account", satext,
										"project_id", "other");

		problem = ops->check_config(config2);
		OK(problem == NULL);
		free(problem);
		json_object_set_new(json_object_get(config, "service_account"),
							"private_key", json_string("not a key"));
		problem = ops->check_config(config);
		OK(problem != NULL && strstr(problem, "not a key") == NULL);
		free(problem);
		free(satext);
		json_decref(config2);
	}
	OK(ops->secret_keys[0] != NULL &&
		  strcmp(ops->secret_keys[0], "service_account.private_key") == 0);

	/* the token endpoint is down: RETRY, saying why */
	m = J("{\"title\":\"x\"}");
	delivery_setup(&d, m, "abc:DEF-123_x");
	OK(!ops->prepare(state, &d));
	OK(d.outcome == NOTIFY_OUTCOME_RETRY &&
		  strncmp(d.error, "fcm token endpoint: ", 20) == 0);
	delivery_teardown(ops, state, &d);
	/* a malformed token fails before any network */
	delivery_setup(&d, m, "not a token");
	OK(!ops->prepare(state, &d));
	OK(d.outcome == NOTIFY_OUTCOME_FAILED && d.deactivate_device);
	delivery_teardown(ops, state, &d);
	json_decref(m);

	/* answers */
	answer(ops, state, &d, 200, "HTTP/2 200\r\n", "{\"name\":\"projects/p/messages/0:1\"}");
	OK(d.outcome == NOTIFY_OUTCOME_SENT && strcmp(d.provider_id, "projects/p/messages/0:1") == 0);
	answer(ops, state, &d, 404, "HTTP/2 404\r\n",
		   "{\"error\":{\"code\":404,\"message\":\"Requested entity was not found.\",\"status\":\"NOT_FOUND\","
		   "\"details\":[{\"@type\":\"type.googleapis.com/google.firebase.fcm.v1.FcmError\",\"errorCode\":\"UNREGISTERED\"}]}}");
	OK(d.outcome == NOTIFY_OUTCOME_FAILED && d.deactivate_device &&
		  strstr(d.error, "UNREGISTERED") != NULL);
	answer(ops, state, &d, 400, "HTTP/2 400\r\n",
		   "{\"error\":{\"code\":400,\"message\":\"The registration token is not a valid FCM registration token\",\"status\":\"INVALID_ARGUMENT\","
		   "\"details\":[{\"@type\":\"type.googleapis.com/google.firebase.fcm.v1.FcmError\",\"errorCode\":\"INVALID_ARGUMENT\"}]}}");
	OK(d.outcome == NOTIFY_OUTCOME_FAILED && d.deactivate_device);
	answer(ops, state, &d, 400, "HTTP/2 400\r\n",
		   "{\"error\":{\"code\":400,\"message\":\"Invalid value at 'message.data[0].value'\",\"status\":\"INVALID_ARGUMENT\"}}");
	OK(d.outcome == NOTIFY_OUTCOME_FAILED && !d.deactivate_device);
	answer(ops, state, &d, 403, "HTTP/2 403\r\n",
		   "{\"error\":{\"code\":403,\"message\":\"SenderId mismatch\",\"status\":\"PERMISSION_DENIED\","
		   "\"details\":[{\"errorCode\":\"SENDER_ID_MISMATCH\"}]}}");
	OK(d.outcome == NOTIFY_OUTCOME_FAILED && !d.deactivate_device);
	answer(ops, state, &d, 429, "HTTP/2 429\r\nretry-after: 30\r\n",
		   "{\"error\":{\"code\":429,\"status\":\"RESOURCE_EXHAUSTED\",\"details\":[{\"errorCode\":\"QUOTA_EXCEEDED\"}]}}");
	OK(d.outcome == NOTIFY_OUTCOME_RETRY && d.retry_after == 30);
	answer(ops, state, &d, 503, "HTTP/2 503\r\n", "upstream connect error");
	OK(d.outcome == NOTIFY_OUTCOME_RETRY && d.retry_after == -1);
	answer(ops, state, &d, 401, "HTTP/2 401\r\n",
		   "{\"error\":{\"code\":401,\"message\":\"Request had invalid authentication credentials.\",\"status\":\"UNAUTHENTICATED\"}}");
	OK(d.outcome == NOTIFY_OUTCOME_RETRY && d.retry_after == 0);
	answer(ops, state, &d, 401, "HTTP/2 401\r\n",
		   "{\"error\":{\"code\":401,\"status\":\"UNAUTHENTICATED\",\"details\":[{\"errorCode\":\"THIRD_PARTY_AUTH_ERROR\"}]}}");
	OK(d.outcome == NOTIFY_OUTCOME_FAILED);

	ops->destroy(state);
	json_decref(config);
	free(pem);
}

/* ------------------------------------------------------------------ */

static void
test_twilio(void)
{
	const NotifyProviderOps *ops = &notify_twilio_ops;
	json_t	   *config;
	json_t	   *m;
	void	   *state;
	char	   *err = NULL;
	char	   *problem;
	NotifyDelivery d;
	char	   *url = NULL;

	config = J("{\"account_sid\":\"AC0123456789abcdef0123456789abcdef\","
			   "\"auth_token\":\"tok\",\"from\":\"+15005550006\","
			   "\"status_callback\":\"https://example.com/cb?a=1&b=2\","
			   "\"endpoint\":\"http://127.0.0.1:9/\"}");
	problem = ops->check_config(config);
	OK(problem == NULL);
	free(problem);
	state = ops->create(config, &err);
	OK(state != NULL);

	m = J("{\"body\":\"Hi & bye \\u2713 50%+\"}");
	delivery_setup(&d, m, "+14155550100");
	OK(ops->prepare(state, &d));
	OK(d.body != NULL && strcmp(d.body,
								   "To=%2B14155550100&From=%2B15005550006"
								   "&Body=Hi%20%26%20bye%20%E2%9C%93%2050%25%2B"
								   "&StatusCallback=https%3A%2F%2Fexample.com%2Fcb%3Fa%3D1%26b%3D2") == 0);
	OK(d.body_len == strlen(d.body));
	OK(strcmp(tu_header(d.headers, "Content-Type"), "application/x-www-form-urlencoded") == 0);
	curl_easy_getinfo(d.easy, CURLINFO_EFFECTIVE_URL, &url);
	OK(url != NULL && strcmp(url, "http://127.0.0.1:9/2010-04-01/Accounts/"
								"AC0123456789abcdef0123456789abcdef/Messages.json") == 0);
	delivery_teardown(ops, state, &d);

	delivery_setup(&d, m, "4155550100");
	OK(!ops->prepare(state, &d) && d.outcome == NOTIFY_OUTCOME_FAILED);
	delivery_teardown(ops, state, &d);
	delivery_setup(&d, m, "+04155550100");
	OK(!ops->prepare(state, &d) && d.outcome == NOTIFY_OUTCOME_FAILED);
	delivery_teardown(ops, state, &d);
	json_decref(m);

	answer(ops, state, &d, 201, "HTTP/1.1 201 Created\r\n",
		   "{\"sid\":\"SM0123456789abcdef0123456789abcdef\",\"status\":\"queued\",\"num_segments\":\"2\"}");
	OK(d.outcome == NOTIFY_OUTCOME_SENT && d.segments == 2 &&
		  strcmp(d.provider_id, "SM0123456789abcdef0123456789abcdef") == 0);
	answer(ops, state, &d, 201, "", "{\"sid\":\"SMx\",\"num_segments\":3}");
	OK(d.outcome == NOTIFY_OUTCOME_SENT && d.segments == 3);
	answer(ops, state, &d, 400, "", "{\"code\":21610,\"message\":\"Attempt to send to unsubscribed recipient\",\"status\":400}");
	OK(d.outcome == NOTIFY_OUTCOME_FAILED && d.opt_out);
	answer(ops, state, &d, 400, "", "{\"code\":21211,\"message\":\"The 'To' number is not a valid phone number.\",\"status\":400}");
	OK(d.outcome == NOTIFY_OUTCOME_FAILED && !d.opt_out &&
		  strstr(d.error, "21211") != NULL);
	answer(ops, state, &d, 429, "HTTP/1.1 429 x\r\nRetry-After: 3\r\n", "{\"code\":20429,\"message\":\"Too Many Requests\",\"status\":429}");
	OK(d.outcome == NOTIFY_OUTCOME_RETRY && d.retry_after == 3);
	answer(ops, state, &d, 401, "", "{\"code\":20003,\"message\":\"Authenticate\",\"status\":401}");
	OK(d.outcome == NOTIFY_OUTCOME_FAILED &&
		  strncmp(d.error, "twilio 401 20003 authentication failed", 38) == 0);
	answer(ops, state, &d, 500, "", "oops");
	OK(d.outcome == NOTIFY_OUTCOME_RETRY);
	answer(ops, state, &d, 400, "", "{\"code\":21602,\"message\":\"Message body is required.\",\"status\":400}");
	OK(d.outcome == NOTIFY_OUTCOME_FAILED &&
		  strcmp(d.error, "twilio 400 21602: Message body is required.") == 0);

	ops->destroy(state);
	json_decref(config);

	/* config problems */
	config = J("{\"account_sid\":\"AC0123\",\"auth_token\":\"t\"}");
	problem = ops->check_config(config);
	OK(problem != NULL && strstr(problem, "from") != NULL);
	free(problem);
	json_decref(config);
	config = J("{\"account_sid\":\"AC1/../x\",\"auth_token\":\"t\",\"from\":\"+1\"}");
	problem = ops->check_config(config);
	OK(problem != NULL);
	free(problem);
	json_decref(config);
}

/* ------------------------------------------------------------------ */

/* Decode the RFC 2047 words of a header value back to text. */
static char *
decode_words(const char *v, bool *lines_ok)
{
	NotifyBuf	out = {0};
	const char *p = v;
	const char *line = v;

	*lines_ok = true;
	notify_buf_append(&out, "", 0);
	for (; *p; p++)
	{
		if (p[0] == '\r' && p[1] == '\n')
		{
			if (p - line > 76)
				*lines_ok = false;
			line = p + 2;
		}
	}
	if (p - line > 76)
		*lines_ok = false;

	p = v;
	while ((p = strstr(p, "=?UTF-8?B?")) != NULL)
	{
		const char *start = p + 10;
		const char *end = strstr(start, "?=");
		char	   *b64;
		unsigned char *bytes;
		size_t		n;

		if (end == NULL || end + 2 - p > 75)
			*lines_ok = false;
		if (end == NULL)
			break;
		b64 = strndup(start, end - start);
		bytes = notify_b64url_decode(b64, &n);
		if (bytes != NULL)
			notify_buf_append(&out, (char *) bytes, n);
		free(bytes);
		free(b64);
		p = end + 2;
	}
	return out.data;
}

static void
test_smtp(void)
{
	const NotifyProviderOps *ops = &notify_smtp_ops;
	json_t	   *config;
	json_t	   *m;
	void	   *state;
	char	   *err = NULL;
	char	   *problem;
	NotifyDelivery d;
	const char *v;
	char	   *url = NULL;
	const char *subject =
	"Grüße aus Köln — ein ziemlich langer Betreff, der in mehrere "
	"kodierte Wörter zerlegt werden muss ✓✓✓";

	config = J("{\"endpoint\":\"smtp://127.0.0.1\",\"tls\":\"none\","
			   "\"from\":\"noreply@example.com\",\"from_name\":\"Équipe Ex\","
			   "\"reply_to\":\"help@example.com\",\"helo\":\"client.example.com\","
			   "\"unsubscribe_url\":\"https://example.com/u?r={{recipient}}&e={{email}}\"}");
	problem = ops->check_config(config);
	OK(problem == NULL);
	free(problem);
	state = ops->create(config, &err);
	OK(state != NULL);

	m = json_pack("{s:s, s:s, s:s}", "subject", subject,
				  "text", "line 1\nline 2\n", "html", "<p>hello</p>");
	delivery_setup(&d, m, "a.user+tag@example.org");
	OK(ops->prepare(state, &d));
	curl_easy_getinfo(d.easy, CURLINFO_EFFECTIVE_URL, &url);
	OK(url != NULL && strcmp(url, "smtp://127.0.0.1:587/client.example.com") == 0);
	v = tu_header(d.headers, "Subject");
	OK(v != NULL && strncmp(v, "=?UTF-8?B?", 10) == 0);
	{
		char	   *line = NULL;
		bool		lines_ok;
		char	   *decoded;

		if (v != NULL)
		{
			line = malloc(strlen(v) + 10);
			sprintf(line, "Subject: %s", v);
		}
		decoded = line ? decode_words(line, &lines_ok) : NULL;
		OK(decoded != NULL && strcmp(decoded, subject) == 0);
		OK(decoded != NULL && lines_ok);
		OK(v != NULL && strstr(v, "\r\n ") != NULL);		/* several words */
		free(decoded);
		free(line);
	}
	v = tu_header(d.headers, "From");
	OK(v != NULL && strncmp(v, "=?UTF-8?B?", 10) == 0 &&
		  strstr(v, " <noreply@example.com>") != NULL);
	OK(strcmp(tu_header(d.headers, "To"), "a.user+tag@example.org") == 0);
	OK(strcmp(tu_header(d.headers, "Reply-To"), "help@example.com") == 0);
	OK(strcmp(tu_header(d.headers, "MIME-Version"), "1.0") == 0);
	v = tu_header(d.headers, "Message-ID");
	OK(v != NULL && strncmp(v, "<notify.42.", 11) == 0 &&
		  strstr(v, "@example.com>") != NULL && strcmp(v, d.provider_id) == 0);
	v = tu_header(d.headers, "Date");
	OK(v != NULL && strlen(v) == 31 && strcmp(v + 25, " +0000") == 0);
	OK(strcmp(tu_header(d.headers, "List-Unsubscribe"),
				 "<https://example.com/u?r=user%207&e=a.user%2Btag%40example.org>") == 0);
	OK(strcmp(tu_header(d.headers, "List-Unsubscribe-Post"),
				 "List-Unsubscribe=One-Click") == 0);
	OK(d.rcpt != NULL && strcmp(d.rcpt->data, "<a.user+tag@example.org>") == 0 &&
		  d.rcpt->next == NULL);
	OK(d.mime != NULL);
	delivery_teardown(ops, state, &d);
	json_decref(m);

	/* ASCII stays readable; long ASCII is folded at spaces */
	m = J("{\"subject\":\"Your order \\\"42\\\" shipped\",\"text\":\"t\","
		  "\"from_name\":\"Shop \\\"Ex\\\"\"}");
	delivery_setup(&d, m, "b@example.org");
	OK(ops->prepare(state, &d));
	OK(strcmp(tu_header(d.headers, "Subject"), "Your order \"42\" shipped") == 0);
	OK(strcmp(tu_header(d.headers, "From"), "\"Shop \\\"Ex\\\"\" <noreply@example.com>") == 0);
	delivery_teardown(ops, state, &d);
	json_decref(m);

	m = J("{\"subject\":\"aaaa bbbb cccc dddd eeee ffff gggg hhhh iiii jjjj kkkk llll mmmm nnnn oooo pppp\",\"html\":\"<b>x</b>\"}");
	delivery_setup(&d, m, "b@example.org");
	OK(ops->prepare(state, &d));
	v = tu_header(d.headers, "Subject");
	OK(v != NULL && strstr(v, "\r\n ") != NULL && strstr(v, "=?") == NULL);
	OK(v != NULL && strstr(v, "\r\n") - v + 9 <= 78);
	delivery_teardown(ops, state, &d);
	json_decref(m);

	/* header injection through the subject is neutralised */
	m = J("{\"subject\":\"hi\\r\\nBcc: evil@example.net\",\"text\":\"t\"}");
	delivery_setup(&d, m, "b@example.org");
	OK(ops->prepare(state, &d));
	OK(strchr(tu_header(d.headers, "Subject"), '\n') == NULL);
	delivery_teardown(ops, state, &d);
	json_decref(m);

	/* bad messages and destinations fail */
	m = J("{\"subject\":\"s\"}");
	delivery_setup(&d, m, "b@example.org");
	OK(!ops->prepare(state, &d) && d.outcome == NOTIFY_OUTCOME_FAILED);
	delivery_teardown(ops, state, &d);
	json_decref(m);
	m = J("{\"subject\":\"s\",\"text\":\"t\"}");
	delivery_setup(&d, m, "b@example.org>\r\nRCPT TO:<x@y");
	OK(!ops->prepare(state, &d) && d.outcome == NOTIFY_OUTCOME_FAILED);
	delivery_teardown(ops, state, &d);
	json_decref(m);

	/* SMTP results */
	memset(&d, 0, sizeof(d));
	d.http_status = 550;
	strcpy(d.curl_error, "RCPT failed: 550");
	ops->finish(state, &d, CURLE_SEND_ERROR);
	OK(d.outcome == NOTIFY_OUTCOME_FAILED && strstr(d.error, "550") != NULL);
	memset(&d, 0, sizeof(d));
	d.http_status = 451;
	d.outcome = NOTIFY_OUTCOME_RETRY;
	ops->finish(state, &d, CURLE_SEND_ERROR);
	OK(d.outcome == NOTIFY_OUTCOME_RETRY && strstr(d.error, "451") != NULL);
	memset(&d, 0, sizeof(d));
	d.http_status = 535;
	ops->finish(state, &d, CURLE_LOGIN_DENIED);
	OK(d.outcome == NOTIFY_OUTCOME_FAILED && strstr(d.error, "smtp auth failed") != NULL);
	memset(&d, 0, sizeof(d));
	ops->finish(state, &d, CURLE_USE_SSL_FAILED);
	OK(d.outcome == NOTIFY_OUTCOME_FAILED && strstr(d.error, "STARTTLS") != NULL);
	memset(&d, 0, sizeof(d));
	d.outcome = NOTIFY_OUTCOME_RETRY;
	ops->finish(state, &d, CURLE_COULDNT_CONNECT);
	OK(d.outcome == NOTIFY_OUTCOME_RETRY);
	memset(&d, 0, sizeof(d));
	d.http_status = 250;
	strcpy(d.provider_id, "<x@y>");
	ops->finish(state, &d, CURLE_OK);
	OK(d.outcome == NOTIFY_OUTCOME_SENT && strcmp(d.provider_id, "<x@y>") == 0);

	ops->destroy(state);
	json_decref(config);

	/* TLS rules */
	{
		static const char *const bad[] = {
			"{\"endpoint\":\"smtp://mail.example.com\",\"tls\":\"none\",\"from\":\"a@b.c\"}",
			"{\"endpoint\":\"smtp://mail.example.com\",\"tls\":\"implicit\",\"from\":\"a@b.c\"}",
			"{\"endpoint\":\"smtps://mail.example.com\",\"tls\":\"starttls\",\"from\":\"a@b.c\"}",
			"{\"endpoint\":\"http://mail.example.com\",\"from\":\"a@b.c\"}",
			"{\"endpoint\":\"smtp://mail.example.com\"}",
			"{\"from\":\"a@b.c\"}",
			"{\"endpoint\":\"smtp://u:p@mail.example.com\",\"from\":\"a@b.c\"}",
			NULL
		};
		int			i;

		for (i = 0; bad[i]; i++)
		{
			config = J(bad[i]);
			problem = ops->check_config(config);
			OK(problem != NULL);
			free(problem);
			json_decref(config);
		}
		config = J("{\"endpoint\":\"smtps://mail.example.com\",\"from\":\"a@b.c\","
				   "\"username\":\"u\",\"password\":\"p\"}");
		state = ops->create(config, &err);
		OK(state != NULL);
		m = J("{\"subject\":\"s\",\"text\":\"t\"}");
		delivery_setup(&d, m, "b@example.org");
		OK(ops->prepare(state, &d));
		curl_easy_getinfo(d.easy, CURLINFO_EFFECTIVE_URL, &url);
		OK(url != NULL && strncmp(url, "smtps://mail.example.com:465/", 29) == 0);
		delivery_teardown(ops, state, &d);
		json_decref(m);
		ops->destroy(state);
		json_decref(config);
	}
}

/* ------------------------------------------------------------------ */

static void
test_webhook(void)
{
	const NotifyProviderOps *ops = &notify_webhook_ops;
	json_t	   *config;
	json_t	   *m;
	void	   *state;
	char	   *err = NULL;
	char	   *problem;
	NotifyDelivery d;
	const char *sig;
	const char *ts;
	char		expect[200];
	char		hex[65];
	char	   *signed_text;
	char	   *url = NULL;

	config = J("{\"endpoint\":\"https://hooks.example.com/in\",\"secret\":\"s3cret\","
			   "\"headers\":{\"X-Team\":\"a\",\"X-Env\":\"prod\"}}");
	problem = ops->check_config(config);
	OK(problem == NULL);
	free(problem);
	state = ops->create(config, &err);
	OK(state != NULL);

	m = J("{\"body\":{\"event\":\"order.shipped\",\"n\": 1, \"s\": \"é\"},"
		  "\"headers\":{\"X-Env\":\"staging\"}}");
	delivery_setup(&d, m, "");
	OK(ops->prepare(state, &d));
	OK(strcmp(d.body, "{\"event\":\"order.shipped\",\"n\":1,\"s\":\"é\"}") == 0);
	OK(strcmp(tu_header(d.headers, "Content-Type"), "application/json") == 0);
	OK(strcmp(tu_header(d.headers, "X-Notify-Id"), "42") == 0);
	OK(strcmp(tu_header(d.headers, "Idempotency-Key"), "notify-42") == 0);
	OK(strcmp(tu_header(d.headers, "X-Team"), "a") == 0);
	OK(strcmp(tu_header(d.headers, "X-Env"), "staging") == 0);
	{
		int			envs = 0;
		struct curl_slist *l;

		for (l = d.headers; l; l = l->next)
			if (strncasecmp(l->data, "X-Env:", 6) == 0)
				envs++;
		OK(envs == 1);
	}
	ts = tu_header(d.headers, "X-Notify-Timestamp");
	sig = tu_header(d.headers, "X-Notify-Signature");
	OK(ts != NULL && sig != NULL);
	if (ts != NULL && sig != NULL)
	{
		signed_text = malloc(strlen(ts) + 1 + d.body_len + 1);
		sprintf(signed_text, "%s.%s", ts, d.body);
		notify_hmac_sha256_hex((const unsigned char *) "s3cret", 6,
							   (const unsigned char *) signed_text,
							   strlen(signed_text), hex);
		snprintf(expect, sizeof(expect), "t=%s,v1=%s", ts, hex);
		OK(strcmp(sig, expect) == 0);
		OK(labs(atol(ts) - (long) time(NULL)) <= 2);
		free(signed_text);
	}
	curl_easy_getinfo(d.easy, CURLINFO_EFFECTIVE_URL, &url);
	OK(url != NULL && strcmp(url, "https://hooks.example.com/in") == 0);
	delivery_teardown(ops, state, &d);

	/* a URL destination is the recipient's own endpoint */
	delivery_setup(&d, m, "http://127.0.0.1:8080/hook");
	OK(ops->prepare(state, &d));
	curl_easy_getinfo(d.easy, CURLINFO_EFFECTIVE_URL, &url);
	OK(url != NULL && strcmp(url, "http://127.0.0.1:8080/hook") == 0);
	delivery_teardown(ops, state, &d);
	json_decref(m);

	/* a message header cannot forge the signature or smuggle a line */
	m = J("{\"body\":1,\"headers\":{\"X-Notify-Signature\":\"t=1,v1=00\"}}");
	delivery_setup(&d, m, "");
	OK(!ops->prepare(state, &d) && d.outcome == NOTIFY_OUTCOME_FAILED);
	delivery_teardown(ops, state, &d);
	json_decref(m);
	m = J("{\"body\":1,\"headers\":{\"X-A\":\"1\\r\\nX-B: 2\"}}");
	delivery_setup(&d, m, "");
	OK(!ops->prepare(state, &d) && d.outcome == NOTIFY_OUTCOME_FAILED);
	delivery_teardown(ops, state, &d);
	json_decref(m);
	m = J("{\"headers\":{}}");
	delivery_setup(&d, m, "");
	OK(!ops->prepare(state, &d) && d.outcome == NOTIFY_OUTCOME_FAILED);
	delivery_teardown(ops, state, &d);
	json_decref(m);

	answer(ops, state, &d, 200, "", "{\"id\":\"evt_1\"}");
	OK(d.outcome == NOTIFY_OUTCOME_SENT && strcmp(d.provider_id, "evt_1") == 0);
	answer(ops, state, &d, 204, "", "");
	OK(d.outcome == NOTIFY_OUTCOME_SENT && d.provider_id[0] == '\0');
	answer(ops, state, &d, 503, "HTTP/1.1 503 x\r\nRetry-After: 12\r\n", "busy");
	OK(d.outcome == NOTIFY_OUTCOME_RETRY && d.retry_after == 12);
	answer(ops, state, &d, 422, "", "{\"error\":\"bad\nthing\"}\x01\xff");
	OK(d.outcome == NOTIFY_OUTCOME_FAILED &&
		  strcmp(d.error, "webhook 422: {\"error\":\"bad thing\"}??") == 0);

	ops->destroy(state);
	json_decref(config);

	config = J("{\"endpoint\":\"ftp://x\"}");
	problem = ops->check_config(config);
	OK(problem != NULL);
	free(problem);
	json_decref(config);
	config = J("{\"endpoint\":\"https://x\",\"headers\":{\"Bad Name\":\"v\"}}");
	problem = ops->check_config(config);
	OK(problem != NULL);
	free(problem);
	json_decref(config);
}

int
main(void)
{
	curl_global_init(CURL_GLOBAL_ALL);

	test_registry();
	test_retry_after();
	test_status();
	test_helpers();
	test_fcm();
	test_twilio();
	test_smtp();
	test_webhook();

	curl_global_cleanup();
	return tu_done();
}
