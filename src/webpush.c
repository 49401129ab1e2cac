/*-------------------------------------------------------------------------
 *
 * webpush.c
 *	  Web Push to browsers (RFC 8030 delivery, RFC 8291 message encryption,
 *	  RFC 8292 VAPID): the "webpush" provider kind.
 *
 * What this file owns: the webpush configuration (vapid_private_key,
 * subject, ca_file), the PushSubscription destination parser, the JSON
 * document delivered to the service worker, the RFC 8030 headers (TTL,
 * Urgency, Topic), the VAPID Authorization header (one ES256 JWT per push
 * service origin, cached and reused until an hour before it expires), and
 * the reading of a push service's answer into an outcome.
 *
 * What it does not: the encryption itself, JWT signing and key parsing
 * (crypto.c), running transfers (the engine), retry timing (the worker),
 * and what the browser's service worker does with the document.
 *
 * The destination is the subscription as the browser's
 * PushSubscription.toJSON() gives it:
 *	 {"endpoint": "https://push.example/...",
 *	  "keys": {"p256dh": "<base64url 65 bytes>", "auth": "<base64url 16>"}}
 * A subscription that cannot be parsed is FAILED with deactivate_device:
 * it can never be delivered to.  http:// endpoints are accepted for test
 * push services.
 *
 *-------------------------------------------------------------------------
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <openssl/evp.h>

#include "crypto.h"
#include "provider.h"

#define WEBPUSH_PAYLOAD_LIMIT	3993	/* plaintext in one 4096-byte record */
#define WEBPUSH_DEFAULT_TTL		2419200 /* 28 days */
#define WEBPUSH_TOPIC_MAX		32
#define WEBPUSH_ENDPOINT_MAX	2048
#define WEBPUSH_ORIGIN_MAX		300
#define VAPID_LIFETIME_S		(12 * 3600)
#define VAPID_RENEW_BEFORE_S	3600
#define VAPID_CACHE_SIZE		16

static const char *const webpush_secret_keys[] = {"vapid_private_key", NULL};

typedef struct VapidEntry
{
	char	   *origin;			/* NULL = free slot */
	char	   *header;			/* "vapid t=<jwt>, k=<key>" */
	time_t		exp;
} VapidEntry;

typedef struct WebPushState
{
	json_t	   *config;			/* our reference, for notify_http_common */
	EVP_PKEY   *key;
	char	   *subject;
	char	   *public_b64;		/* the VAPID public key, base64url */
	VapidEntry	cache[VAPID_CACHE_SIZE];
} WebPushState;

typedef struct WebPushSubscription
{
	char	   *endpoint;		/* malloc'd */
	char		origin[WEBPUSH_ORIGIN_MAX + 1];
	unsigned char p256dh[65];
	unsigned char auth[16];
} WebPushSubscription;

/* ----------------------------------------------------------------
 * subscription
 * ----------------------------------------------------------------
 */

/*
 * The origin (RFC 6454 serialization: scheme://host[:port], lower case,
 * default port omitted) of an http(s) URL.  False when it is not one.
 */
static bool
url_origin(const char *url, char *out, size_t outlen)
{
	const char *scheme;
	const char *auth;
	const char *end;
	const char *at;
	const char *host;
	const char *hend;
	const char *port = NULL;
	int			defport;
	size_t		i;
	size_t		o;

	if (strncasecmp(url, "https://", 8) == 0)
	{
		scheme = "https";
		auth = url + 8;
		defport = 443;
	}
	else if (strncasecmp(url, "http://", 7) == 0)
	{
		scheme = "http";
		auth = url + 7;
		defport = 80;
	}
	else
		return false;

	end = auth + strcspn(auth, "/?#");
	/* drop userinfo */
	for (at = end; at > auth && at[-1] != '@'; at--)
		;
	host = at > auth ? at : auth;
	if (host >= end)
		return false;

	if (*host == '[')
	{
		hend = memchr(host, ']', end - host);
		if (hend == NULL)
			return false;
		hend++;
		if (hend < end)
		{
			if (*hend != ':')
				return false;
			port = hend + 1;
		}
	}
	else
	{
		hend = memchr(host, ':', end - host);
		if (hend != NULL)
			port = hend + 1;
		else
			hend = end;
	}
	if (hend == host)
		return false;
	for (i = 0; host + i < hend; i++)
	{
		unsigned char c = (unsigned char) host[i];

		if (!isalnum(c) && c != '.' && c != '-' && c != '_' &&
			c != '[' && c != ']' && c != ':' && c != '%')
			return false;
	}

	o = (size_t) snprintf(out, outlen, "%s://", scheme);
	if (o + (size_t) (hend - host) + 1 > outlen)
		return false;
	for (i = 0; host + i < hend; i++)
		out[o++] = (char) tolower((unsigned char) host[i]);
	out[o] = '\0';

	if (port != NULL && port < end)
	{
		long		p = 0;
		const char *q;

		for (q = port; q < end; q++)
		{
			if (!isdigit((unsigned char) *q) || q - port >= 5)
				return false;
			p = p * 10 + (*q - '0');
		}
		if (p < 1 || p > 65535)
			return false;
		if (p != defport)
		{
			if (o + 7 > outlen)
				return false;
			snprintf(out + o, outlen - o, ":%ld", p);
		}
	}
	else if (port != NULL)
		return false;			/* "host:" with no port */
	return true;
}

/* Decode a base64url key of exactly want bytes into out. */
static bool
decode_key(json_t *v, unsigned char *out, size_t want)
{
	unsigned char *raw;
	size_t		len = 0;
	bool		ok;

	if (!json_is_string(v))
		return false;
	raw = notify_b64url_decode(json_string_value(v), &len);
	if (raw == NULL)
		return false;
	ok = len == want;
	if (ok)
		memcpy(out, raw, want);
	free(raw);
	return ok;
}

/*
 * Parse a PushSubscription JSON text.  False with a message (no key
 * material in it) in err when it is not a usable subscription.
 */
static bool
webpush_parse_subscription(const char *text, WebPushSubscription *sub,
						   char *err, size_t errlen)
{
	json_t	   *doc;
	json_t	   *keys;
	const char *endpoint;
	size_t		i;
	bool		ok = false;

	memset(sub, 0, sizeof(*sub));
	if (text == NULL)
	{
		snprintf(err, errlen, "missing subscription");
		return false;
	}
	doc = json_loads(text, JSON_REJECT_DUPLICATES, NULL);
	if (!json_is_object(doc))
	{
		snprintf(err, errlen, "subscription is not a JSON object");
		goto done;
	}
	endpoint = json_string_value(json_object_get(doc, "endpoint"));
	if (endpoint == NULL || endpoint[0] == '\0')
	{
		snprintf(err, errlen, "subscription has no endpoint");
		goto done;
	}
	if (strlen(endpoint) > WEBPUSH_ENDPOINT_MAX)
	{
		snprintf(err, errlen, "subscription endpoint is too long");
		goto done;
	}
	for (i = 0; endpoint[i]; i++)
	{
		unsigned char c = (unsigned char) endpoint[i];

		if (c <= 0x20 || c >= 0x7f)
		{
			snprintf(err, errlen, "subscription endpoint is not a plain URL");
			goto done;
		}
	}
	if (!url_origin(endpoint, sub->origin, sizeof(sub->origin)))
	{
		snprintf(err, errlen, "subscription endpoint is not an http(s) URL");
		goto done;
	}

	keys = json_object_get(doc, "keys");
	if (!json_is_object(keys))
	{
		snprintf(err, errlen, "subscription has no keys");
		goto done;
	}
	if (!decode_key(json_object_get(keys, "p256dh"), sub->p256dh, 65) ||
		sub->p256dh[0] != 0x04)
	{
		snprintf(err, errlen, "subscription keys.p256dh is not a 65-byte P-256 key");
		goto done;
	}
	if (!decode_key(json_object_get(keys, "auth"), sub->auth, 16))
	{
		snprintf(err, errlen, "subscription keys.auth is not 16 bytes");
		goto done;
	}
	sub->endpoint = strdup(endpoint);
	if (sub->endpoint == NULL)
	{
		snprintf(err, errlen, "out of memory");
		goto done;
	}
	ok = true;

done:
	json_decref(doc);
	return ok;
}

/* ----------------------------------------------------------------
 * payload
 * ----------------------------------------------------------------
 */

/*
 * The document the service worker receives:
 *	 {"title","body","url","image","icon","tag" (= collapse_id),
 *	  "badge_count" (an integer badge) or "badge" (a badge image URL),
 *	  "data", ...message.webpush}
 */
static json_t *
webpush_build(json_t *message, char **err)
{
	static const char *const fields[] = {"title", "body", "url", "image", "icon", NULL};
	json_t	   *doc;
	json_t	   *v;
	json_t	   *val;
	const char *s;
	const char *key;
	int			i;

	*err = NULL;
	if (!json_is_object(message))
	{
		*err = strdup("push message must be a JSON object");
		return NULL;
	}
	doc = json_object();
	if (doc == NULL)
		goto oom;

	for (i = 0; fields[i]; i++)
	{
		if (!notify_msg_str(message, fields[i], &s, err))
			goto fail;
		if (s && json_object_set_new(doc, fields[i], json_string(s)) != 0)
			goto oom;
	}
	if (!notify_msg_str(message, "collapse_id", &s, err))
		goto fail;
	if (s && json_object_set_new(doc, "tag", json_string(s)) != 0)
		goto oom;

	/* an iOS-style badge count, or (for the web) a badge image URL */
	v = json_object_get(message, "badge");
	if (json_is_integer(v))
	{
		if (json_object_set(doc, "badge_count", v) != 0)
			goto oom;
	}
	else if (json_is_string(v) && json_string_length(v) > 0)
	{
		const char *b = json_string_value(v);

		if (strspn(b, "0123456789") == strlen(b) && strlen(b) < 10)
		{
			if (json_object_set_new(doc, "badge_count",
									json_integer(atol(b))) != 0)
				goto oom;
		}
		else if (json_object_set(doc, "badge", v) != 0)
			goto oom;
	}

	v = json_object_get(message, "data");
	if (v != NULL && !json_is_null(v))
	{
		if (!json_is_object(v))
		{
			*err = strdup("push message field \"data\" must be an object");
			goto fail;
		}
		if (json_object_set(doc, "data", v) != 0)
			goto oom;
	}

	v = json_object_get(message, "webpush");
	if (v != NULL && !json_is_null(v))
	{
		if (!json_is_object(v))
		{
			*err = strdup("push message field \"webpush\" must be an object");
			goto fail;
		}
		json_object_foreach(v, key, val)
		{
			if (json_object_set(doc, key, val) != 0)
				goto oom;
		}
	}

	if (json_object_get(doc, "title") == NULL &&
		json_object_get(doc, "body") == NULL &&
		!notify_msg_flag(message, "content_available"))
	{
		*err = strdup("push message needs a title or body");
		goto fail;
	}
	return doc;

oom:
	free(*err);
	*err = strdup("out of memory");
fail:
	json_decref(doc);
	return NULL;
}

static char *
webpush_encode(json_t *message, char **err)
{
	json_t	   *doc = webpush_build(message, err);
	char	   *text;

	if (doc == NULL)
		return NULL;
	text = json_dumps(doc, JSON_COMPACT);
	json_decref(doc);
	if (text == NULL)
		*err = strdup("could not encode the web push payload");
	return text;
}

static long
webpush_payload_size(json_t *message, long *limit, char **err)
{
	char	   *text;
	long		len;

	*limit = WEBPUSH_PAYLOAD_LIMIT;
	text = webpush_encode(message, err);
	if (text == NULL)
		return -1;
	len = (long) strlen(text);
	free(text);
	return len;
}

/*
 * The Topic header for a collapse id: itself when it is at most 32 URL-safe
 * base64 characters, else the first 32 characters of the base64url SHA-256
 * of it (stable, so the same id always replaces the same message).
 */
static bool
webpush_topic(const char *collapse_id, char out[WEBPUSH_TOPIC_MAX + 1])
{
	static const char safe[] =
		"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
	size_t		len = strlen(collapse_id);
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;
	char	   *b64;

	if (len <= WEBPUSH_TOPIC_MAX && strspn(collapse_id, safe) == len)
	{
		memcpy(out, collapse_id, len + 1);
		return true;
	}
	if (EVP_Digest(collapse_id, len, md, &mdlen, EVP_sha256(), NULL) != 1)
		return false;
	b64 = notify_b64url_encode(md, mdlen);
	if (b64 == NULL)
		return false;
	memcpy(out, b64, WEBPUSH_TOPIC_MAX);
	out[WEBPUSH_TOPIC_MAX] = '\0';
	free(b64);
	return true;
}

/* ----------------------------------------------------------------
 * configuration, state, VAPID
 * ----------------------------------------------------------------
 */

/* The VAPID key: a PEM key or a base64url raw 32-byte P-256 scalar. */
static EVP_PKEY *
webpush_load_key(json_t *config, char **err)
{
	const char *text = notify_json_string(config, "vapid_private_key");
	char		errbuf[NOTIFY_ERRBUF];
	unsigned char pub[65];
	EVP_PKEY   *key;

	if (text == NULL || text[0] == '\0')
	{
		*err = strdup("webpush config needs \"vapid_private_key\" (PEM or base64url)");
		return NULL;
	}
	if (strstr(text, "-----BEGIN") != NULL)
		key = notify_load_private_key(text, errbuf);
	else
	{
		unsigned char *raw;
		size_t		len = 0;

		raw = notify_b64url_decode(text, &len);
		if (raw == NULL || len != 32)
		{
			if (raw)
			{
				memset(raw, 0, len);
				free(raw);
			}
			*err = strdup("webpush \"vapid_private_key\" must be a PEM key or a base64url 32-byte P-256 private key");
			return NULL;
		}
		key = notify_ec_private_from_raw(raw, errbuf);
		memset(raw, 0, len);
		free(raw);
	}
	if (key == NULL)
	{
		*err = notify_strdupf("webpush \"vapid_private_key\" is not usable (%s)",
							  errbuf);
		return NULL;
	}
	if (!notify_ec_public_raw(key, pub, errbuf))
	{
		EVP_PKEY_free(key);
		*err = strdup("webpush \"vapid_private_key\" must be a P-256 key");
		return NULL;
	}
	return key;
}

static char *
webpush_check_config(json_t *config)
{
	const char *subject;
	json_t	   *v;
	char	   *err = NULL;
	EVP_PKEY   *key;

	if (!json_is_object(config))
		return strdup("webpush config must be a JSON object");

	subject = notify_json_string(config, "subject");
	if (subject == NULL ||
		(strncmp(subject, "mailto:", 7) != 0 &&
		 strncmp(subject, "https:", 6) != 0) ||
		strlen(subject) < 8)
		return strdup("webpush config needs \"subject\", a mailto: or https: contact");

	v = json_object_get(config, "ca_file");
	if (v != NULL && !json_is_null(v) && !json_is_string(v))
		return strdup("webpush \"ca_file\" must be a string");

	key = webpush_load_key(config, &err);
	if (key == NULL)
		return err;
	EVP_PKEY_free(key);
	return NULL;
}

static void
vapid_entry_clear(VapidEntry *e)
{
	free(e->origin);
	free(e->header);
	e->origin = NULL;
	e->header = NULL;
	e->exp = 0;
}

static void
webpush_destroy(void *state)
{
	WebPushState *st = state;
	int			i;

	if (st == NULL)
		return;
	for (i = 0; i < VAPID_CACHE_SIZE; i++)
		vapid_entry_clear(&st->cache[i]);
	EVP_PKEY_free(st->key);
	free(st->subject);
	free(st->public_b64);
	json_decref(st->config);
	free(st);
}

static void *
webpush_create(json_t *config, char **err)
{
	WebPushState *st;
	unsigned char pub[65];
	char		errbuf[NOTIFY_ERRBUF];

	*err = webpush_check_config(config);
	if (*err != NULL)
		return NULL;
	st = calloc(1, sizeof(WebPushState));
	if (st == NULL)
	{
		*err = strdup("out of memory");
		return NULL;
	}
	st->config = json_incref(config);
	st->key = webpush_load_key(config, err);
	if (st->key == NULL)
	{
		webpush_destroy(st);
		return NULL;
	}
	if (!notify_ec_public_raw(st->key, pub, errbuf))
	{
		webpush_destroy(st);
		*err = notify_strdupf("webpush: %s", errbuf);
		return NULL;
	}
	st->public_b64 = notify_b64url_encode(pub, sizeof(pub));
	st->subject = strdup(notify_json_string(config, "subject"));
	if (st->public_b64 == NULL || st->subject == NULL)
	{
		webpush_destroy(st);
		*err = strdup("out of memory");
		return NULL;
	}
	return st;
}

/*
 * The Authorization header value for a push service origin: a cached one
 * while it has more than an hour left, else a freshly signed one.
 */
static const char *
vapid_header(WebPushState *st, const char *origin, time_t now, char *errbuf)
{
	VapidEntry *slot = NULL;
	json_t	   *claims;
	char	   *ctext;
	char	   *jwt;
	char	   *header;
	size_t		hlen;
	int			i;

	for (i = 0; i < VAPID_CACHE_SIZE; i++)
	{
		VapidEntry *e = &st->cache[i];

		if (e->origin != NULL && strcmp(e->origin, origin) == 0)
		{
			if (now < e->exp - VAPID_RENEW_BEFORE_S &&
				now > e->exp - VAPID_LIFETIME_S - 60)
				return e->header;
			slot = e;
			break;
		}
	}
	if (slot == NULL)
	{
		/* a free slot, else the one closest to expiring */
		for (i = 0; i < VAPID_CACHE_SIZE; i++)
		{
			VapidEntry *e = &st->cache[i];

			if (e->origin == NULL)
			{
				slot = e;
				break;
			}
			if (slot == NULL || e->exp < slot->exp)
				slot = e;
		}
	}

	claims = json_pack("{s:s, s:I, s:s}", "aud", origin,
					   "exp", (json_int_t) (now + VAPID_LIFETIME_S),
					   "sub", st->subject);
	ctext = claims ? json_dumps(claims, JSON_COMPACT) : NULL;
	json_decref(claims);
	if (ctext == NULL)
	{
		snprintf(errbuf, NOTIFY_ERRBUF, "out of memory");
		return NULL;
	}
	jwt = notify_jwt_sign(st->key, "ES256", "{\"typ\":\"JWT\",\"alg\":\"ES256\"}",
						  ctext, errbuf);
	free(ctext);
	if (jwt == NULL)
		return NULL;

	hlen = strlen("vapid t=, k=") + strlen(jwt) + strlen(st->public_b64) + 1;
	header = malloc(hlen);
	if (header == NULL)
	{
		free(jwt);
		snprintf(errbuf, NOTIFY_ERRBUF, "out of memory");
		return NULL;
	}
	snprintf(header, hlen, "vapid t=%s, k=%s", jwt, st->public_b64);
	free(jwt);

	vapid_entry_clear(slot);
	slot->origin = strdup(origin);
	if (slot->origin == NULL)
	{
		free(header);
		snprintf(errbuf, NOTIFY_ERRBUF, "out of memory");
		return NULL;
	}
	slot->header = header;
	slot->exp = now + VAPID_LIFETIME_S;
	return slot->header;
}

/* Forget the cached VAPID token for an origin (the service rejected it). */
static void
vapid_forget(WebPushState *st, const char *origin)
{
	int			i;

	for (i = 0; i < VAPID_CACHE_SIZE; i++)
		if (st->cache[i].origin != NULL &&
			strcmp(st->cache[i].origin, origin) == 0)
			vapid_entry_clear(&st->cache[i]);
}

/* ----------------------------------------------------------------
 * one delivery
 * ----------------------------------------------------------------
 */

static bool
webpush_prepare(void *state, NotifyDelivery *d)
{
	WebPushState *st = state;
	WebPushSubscription sub;
	char		errbuf[NOTIFY_ERRBUF];
	char	   *err = NULL;
	char	   *payload;
	unsigned char *body;
	size_t		body_len = 0;
	const char *auth;
	const char *collapse_id;
	char		topic[WEBPUSH_TOPIC_MAX + 1];
	const char *urgency;
	long long	ttl;
	time_t		now = time(NULL);
	json_t	   *v;
	bool		ok;

	if (!webpush_parse_subscription(d->destination, &sub, errbuf,
									sizeof(errbuf)))
	{
		notify_set_error(d, NOTIFY_OUTCOME_FAILED, "webpush %s", errbuf);
		d->deactivate_device = true;
		return false;
	}

	payload = webpush_encode(d->message, &err);
	if (payload == NULL)
	{
		free(sub.endpoint);
		notify_set_error(d, NOTIFY_OUTCOME_FAILED, "webpush %s",
						 err ? err : "out of memory");
		free(err);
		return false;
	}
	if (strlen(payload) > WEBPUSH_PAYLOAD_LIMIT)
	{
		notify_set_error(d, NOTIFY_OUTCOME_FAILED,
						 "webpush payload is %zu bytes, limit %d",
						 strlen(payload), WEBPUSH_PAYLOAD_LIMIT);
		free(payload);
		free(sub.endpoint);
		return false;
	}

	body = notify_webpush_encrypt(sub.p256dh, sizeof(sub.p256dh),
								  sub.auth, sizeof(sub.auth),
								  (const unsigned char *) payload,
								  strlen(payload), NULL, NULL,
								  &body_len, errbuf);
	free(payload);
	if (body == NULL)
	{
		/* only a subscription key that is not on the curve gets here */
		free(sub.endpoint);
		notify_set_error(d, NOTIFY_OUTCOME_FAILED,
						 "webpush could not encrypt: %s", errbuf);
		d->deactivate_device = true;
		return false;
	}
	d->body = (char *) body;
	d->body_len = body_len;

	auth = vapid_header(st, sub.origin, now, errbuf);
	if (auth == NULL)
	{
		free(sub.endpoint);
		notify_set_error(d, NOTIFY_OUTCOME_RETRY,
						 "webpush could not sign the VAPID token: %s", errbuf);
		return false;
	}

	/* TTL: until expires_at, else the message's ttl, else 28 days */
	v = json_object_get(d->message, "ttl");
	if (d->expires_at > 0)
		ttl = d->expires_at > now ? (long long) (d->expires_at - now) : 0;
	else if (json_is_integer(v) && json_integer_value(v) >= 0)
		ttl = (long long) json_integer_value(v);
	else
		ttl = WEBPUSH_DEFAULT_TTL;

	if (d->priority <= -10)
		urgency = "very-low";
	else if (d->priority < 0)
		urgency = "low";
	else if (d->priority == 0)
		urgency = "normal";
	else
		urgency = "high";

	collapse_id = notify_json_nonempty(d->message, "collapse_id");

	ok = notify_add_header(&d->headers, "TTL: %lld", ttl) &&
		notify_add_header(&d->headers, "Urgency: %s", urgency) &&
		(collapse_id == NULL ||
		 (webpush_topic(collapse_id, topic) &&
		  notify_add_header(&d->headers, "Topic: %s", topic))) &&
		notify_add_header(&d->headers, "Content-Encoding: aes128gcm") &&
		notify_add_header(&d->headers, "Content-Type: application/octet-stream") &&
		notify_add_header(&d->headers, "Authorization: %s", auth) &&
		notify_add_header(&d->headers, "Expect:");
	if (!ok)
	{
		free(sub.endpoint);
		notify_set_error(d, NOTIFY_OUTCOME_RETRY, "webpush out of memory");
		return false;
	}

	notify_http_common(d->easy, st->config);
	ok = curl_easy_setopt(d->easy, CURLOPT_URL, sub.endpoint) == CURLE_OK &&
		curl_easy_setopt(d->easy, CURLOPT_POST, 1L) == CURLE_OK &&
		curl_easy_setopt(d->easy, CURLOPT_POSTFIELDSIZE_LARGE,
						 (curl_off_t) d->body_len) == CURLE_OK &&
		curl_easy_setopt(d->easy, CURLOPT_POSTFIELDS, d->body) == CURLE_OK &&
		curl_easy_setopt(d->easy, CURLOPT_HTTPHEADER, d->headers) == CURLE_OK;
	free(sub.endpoint);			/* libcurl copies the URL */
	if (!ok)
	{
		notify_set_error(d, NOTIFY_OUTCOME_RETRY,
						 "webpush could not set up the request");
		return false;
	}

	/* the origin, to forget its VAPID token if the service rejects it */
	d->provider_data = strdup(sub.origin);
	return true;
}

static void
webpush_finish(void *state, NotifyDelivery *d, CURLcode rc)
{
	WebPushState *st = state;
	long		status = d->http_status;
	char		snippet[121];

	if (rc != CURLE_OK)
		return;					/* the engine has marked it RETRY */

	if (status >= 200 && status < 300)
	{
		d->outcome = NOTIFY_OUTCOME_SENT;
		d->error[0] = '\0';
		d->retry_after = -1;
		if (!notify_response_header(&d->response_headers, "location",
									d->provider_id, sizeof(d->provider_id)))
			d->provider_id[0] = '\0';
		return;
	}

	if (status == 404 || status == 410)
	{
		notify_set_error(d, NOTIFY_OUTCOME_FAILED,
						 "webpush %ld subscription gone", status);
		d->deactivate_device = true;
		return;
	}
	if (status == 401 || status == 403)
	{
		if (d->provider_data != NULL)
			vapid_forget(st, (const char *) d->provider_data);
		notify_set_error(d, NOTIFY_OUTCOME_FAILED,
						 "webpush %ld vapid rejected", status);
		return;
	}
	if (status == 413)
	{
		notify_set_error(d, NOTIFY_OUTCOME_FAILED,
						 "webpush 413 payload too large");
		return;
	}
	if (notify_http_status_transient(status))
	{
		notify_set_error(d, NOTIFY_OUTCOME_RETRY, "webpush %ld", status);
		d->retry_after = notify_parse_retry_after(&d->response_headers);
		return;
	}
	if (status == 0)
	{
		notify_set_error(d, NOTIFY_OUTCOME_RETRY, "webpush no HTTP status");
		return;
	}

	notify_printable_copy(snippet, sizeof(snippet), d->response.data,
						  d->response.len);
	if (snippet[0])
		notify_set_error(d, NOTIFY_OUTCOME_FAILED, "webpush %ld %s",
						 status, snippet);
	else
		notify_set_error(d, NOTIFY_OUTCOME_FAILED, "webpush %ld", status);
}

static void
webpush_release(void *state, NotifyDelivery *d)
{
	free(d->provider_data);
	d->provider_data = NULL;
}

/* Keys a webpush config may have, besides the common ones (provider.h). */
static const char *const webpush_config_keys[] = {
	"vapid_private_key", "subject", NULL
};

const NotifyProviderOps notify_webpush_ops = {
	.kind = "webpush",
	.channel = "push",
	.secret_keys = webpush_secret_keys,
	.config_keys = webpush_config_keys,
	.check_config = webpush_check_config,
	.payload_size = webpush_payload_size,
	.create = webpush_create,
	.prepare = webpush_prepare,
	.finish = webpush_finish,
	.release = webpush_release,
	.destroy = webpush_destroy,
	.needs_warmup = NULL,
};
