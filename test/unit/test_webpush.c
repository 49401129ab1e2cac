/*-------------------------------------------------------------------------
 *
 * test_webpush.c
 *	  Unit tests for webpush.c without a network: configuration checks,
 *	  subscription parsing, the document delivered to the service worker
 *	  (decrypted here with the subscription's private key), the RFC 8030
 *	  headers, the VAPID Authorization header (JWT verified by OpenSSL,
 *	  aud = origin, cached per origin), and the classification of answers.
 *
 *-------------------------------------------------------------------------
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>
#include <openssl/rand.h>

#include "crypto.h"
#include "provider.h"
#include "testutil.h"

static const NotifyProviderOps *ops = &notify_webpush_ops;

/* the RFC 8291 application server scalar doubles as a VAPID key here */
static const char *vapid_raw = "yfWPiYE-n46HLnH0KqZOF1fJJU3MYrct3AELtAQ-oRw";

static EVP_PKEY *vapid_key;		/* the same key, for verification */
static EVP_PKEY *ua_key;		/* the browser's subscription key */
static unsigned char ua_auth[16];

static json_t *
config_new(void)
{
	return json_pack("{s:s, s:s}", "vapid_private_key", vapid_raw,
					 "subject", "mailto:ops@example.com");
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

/* PushSubscription JSON for ua_key at endpoint (malloc'd). */
static char *
subscription(const char *endpoint)
{
	unsigned char pub[65];
	char	   *p256dh;
	char	   *auth;
	json_t	   *j;
	char	   *text;

	tu_ec_public(ua_key, pub);
	p256dh = notify_b64url_encode(pub, 65);
	auth = notify_b64url_encode(ua_auth, 16);
	j = json_pack("{s:s, s:n, s:{s:s, s:s}}", "endpoint", endpoint,
				  "expirationTime", "keys", "p256dh", p256dh, "auth", auth);
	text = json_dumps(j, JSON_COMPACT);
	json_decref(j);
	free(p256dh);
	free(auth);
	return text;
}

static void
d_init(NotifyDelivery *d, int64_t id, const char *dest, json_t *message)
{
	memset(d, 0, sizeof(*d));
	d->id = id;
	d->channel = "push";
	d->destination = dest;
	d->recipient = "user-1";
	d->message = message;
	d->attempt = 1;
	d->retry_after = -1;
	d->outcome = NOTIFY_OUTCOME_RETRY;
	d->easy = curl_easy_init();
}

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

static void
answer(void *state, NotifyDelivery *d, long status, const char *body,
	   const char *headers)
{
	d->http_status = status;
	if (body)
		notify_buf_append(&d->response, body, strlen(body));
	if (headers)
		notify_buf_append(&d->response_headers, headers, strlen(headers));
	d->outcome = NOTIFY_OUTCOME_RETRY;
	d->retry_after = -1;
	ops->finish(state, d, CURLE_OK);
}

static const char *
hdr(NotifyDelivery *d, const char *name)
{
	const char *v = tu_header(d->headers, name);

	return v ? v : "(none)";
}

/* Check "vapid t=<jwt>, k=<key>"; returns the JWT (static) or "". */
static const char *
check_vapid(NotifyDelivery *d, const char *aud)
{
	static char jwt[1024];
	const char *v = tu_header(d->headers, "Authorization");
	const char *k;
	unsigned char pub[65];
	unsigned char *kraw;
	size_t		klen = 0;
	char	   *h = NULL;
	char	   *c = NULL;
	json_t	   *claims;
	time_t		now = time(NULL);
	json_int_t	exp;

	jwt[0] = '\0';
	if (v == NULL || strncmp(v, "vapid t=", 8) != 0 ||
		(k = strstr(v, ", k=")) == NULL)
	{
		CHECK(false, "Authorization is \"vapid t=..., k=...\" (%s)", v ? v : "");
		return jwt;
	}
	snprintf(jwt, sizeof(jwt), "%.*s", (int) (k - v - 8), v + 8);
	kraw = tu_b64url_decode(k + 4, &klen);
	tu_ec_public(vapid_key, pub);
	CHECK(kraw && klen == 65 && memcmp(kraw, pub, 65) == 0,
		  "k= is the VAPID public key");
	free(kraw);

	CHECK(tu_jwt_verify(jwt, vapid_key, "ES256", &h, &c),
		  "VAPID JWT verifies (ES256)");
	CHECK(h && strcmp(h, "{\"typ\":\"JWT\",\"alg\":\"ES256\"}") == 0,
		  "VAPID header %s", h ? h : "");
	claims = c ? json_loads(c, 0, NULL) : NULL;
	exp = json_integer_value(json_object_get(claims, "exp"));
	CHECK(claims && json_is_string(json_object_get(claims, "aud")) &&
		  strcmp(json_string_value(json_object_get(claims, "aud")), aud) == 0,
		  "aud is the origin %s (%s)", aud, c ? c : "");
	CHECK(exp >= now + 43200 - 5 && exp <= now + 43200 + 5,
		  "exp is 12 hours ahead");
	CHECK(claims &&
		  strcmp(json_string_value(json_object_get(claims, "sub")),
				 "mailto:ops@example.com") == 0, "sub is the subject");
	json_decref(claims);
	free(h);
	free(c);
	return jwt;
}

static void
test_config(void)
{
	json_t	   *c = config_new();
	char	   *err;
	char	   *pem;
	EVP_PKEY   *rsa;

	err = ops->check_config(c);
	CHECK(err == NULL, "raw base64url VAPID key accepted (%s)", err ? err : "");
	free(err);
	CHECK(strcmp(ops->kind, "webpush") == 0 && strcmp(ops->channel, "push") == 0 &&
		  strcmp(ops->secret_keys[0], "vapid_private_key") == 0 &&
		  ops->secret_keys[1] == NULL, "kind, channel, secret keys");

	pem = tu_pem(vapid_key, false);
	json_object_set_new(c, "vapid_private_key", json_string(pem));
	err = ops->check_config(c);
	CHECK(err == NULL, "PEM VAPID key accepted (%s)", err ? err : "");
	free(err);
	free(pem);
	json_decref(c);

	c = config_new();
	json_object_set_new(c, "vapid_private_key", json_string("AAAA"));
	err = ops->check_config(c);
	CHECK(err && strstr(err, "vapid_private_key") && !strstr(err, "AAAA"),
		  "3-byte key refused: %s", err);
	free(err);
	json_decref(c);

	rsa = tu_keygen("RSA");
	pem = tu_pem(rsa, false);
	c = config_new();
	json_object_set_new(c, "vapid_private_key", json_string(pem));
	err = ops->check_config(c);
	CHECK(err && strstr(err, "P-256"), "RSA key refused: %s", err);
	free(err);
	json_decref(c);
	free(pem);
	EVP_PKEY_free(rsa);

	c = config_new();
	json_object_set_new(c, "subject", json_string("ops@example.com"));
	err = ops->check_config(c);
	CHECK(err && strstr(err, "subject"), "subject without mailto: refused: %s", err);
	free(err);
	json_object_set_new(c, "subject", json_string("https://example.com/contact"));
	err = ops->check_config(c);
	CHECK(err == NULL, "https: subject accepted");
	free(err);
	json_object_del(c, "subject");
	err = ops->check_config(c);
	CHECK(err && strstr(err, "subject"), "missing subject refused");
	free(err);
	json_decref(c);
}

static const char *full_message =
"{\"title\":\"Hi\",\"body\":\"Body\",\"url\":\"https://app.example/x\","
"\"image\":\"https://img.example/i.png\",\"collapse_id\":\"news-1\",\"badge\":2,"
"\"sound\":\"default\",\"data\":{\"k\":\"v\"},"
"\"webpush\":{\"icon\":\"https://img.example/icon.png\",\"requireInteraction\":true}}";

static const char *full_document =
"{\"title\":\"Hi\",\"body\":\"Body\",\"url\":\"https://app.example/x\","
"\"image\":\"https://img.example/i.png\",\"tag\":\"news-1\",\"badge_count\":2,"
"\"data\":{\"k\":\"v\"},\"icon\":\"https://img.example/icon.png\","
"\"requireInteraction\":true}";

static void
test_payload(void)
{
	json_t	   *m = msg(full_message);
	long		limit = 0;
	char	   *err = NULL;
	long		n = ops->payload_size(m, &limit, &err);

	CHECK(n == (long) strlen(full_document) && limit == 3993,
		  "payload_size %ld, limit %ld", n, limit);
	json_decref(m);

	m = msg("{\"data\":{\"k\":\"v\"}}");
	n = ops->payload_size(m, &limit, &err);
	CHECK(n == -1 && err && strstr(err, "title"), "no title or body: %s", err);
	free(err);
	json_decref(m);

	m = msg("{\"title\":\"x\",\"data\":[1]}");
	err = NULL;
	n = ops->payload_size(m, &limit, &err);
	CHECK(n == -1 && err && strstr(err, "data"), "data not an object: %s", err);
	free(err);
	json_decref(m);
}

static void
test_prepare(void)
{
	json_t	   *c = config_new();
	char	   *err = NULL;
	void	   *st = ops->create(c, &err);
	json_t	   *m = msg(full_message);
	char	   *sub = subscription("https://Push.Example.NET:443/wpush/v2/gAAAA?x=1");
	char	   *sub2 = subscription("http://localhost:9000/push/abc");
	NotifyDelivery d;
	NotifyDelivery d2;
	char		jwt1[1024];
	char	   *url = NULL;
	unsigned char *plain;
	size_t		plain_len = 0;
	bool		ok;

	json_decref(c);
	CHECK(st != NULL, "create (%s)", err ? err : "");
	if (st == NULL)
		return;
	CHECK(ops->needs_warmup == NULL, "webpush needs no warm-up");

	d_init(&d, 7, sub, m);
	d.priority = 0;
	ok = ops->prepare(st, &d);
	CHECK(ok, "prepare (%s)", d.error);
	curl_easy_getinfo(d.easy, CURLINFO_EFFECTIVE_URL, &url);
	CHECK(url && strcmp(url, "https://Push.Example.NET:443/wpush/v2/gAAAA?x=1") == 0,
		  "URL is the subscription endpoint");
	CHECK(tu_header_count(d.headers) == 7, "7 header lines (%d)",
		  tu_header_count(d.headers));
	CHECK(strcmp(hdr(&d, "TTL"), "2419200") == 0, "TTL defaults to 28 days");
	CHECK(strcmp(hdr(&d, "Urgency"), "normal") == 0, "Urgency normal");
	CHECK(strcmp(hdr(&d, "Topic"), "news-1") == 0, "Topic = collapse_id");
	CHECK(strcmp(hdr(&d, "Content-Encoding"), "aes128gcm") == 0,
		  "Content-Encoding aes128gcm");
	CHECK(strcmp(hdr(&d, "Content-Type"), "application/octet-stream") == 0,
		  "Content-Type octet-stream");
	CHECK(strcmp(hdr(&d, "Expect"), "") == 0, "Expect suppressed");
	snprintf(jwt1, sizeof(jwt1), "%s", check_vapid(&d, "https://push.example.net"));

	plain = d.body ? tu_webpush_decrypt(ua_key, ua_auth,
										(unsigned char *) d.body, d.body_len,
										&plain_len) : NULL;
	CHECK(plain && strcmp((char *) plain, full_document) == 0,
		  "body decrypts (RFC 8291) to the expected document");
	if (plain && strcmp((char *) plain, full_document) != 0)
		printf("# got %s\n", plain);
	free(plain);
	CHECK(d.body_len == 86 + strlen(full_document) + 1 + 16,
		  "body length = header + payload + delimiter + tag");

	/* same origin: the VAPID header is reused; another origin: a new one */
	d_init(&d2, 8, sub, m);
	ops->prepare(st, &d2);
	CHECK(strcmp(hdr(&d2, "Authorization"), hdr(&d, "Authorization")) == 0,
		  "VAPID token reused for the same origin");
	CHECK(memcmp(d2.body, d.body, 16) != 0, "a fresh salt per message");
	d_cleanup(st, &d2);

	d_init(&d2, 9, sub2, m);
	ops->prepare(st, &d2);
	check_vapid(&d2, "http://localhost:9000");
	d_cleanup(st, &d2);

	/* 201 with a Location */
	answer(st, &d, 201, "",
		   "HTTP/2 201\r\nlocation: https://push.example.net/m/abc123\r\n\r\n");
	CHECK(d.outcome == NOTIFY_OUTCOME_SENT &&
		  strcmp(d.provider_id, "https://push.example.net/m/abc123") == 0,
		  "201 -> SENT, provider_id from Location (%s)", d.provider_id);
	d_cleanup(st, &d);

	/* 403 drops the cached token for that origin */
	d_init(&d, 10, sub, m);
	ops->prepare(st, &d);
	answer(st, &d, 403, "bad jwt", NULL);
	CHECK(d.outcome == NOTIFY_OUTCOME_FAILED && !d.deactivate_device &&
		  strcmp(d.error, "webpush 403 vapid rejected") == 0,
		  "403 -> FAILED vapid rejected (%s)", d.error);
	d_cleanup(st, &d);
	d_init(&d, 11, sub, m);
	ops->prepare(st, &d);
	CHECK(strcmp(check_vapid(&d, "https://push.example.net"), jwt1) != 0,
		  "after a 403 the origin gets a new VAPID token");
	d_cleanup(st, &d);

	json_decref(m);
	free(sub);
	free(sub2);
	ops->destroy(st);
}

static void
test_headers(void)
{
	json_t	   *c = config_new();
	char	   *err = NULL;
	void	   *st = ops->create(c, &err);
	char	   *sub = subscription("https://fcm.googleapis.com/fcm/send/abc");
	json_t	   *m;
	NotifyDelivery d;
	time_t		now;
	static const struct
	{
		int			priority;
		const char *urgency;
	}			urg[] = {{-10, "very-low"}, {-5, "low"}, {-1, "low"},
	{0, "normal"}, {1, "high"}, {10, "high"}};
	size_t		i;

	json_decref(c);
	m = msg("{\"title\":\"t\"}");
	for (i = 0; i < sizeof(urg) / sizeof(urg[0]); i++)
	{
		d_init(&d, 1, sub, m);
		d.priority = urg[i].priority;
		ops->prepare(st, &d);
		CHECK(strcmp(hdr(&d, "Urgency"), urg[i].urgency) == 0,
			  "priority %d -> Urgency %s", urg[i].priority, hdr(&d, "Urgency"));
		CHECK(i > 0 || tu_header(d.headers, "Topic") == NULL,
			  "no collapse_id, no Topic");
		d_cleanup(st, &d);
	}

	d_init(&d, 1, sub, m);
	now = time(NULL);
	d.expires_at = now + 100;
	ops->prepare(st, &d);
	CHECK(atol(hdr(&d, "TTL")) >= 98 && atol(hdr(&d, "TTL")) <= 100,
		  "TTL = seconds until expires_at (%s)", hdr(&d, "TTL"));
	d_cleanup(st, &d);

	d_init(&d, 1, sub, m);
	d.expires_at = now - 100;
	ops->prepare(st, &d);
	CHECK(strcmp(hdr(&d, "TTL"), "0") == 0, "TTL 0 once expired");
	d_cleanup(st, &d);
	json_decref(m);

	m = msg("{\"title\":\"t\",\"ttl\":60,\"collapse_id\":\"this collapse id is far too long for a Topic header\"}");
	d_init(&d, 1, sub, m);
	ops->prepare(st, &d);
	CHECK(strcmp(hdr(&d, "TTL"), "60") == 0, "TTL from the message's ttl");
	{
		const char *id = "this collapse id is far too long for a Topic header";
		unsigned char md[32];
		unsigned int mdlen;
		char	   *b;

		EVP_Digest(id, strlen(id), md, &mdlen, EVP_sha256(), NULL);
		b = notify_b64url_encode(md, 32);
		b[32] = '\0';
		CHECK(strcmp(hdr(&d, "Topic"), b) == 0 && strlen(hdr(&d, "Topic")) == 32,
			  "long collapse_id -> 32 chars of base64url SHA-256 (%s)",
			  hdr(&d, "Topic"));
		free(b);
	}
	d_cleanup(st, &d);
	json_decref(m);

	/* bad subscriptions: FAILED + deactivate, no request */
	m = msg("{\"title\":\"t\"}");
	{
		char	   *good = subscription("https://push.example.net/x");
		json_t	   *j = json_loads(good, 0, NULL);
		char	   *bad[10];
		int			nbad = 0;
		int			k;
		json_t	   *t;

		bad[nbad++] = strdup("not json");
		bad[nbad++] = strdup("{\"keys\":{}}");
		t = json_deep_copy(j);
		json_object_set_new(t, "endpoint", json_string("ftp://push.example.net/x"));
		bad[nbad++] = json_dumps(t, 0);
		json_decref(t);
		t = json_deep_copy(j);
		json_object_set_new(t, "endpoint", json_string("https:///nohost"));
		bad[nbad++] = json_dumps(t, 0);
		json_decref(t);
		t = json_deep_copy(j);
		json_object_set_new(json_object_get(t, "keys"), "p256dh", json_string("BAAA"));
		bad[nbad++] = json_dumps(t, 0);
		json_decref(t);
		t = json_deep_copy(j);
		json_object_set_new(json_object_get(t, "keys"), "auth", json_string("AAAAAAAAAAAAAAAAAAAA"));
		bad[nbad++] = json_dumps(t, 0);
		json_decref(t);
		t = json_deep_copy(j);
		json_object_del(t, "keys");
		bad[nbad++] = json_dumps(t, 0);
		json_decref(t);
		{
			/* a p256dh that is not on the curve */
			unsigned char pub[65];
			char	   *b;

			tu_ec_public(ua_key, pub);
			pub[64] ^= 1;
			b = notify_b64url_encode(pub, 65);
			t = json_deep_copy(j);
			json_object_set_new(json_object_get(t, "keys"), "p256dh", json_string(b));
			bad[nbad++] = json_dumps(t, 0);
			json_decref(t);
			free(b);
		}

		for (k = 0; k < nbad; k++)
		{
			bool		ok;

			d_init(&d, 1, bad[k], m);
			ok = ops->prepare(st, &d);
			CHECK(!ok && d.outcome == NOTIFY_OUTCOME_FAILED && d.deactivate_device,
				  "bad subscription #%d -> FAILED + deactivate (%s)", k, d.error);
			d_cleanup(st, &d);
			free(bad[k]);
		}
		json_decref(j);
		free(good);
	}
	json_decref(m);

	free(sub);
	ops->destroy(st);
}

static void
test_finish(void)
{
	static const struct
	{
		long		status;
		const char *body;
		const char *headers;
		NotifyOutcome outcome;
		bool		deactivate;
		int			retry_after;
		const char *error;
	}			cases[] = {
		{202, "", NULL, NOTIFY_OUTCOME_SENT, false, -1, ""},
		{404, "", NULL, NOTIFY_OUTCOME_FAILED, true, -1, "webpush 404 subscription gone"},
		{410, "", NULL, NOTIFY_OUTCOME_FAILED, true, -1, "webpush 410 subscription gone"},
		{401, "", NULL, NOTIFY_OUTCOME_FAILED, false, -1, "webpush 401 vapid rejected"},
		{413, "", NULL, NOTIFY_OUTCOME_FAILED, false, -1, "webpush 413 payload too large"},
		{400, "missing TTL\n", NULL, NOTIFY_OUTCOME_FAILED, false, -1, "webpush 400 missing TTL"},
		{429, "", "HTTP/2 429\r\nRetry-After: 12\r\n\r\n", NOTIFY_OUTCOME_RETRY, false, 12, "webpush 429"},
		{500, "", NULL, NOTIFY_OUTCOME_RETRY, false, -1, "webpush 500"},
		{503, "", "HTTP/2 503\r\nretry-after: 3\r\n\r\n", NOTIFY_OUTCOME_RETRY, false, 3, "webpush 503"},
	};
	json_t	   *c = config_new();
	char	   *err = NULL;
	void	   *st = ops->create(c, &err);
	char	   *sub = subscription("https://push.example.net/x");
	json_t	   *m = msg("{\"title\":\"t\"}");
	size_t		i;

	json_decref(c);
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
	{
		NotifyDelivery d;

		d_init(&d, 1, sub, m);
		ops->prepare(st, &d);
		answer(st, &d, cases[i].status, cases[i].body, cases[i].headers);
		CHECK(d.outcome == cases[i].outcome &&
			  d.deactivate_device == cases[i].deactivate &&
			  d.retry_after == cases[i].retry_after &&
			  strcmp(d.error, cases[i].error) == 0,
			  "%ld -> outcome %d%s retry_after %d \"%s\"", cases[i].status,
			  (int) d.outcome, d.deactivate_device ? " +deactivate" : "",
			  d.retry_after, d.error);
		d_cleanup(st, &d);
	}
	json_decref(m);
	free(sub);
	ops->destroy(st);
}

int
main(void)
{
	int			rc;
	size_t		len;
	unsigned char *raw;
	char		errbuf[NOTIFY_ERRBUF];

	curl_global_init(CURL_GLOBAL_DEFAULT);
	raw = tu_b64url_decode(vapid_raw, &len);
	vapid_key = notify_ec_private_from_raw(raw, errbuf);
	free(raw);
	ua_key = tu_keygen("EC");
	RAND_bytes(ua_auth, sizeof(ua_auth));

	test_config();
	test_payload();
	test_prepare();
	test_headers();
	test_finish();

	rc = tu_done();
	EVP_PKEY_free(vapid_key);
	EVP_PKEY_free(ua_key);
	curl_global_cleanup();
	return rc;
}
