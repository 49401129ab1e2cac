/*-------------------------------------------------------------------------
 *
 * apns.c
 *	  Apple Push Notification service, token-based provider API over
 *	  HTTP/2: the "apns" provider kind.
 *
 * What this file owns: the APNS configuration (team_id, key_id, key,
 * topic, sandbox, push_type, endpoint, ca_file, token_refresh_s), the
 * aps payload built from a rendered push message, the request headers, the
 * provider token (an ES256 JWT minted lazily, reused, refreshed on age and
 * after APNS rejects it), the one-stream warm-up rule, and the reading of
 * every APNS answer into an outcome.
 *
 * What it does not: running transfers or HTTP/2 connection handling (the
 * engine), retry timing and attempt limits (the worker), JWT and UUID
 * byte-level work (crypto.c), certificate-based auth (not supported).
 *
 * The provider token is per worker state.  Each delivery remembers the
 * token generation it was sent with (in d->provider_data, as an integer,
 * not a pointer), so that when a batch of requests all come back 403
 * ExpiredProviderToken only the first answer for the current generation
 * marks it stale and exactly one new token is minted.  A token that was
 * itself minted because of a rejection and was rejected again before any
 * success is not replaced before APNS_TOKEN_MIN_AGE_S: minting more often
 * only earns 429 TooManyProviderTokenUpdates.
 *
 *-------------------------------------------------------------------------
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "crypto.h"
#include "provider.h"

#define APNS_ENDPOINT			"https://api.push.apple.com"
#define APNS_SANDBOX_ENDPOINT	"https://api.sandbox.push.apple.com"
#define APNS_PAYLOAD_LIMIT		4096
#define APNS_COLLAPSE_ID_MAX	64
#define APNS_TOKEN_REFRESH_S	3000	/* default: 50 minutes */
#define APNS_TOKEN_MIN_AGE_S	1200	/* Apple: not more often than 20 min */
#define APNS_TOKEN_MAX_AGE_S	3600	/* Apple: rejected after an hour */
#define APNS_DEVICE_TOKEN_MIN	64
#define APNS_DEVICE_TOKEN_MAX	200

static const char *const apns_secret_keys[] = {"key", NULL};

static const char *const apns_push_types[] = {
	"alert", "background", "location", "voip", "complication",
	"fileprovider", "mdm", "liveactivity", "pushtotalk", NULL
};

typedef struct ApnsState
{
	json_t	   *config;			/* our reference, for notify_http_common */
	EVP_PKEY   *key;
	char	   *team_id;
	char	   *key_id;
	char	   *topic;
	char	   *device_url;		/* endpoint + "/3/device/" */
	char	   *push_type;		/* default apns-push-type */
	int			refresh_s;		/* token age at which we mint a new one */

	char	   *jwt;			/* current provider token, or NULL */
	time_t		jwt_iat;
	uint64_t	jwt_gen;		/* bumped each time a token is minted */
	bool		jwt_stale;		/* rejected by APNS: mint before next use */
	bool		jwt_forced;		/* minted because the previous was rejected */
	bool		jwt_ok;			/* a request with it has succeeded */
	bool		warm;			/* a request succeeded on this token and
								 * the connections we know of */
} ApnsState;

/* A built request: payload and the header values the message overrides. */
typedef struct ApnsMessage
{
	json_t	   *payload;
	bool		background;		/* content-available, no alert/badge/sound */
	char		push_type[32];
	char		priority[4];
	char		expiration[24];
	char		collapse_id[APNS_COLLAPSE_ID_MAX + 1];
	char		topic[256];
} ApnsMessage;

/* ----------------------------------------------------------------
 * small helpers
 * ----------------------------------------------------------------
 */

/* Copy a header value, refusing anything but printable ASCII. */
static bool
header_value(json_t *v, char *out, size_t outlen)
{
	const char *s;
	size_t		i;

	if (json_is_integer(v))
	{
		snprintf(out, outlen, "%lld", (long long) json_integer_value(v));
		return true;
	}
	if (!json_is_string(v))
		return false;
	s = json_string_value(v);
	if (strlen(s) >= outlen)
		return false;
	for (i = 0; s[i]; i++)
		if ((unsigned char) s[i] < 0x20 || (unsigned char) s[i] > 0x7e)
			return false;
	memcpy(out, s, i + 1);
	return true;
}

/* 64+ hex digits, even length: the shape of an APNS device token. */
static bool
valid_device_token(const char *token)
{
	size_t		len;
	size_t		i;

	if (token == NULL)
		return false;
	len = strlen(token);
	if (len < APNS_DEVICE_TOKEN_MIN || len > APNS_DEVICE_TOKEN_MAX ||
		len % 2 != 0)
		return false;
	for (i = 0; i < len; i++)
		if (!isxdigit((unsigned char) token[i]))
			return false;
	return true;
}

/* ----------------------------------------------------------------
 * payload
 * ----------------------------------------------------------------
 */

/* Header names a message may set through apns.headers. */
static bool
apns_header_override(ApnsMessage *m, const char *name, json_t *v, char **err)
{
	char	   *dst;
	size_t		dstlen;

	if (strcasecmp(name, "apns-push-type") == 0)
	{
		dst = m->push_type;
		dstlen = sizeof(m->push_type);
	}
	else if (strcasecmp(name, "apns-priority") == 0)
	{
		dst = m->priority;
		dstlen = sizeof(m->priority);
	}
	else if (strcasecmp(name, "apns-expiration") == 0)
	{
		dst = m->expiration;
		dstlen = sizeof(m->expiration);
	}
	else if (strcasecmp(name, "apns-collapse-id") == 0)
	{
		dst = m->collapse_id;
		dstlen = sizeof(m->collapse_id);
	}
	else if (strcasecmp(name, "apns-topic") == 0)
	{
		dst = m->topic;
		dstlen = sizeof(m->topic);
	}
	else
	{
		*err = notify_strdupf("apns.headers: header \"%.64s\" cannot be set by a message",
							  name);
		return false;
	}
	if (!header_value(v, dst, dstlen))
	{
		*err = notify_strdupf("apns.headers: bad value for \"%.64s\"", name);
		return false;
	}
	if (dst == m->priority && strcmp(dst, "10") != 0 &&
		strcmp(dst, "5") != 0 && strcmp(dst, "1") != 0)
	{
		*err = notify_strdupf("apns.headers: apns-priority must be 10, 5 or 1");
		return false;
	}
	if (dst == m->push_type)
	{
		int			i;

		for (i = 0; apns_push_types[i]; i++)
			if (strcmp(dst, apns_push_types[i]) == 0)
				break;
		if (apns_push_types[i] == NULL)
		{
			*err = notify_strdupf("apns.headers: unknown apns-push-type");
			return false;
		}
	}
	return true;
}

/*
 * Build the APNS JSON payload (and the message's header overrides) from a
 * rendered push message.  The payload is
 *	 {"aps": {"alert": {"title","subtitle","body"}, "badge", "sound",
 *			  "thread-id", "category", "mutable-content": 1,
 *			  "content-available": 1, ...message.apns},
 *	  ...message.data}
 * False with *err (malloc'd) when the message cannot be encoded.
 */
static bool
apns_build(json_t *message, ApnsMessage *m, char **err)
{
	json_t	   *payload = NULL;
	json_t	   *aps = NULL;
	json_t	   *alert = NULL;
	json_t	   *v;
	json_t	   *data;
	json_t	   *extra;
	const char *title;
	const char *subtitle;
	const char *body;
	const char *s;
	const char *key;
	bool		content_available;

	memset(m, 0, sizeof(*m));
	*err = NULL;

	if (!json_is_object(message))
	{
		*err = strdup("push message must be a JSON object");
		return false;
	}

	payload = json_object();
	aps = json_object();
	alert = json_object();
	if (payload == NULL || aps == NULL || alert == NULL)
		goto oom;
	if (json_object_set(payload, "aps", aps) != 0)
		goto oom;

	if (!notify_msg_str(message, "title", &title, err) ||
		!notify_msg_str(message, "subtitle", &subtitle, err) ||
		!notify_msg_str(message, "body", &body, err))
		goto fail;
	if (title && json_object_set_new(alert, "title", json_string(title)) != 0)
		goto oom;
	if (subtitle &&
		json_object_set_new(alert, "subtitle", json_string(subtitle)) != 0)
		goto oom;
	if (body && json_object_set_new(alert, "body", json_string(body)) != 0)
		goto oom;
	if (json_object_size(alert) > 0 &&
		json_object_set(aps, "alert", alert) != 0)
		goto oom;

	v = json_object_get(message, "badge");
	if (json_is_integer(v))
	{
		if (json_integer_value(v) < 0)
		{
			*err = strdup("push message field \"badge\" must not be negative");
			goto fail;
		}
		if (json_object_set(aps, "badge", v) != 0)
			goto oom;
	}
	else if (json_is_string(v) && json_string_length(v) > 0)
	{
		char	   *end;
		long		n;

		s = json_string_value(v);
		n = strtol(s, &end, 10);
		if (*end != '\0' || n < 0 || !isdigit((unsigned char) s[0]))
		{
			*err = strdup("push message field \"badge\" must be an integer");
			goto fail;
		}
		if (json_object_set_new(aps, "badge", json_integer(n)) != 0)
			goto oom;
	}
	else if (v != NULL && !json_is_null(v) && !json_is_string(v))
	{
		*err = strdup("push message field \"badge\" must be an integer");
		goto fail;
	}

	/* sound: a name, or a dictionary (critical alerts) */
	v = json_object_get(message, "sound");
	if (json_is_object(v))
	{
		if (json_object_set(aps, "sound", v) != 0)
			goto oom;
	}
	else
	{
		if (!notify_msg_str(message, "sound", &s, err))
			goto fail;
		if (s && json_object_set_new(aps, "sound", json_string(s)) != 0)
			goto oom;
	}

	if (!notify_msg_str(message, "thread_id", &s, err))
		goto fail;
	if (s && json_object_set_new(aps, "thread-id", json_string(s)) != 0)
		goto oom;
	if (!notify_msg_str(message, "category", &s, err))
		goto fail;
	if (s && json_object_set_new(aps, "category", json_string(s)) != 0)
		goto oom;
	if (notify_msg_flag(message, "mutable_content") &&
		json_object_set_new(aps, "mutable-content", json_integer(1)) != 0)
		goto oom;
	content_available = notify_msg_flag(message, "content_available");
	if (content_available &&
		json_object_set_new(aps, "content-available", json_integer(1)) != 0)
		goto oom;

	if (!notify_msg_str(message, "collapse_id", &s, err))
		goto fail;
	if (s)
	{
		if (strlen(s) > APNS_COLLAPSE_ID_MAX)
		{
			*err = notify_strdupf("collapse_id is longer than %d bytes",
								  APNS_COLLAPSE_ID_MAX);
			goto fail;
		}
		snprintf(m->collapse_id, sizeof(m->collapse_id), "%s", s);
	}

	/* message.apns: extra aps keys, and header overrides */
	extra = json_object_get(message, "apns");
	if (extra != NULL && !json_is_null(extra))
	{
		if (!json_is_object(extra))
		{
			*err = strdup("push message field \"apns\" must be an object");
			goto fail;
		}
		json_object_foreach(extra, key, v)
		{
			if (strcmp(key, "headers") == 0)
			{
				const char *hname;
				json_t	   *hv;

				if (!json_is_object(v))
				{
					*err = strdup("apns.headers must be an object");
					goto fail;
				}
				json_object_foreach(v, hname, hv)
				{
					if (!apns_header_override(m, hname, hv, err))
						goto fail;
				}
			}
			else if (strcmp(key, "aps") == 0 && json_is_object(v))
			{
				if (json_object_update(aps, v) != 0)
					goto oom;
			}
			else if (json_object_set(aps, key, v) != 0)
				goto oom;
		}
	}

	/* custom data: top-level keys beside aps */
	data = json_object_get(message, "data");
	if (data != NULL && !json_is_null(data))
	{
		if (!json_is_object(data))
		{
			*err = strdup("push message field \"data\" must be an object");
			goto fail;
		}
		json_object_foreach(data, key, v)
		{
			if (strcmp(key, "aps") == 0)
			{
				*err = strdup("push message data key \"aps\" is reserved");
				goto fail;
			}
			if (json_object_set(payload, key, v) != 0)
				goto oom;
		}
	}

	if (json_object_size(aps) == 0)
	{
		*err = strdup("push message needs a title or body (or content_available)");
		goto fail;
	}
	m->background = json_object_get(aps, "content-available") != NULL &&
		json_object_get(aps, "alert") == NULL &&
		json_object_get(aps, "badge") == NULL &&
		json_object_get(aps, "sound") == NULL;

	json_decref(alert);
	json_decref(aps);
	m->payload = payload;
	return true;

oom:
	free(*err);
	*err = strdup("out of memory");
fail:
	json_decref(alert);
	json_decref(aps);
	json_decref(payload);
	return false;
}

/* Encoded payload (malloc'd, compact JSON) or NULL with *err. */
static char *
apns_encode(json_t *message, ApnsMessage *m, char **err)
{
	char	   *text;

	if (!apns_build(message, m, err))
		return NULL;
	text = json_dumps(m->payload, JSON_COMPACT);
	json_decref(m->payload);
	m->payload = NULL;
	if (text == NULL)
		*err = strdup("could not encode the APNS payload");
	return text;
}

static long
apns_payload_size(json_t *message, long *limit, char **err)
{
	ApnsMessage m;
	char	   *text;
	long		len;

	*limit = APNS_PAYLOAD_LIMIT;
	text = apns_encode(message, &m, err);
	if (text == NULL)
		return -1;
	len = (long) strlen(text);
	free(text);
	return len;
}

/* ----------------------------------------------------------------
 * configuration and state
 * ----------------------------------------------------------------
 */

/* Parse and check the key; NULL and *err (no key material) on failure. */
static EVP_PKEY *
apns_load_key(json_t *config, char **err)
{
	char		errbuf[NOTIFY_ERRBUF];
	unsigned char pub[65];
	EVP_PKEY   *key;

	key = notify_load_private_key(notify_json_string(config, "key"), errbuf);
	if (key == NULL)
	{
		*err = notify_strdupf("apns \"key\" is not a usable .p8 key (%s)",
							  errbuf);
		return NULL;
	}
	if (!notify_ec_public_raw(key, pub, errbuf))
	{
		EVP_PKEY_free(key);
		*err = strdup("apns \"key\" must be a P-256 (ES256) key");
		return NULL;
	}
	return key;
}

static char *
apns_check_config(json_t *config)
{
	static const char *const required[] = {"team_id", "key_id", "key", "topic", NULL};
	json_t	   *v;
	const char *s;
	char	   *err = NULL;
	EVP_PKEY   *key;
	int			i;

	if (!json_is_object(config))
		return strdup("apns config must be a JSON object");

	for (i = 0; required[i]; i++)
	{
		s = notify_json_string(config, required[i]);
		if (s == NULL || s[0] == '\0')
			return notify_strdupf("apns config needs \"%s\" (a non-empty string)",
								  required[i]);
	}

	v = json_object_get(config, "sandbox");
	if (v != NULL && !json_is_boolean(v) && !json_is_null(v))
		return strdup("apns \"sandbox\" must be true or false");

	v = json_object_get(config, "push_type");
	if (v != NULL && !json_is_null(v))
	{
		s = json_is_string(v) ? json_string_value(v) : "";
		for (i = 0; apns_push_types[i]; i++)
			if (strcmp(s, apns_push_types[i]) == 0)
				break;
		if (apns_push_types[i] == NULL)
			return strdup("apns \"push_type\" must be one of alert, background, location, voip, complication, fileprovider, mdm, liveactivity, pushtotalk");
	}

	v = json_object_get(config, "endpoint");
	if (v != NULL && !json_is_null(v))
	{
		s = json_is_string(v) ? json_string_value(v) : "";
		if (strncmp(s, "https://", 8) != 0 && strncmp(s, "http://", 7) != 0)
			return strdup("apns \"endpoint\" must be an http:// or https:// URL");
	}

	v = json_object_get(config, "ca_file");
	if (v != NULL && !json_is_null(v) && !json_is_string(v))
		return strdup("apns \"ca_file\" must be a string");

	v = json_object_get(config, "token_refresh_s");
	if (v != NULL && !json_is_null(v) && !json_is_integer(v))
		return strdup("apns \"token_refresh_s\" must be an integer (seconds)");

	key = apns_load_key(config, &err);
	if (key == NULL)
		return err;
	EVP_PKEY_free(key);
	return NULL;
}

static void
apns_destroy(void *state)
{
	ApnsState  *st = state;

	if (st == NULL)
		return;
	if (st->jwt)
	{
		memset(st->jwt, 0, strlen(st->jwt));
		free(st->jwt);
	}
	EVP_PKEY_free(st->key);
	free(st->team_id);
	free(st->key_id);
	free(st->topic);
	free(st->device_url);
	free(st->push_type);
	json_decref(st->config);
	free(st);
}

static void *
apns_create(json_t *config, char **err)
{
	ApnsState  *st;
	const char *endpoint;
	json_t	   *v;

	*err = apns_check_config(config);
	if (*err != NULL)
		return NULL;

	st = calloc(1, sizeof(ApnsState));
	if (st == NULL)
	{
		*err = strdup("out of memory");
		return NULL;
	}
	st->config = json_incref(config);
	st->key = apns_load_key(config, err);
	if (st->key == NULL)
	{
		apns_destroy(st);
		return NULL;
	}

	endpoint = notify_json_string(config, "endpoint");
	if (endpoint == NULL)
		endpoint = json_is_true(json_object_get(config, "sandbox")) ?
			APNS_SANDBOX_ENDPOINT : APNS_ENDPOINT;
	st->team_id = strdup(notify_json_string(config, "team_id"));
	st->key_id = strdup(notify_json_string(config, "key_id"));
	st->topic = strdup(notify_json_string(config, "topic"));
	st->device_url = notify_endpoint_url(endpoint, "/3/device/");
	st->push_type = strdup(notify_json_string(config, "push_type") ?
						   notify_json_string(config, "push_type") : "alert");
	if (!st->team_id || !st->key_id || !st->topic || !st->device_url ||
		!st->push_type)
	{
		apns_destroy(st);
		*err = strdup("out of memory");
		return NULL;
	}

	st->refresh_s = APNS_TOKEN_REFRESH_S;
	v = json_object_get(config, "token_refresh_s");
	if (json_is_integer(v))
	{
		json_int_t	r = json_integer_value(v);

		if (r < APNS_TOKEN_MIN_AGE_S)
			r = APNS_TOKEN_MIN_AGE_S;
		if (r > APNS_TOKEN_MAX_AGE_S)
			r = APNS_TOKEN_MAX_AGE_S;
		st->refresh_s = (int) r;
	}
	return st;
}

/* ----------------------------------------------------------------
 * provider token
 * ----------------------------------------------------------------
 */

/* True when the next request needs a token we do not have yet. */
static bool
apns_token_due(ApnsState *st, time_t now)
{
	if (st->jwt == NULL || st->jwt_stale)
		return true;
	/* a clock that went backwards also calls for a fresh token */
	return now - st->jwt_iat >= st->refresh_s || now < st->jwt_iat;
}

/* Make sure st->jwt is usable now; false with errbuf when it cannot be. */
static bool
apns_token(ApnsState *st, time_t now, char *errbuf)
{
	json_t	   *header;
	json_t	   *claims;
	char	   *htext = NULL;
	char	   *ctext = NULL;
	char	   *jwt = NULL;
	bool		forced;

	if (!apns_token_due(st, now))
		return true;
	forced = st->jwt != NULL && st->jwt_stale;

	header = json_pack("{s:s, s:s}", "alg", "ES256", "kid", st->key_id);
	claims = json_pack("{s:s, s:I}", "iss", st->team_id, "iat", (json_int_t) now);
	if (header && claims)
	{
		htext = json_dumps(header, JSON_COMPACT);
		ctext = json_dumps(claims, JSON_COMPACT);
	}
	if (htext && ctext)
		jwt = notify_jwt_sign(st->key, "ES256", htext, ctext, errbuf);
	else
		snprintf(errbuf, NOTIFY_ERRBUF, "out of memory");
	free(htext);
	free(ctext);
	json_decref(header);
	json_decref(claims);
	if (jwt == NULL)
		return false;

	if (st->jwt)
	{
		memset(st->jwt, 0, strlen(st->jwt));
		free(st->jwt);
	}
	st->jwt = jwt;
	st->jwt_iat = now;
	st->jwt_gen++;
	st->jwt_stale = false;
	st->jwt_forced = forced;
	st->jwt_ok = false;
	st->warm = false;
	return true;
}

/*
 * APNS rejected the token of generation gen.  Returns true when a new
 * token will be used for the retry (so it may go at once).
 */
static bool
apns_token_rejected(ApnsState *st, uint64_t gen, time_t now)
{
	if (st->jwt == NULL || gen != st->jwt_gen)
		return true;			/* already replaced since */
	if (st->jwt_stale)
		return true;			/* an earlier answer in this storm did it */
	if (st->jwt_forced && !st->jwt_ok &&
		now - st->jwt_iat < APNS_TOKEN_MIN_AGE_S && now >= st->jwt_iat)
		return false;			/* re-minting again would not help */
	st->jwt_stale = true;
	st->warm = false;
	return true;
}

/* ----------------------------------------------------------------
 * one delivery
 * ----------------------------------------------------------------
 */

static bool
apns_prepare(void *state, NotifyDelivery *d)
{
	ApnsState  *st = state;
	ApnsMessage m;
	char	   *err = NULL;
	char	   *body;
	size_t		body_len;
	char	   *url;
	size_t		url_len;
	char		errbuf[NOTIFY_ERRBUF];
	char		apns_id[37];
	const char *push_type;
	const char *priority;
	long long	expiration = 0;
	time_t		now = time(NULL);
	size_t		i;
	size_t		off;
	bool		ok;

	if (!valid_device_token(d->destination))
	{
		notify_set_error(d, NOTIFY_OUTCOME_FAILED,
						 "apns BadDeviceToken: device token is not 64+ hex digits");
		d->deactivate_device = true;
		return false;
	}

	body = apns_encode(d->message, &m, &err);
	if (body == NULL)
	{
		notify_set_error(d, NOTIFY_OUTCOME_FAILED, "apns %s",
						 err ? err : "out of memory");
		free(err);
		return false;
	}
	body_len = strlen(body);
	if (body_len > APNS_PAYLOAD_LIMIT)
	{
		free(body);
		notify_set_error(d, NOTIFY_OUTCOME_FAILED,
						 "apns PayloadTooLarge: payload is %zu bytes, limit %d",
						 body_len, APNS_PAYLOAD_LIMIT);
		return false;
	}
	d->body = body;
	d->body_len = body_len;

	if (!apns_token(st, now, errbuf))
	{
		notify_set_error(d, NOTIFY_OUTCOME_RETRY,
						 "apns could not sign the provider token: %s", errbuf);
		return false;
	}

	/* push type and priority */
	if (m.push_type[0])
		push_type = m.push_type;
	else if (m.background)
		push_type = "background";
	else
		push_type = st->push_type;
	if (m.priority[0])
		priority = m.priority;
	else if (strcmp(push_type, "background") == 0 || d->priority < 0)
		priority = "5";
	else
		priority = "10";

	/* expiration: the delivery's, else now + the message's ttl, else 0 */
	if (d->expires_at > 0)
		expiration = (long long) d->expires_at;
	else
	{
		json_t	   *ttl = json_object_get(d->message, "ttl");

		if (json_is_integer(ttl) && json_integer_value(ttl) > 0)
			expiration = (long long) now + json_integer_value(ttl);
	}

	/* URL: endpoint/3/device/<token, lower case> */
	url_len = strlen(st->device_url) + strlen(d->destination) + 1;
	url = malloc(url_len);
	if (url == NULL)
	{
		notify_set_error(d, NOTIFY_OUTCOME_RETRY, "apns out of memory");
		return false;
	}
	off = (size_t) snprintf(url, url_len, "%s", st->device_url);
	for (i = 0; d->destination[i]; i++)
		url[off + i] = (char) tolower((unsigned char) d->destination[i]);
	url[off + i] = '\0';

	notify_uuid_for_id(d->id, apns_id);

	ok = notify_add_header(&d->headers, "authorization: bearer %s", st->jwt) &&
		notify_add_header(&d->headers, "apns-topic: %s", m.topic[0] ? m.topic : st->topic) &&
		notify_add_header(&d->headers, "apns-push-type: %s", push_type) &&
		notify_add_header(&d->headers, "apns-priority: %s", priority) &&
		/*
		 * No expiry: no header, so APNS stores the push for an offline
		 * device; apns-expiration 0 would mean "now or never".
		 */
		(m.expiration[0] ?
		 notify_add_header(&d->headers, "apns-expiration: %s", m.expiration) :
		 expiration == 0 ||
		 notify_add_header(&d->headers, "apns-expiration: %lld", expiration)) &&
		(m.collapse_id[0] == '\0' ||
		 notify_add_header(&d->headers, "apns-collapse-id: %s", m.collapse_id)) &&
		notify_add_header(&d->headers, "apns-id: %s", apns_id) &&
		notify_add_header(&d->headers, "content-type: application/json") &&
		notify_add_header(&d->headers, "Expect:");
	if (!ok)
	{
		free(url);
		notify_set_error(d, NOTIFY_OUTCOME_RETRY, "apns out of memory");
		return false;
	}

	notify_http_common(d->easy, st->config);
	ok = curl_easy_setopt(d->easy, CURLOPT_URL, url) == CURLE_OK &&
		curl_easy_setopt(d->easy, CURLOPT_POST, 1L) == CURLE_OK &&
		curl_easy_setopt(d->easy, CURLOPT_POSTFIELDSIZE_LARGE,
						 (curl_off_t) d->body_len) == CURLE_OK &&
		curl_easy_setopt(d->easy, CURLOPT_POSTFIELDS, d->body) == CURLE_OK &&
		curl_easy_setopt(d->easy, CURLOPT_HTTPHEADER, d->headers) == CURLE_OK;
	free(url);					/* libcurl keeps its own copy of the URL */
	if (!ok)
	{
		notify_set_error(d, NOTIFY_OUTCOME_RETRY, "apns could not set up the request");
		return false;
	}

	/* remember which token this request carries (an integer, not a pointer) */
	d->provider_data = (void *) (uintptr_t) st->jwt_gen;
	return true;
}

/* The "reason" of an APNS error body, reduced to safe characters. */
static void
apns_reason(const NotifyDelivery *d, char *out, size_t outlen)
{
	json_t	   *doc;
	const char *r;
	size_t		i;
	size_t		o = 0;

	doc = notify_buf_json_object(&d->response);
	r = json_string_value(json_object_get(doc, "reason"));
	for (i = 0; r && r[i] && o + 1 < outlen; i++)
		if (isalnum((unsigned char) r[i]) || r[i] == '_' || r[i] == '-' ||
			r[i] == '.')
			out[o++] = r[i];
	out[o] = '\0';
	json_decref(doc);
}

static void
apns_finish(void *state, NotifyDelivery *d, CURLcode rc)
{
	ApnsState  *st = state;
	uint64_t	gen = (uint64_t) (uintptr_t) d->provider_data;
	long		status = d->http_status;
	char		reason[64];
	const char *why;

	if (rc != CURLE_OK)
	{
		/* the engine has marked it RETRY; the connection may be new next */
		st->warm = false;
		return;
	}

	if (status == 200)
	{
		d->outcome = NOTIFY_OUTCOME_SENT;
		d->error[0] = '\0';
		d->retry_after = -1;
		if (!notify_response_header(&d->response_headers, "apns-id",
									d->provider_id, sizeof(d->provider_id)) ||
			d->provider_id[0] == '\0')
		{
			char		id[37];

			notify_uuid_for_id(d->id, id);
			snprintf(d->provider_id, sizeof(d->provider_id), "%s", id);
		}
		if (gen == st->jwt_gen)
		{
			st->jwt_ok = true;
			st->warm = true;
		}
		return;
	}

	/*
	 * A connection opened for this request that did not answer 200 is not
	 * warmed up: the next batch must again start with one stream.
	 */
	{
		long		connects = 0;

		if (d->easy != NULL &&
			curl_easy_getinfo(d->easy, CURLINFO_NUM_CONNECTS, &connects) == CURLE_OK &&
			connects > 0)
			st->warm = false;
	}

	apns_reason(d, reason, sizeof(reason));
	why = reason[0] ? reason : "(no reason)";

	if (status == 410 ||
		(status == 400 && strcmp(reason, "BadDeviceToken") == 0))
	{
		notify_set_error(d, NOTIFY_OUTCOME_FAILED, "apns %ld %s", status, why);
		d->deactivate_device = true;
		return;
	}

	if (status == 403 && (strcmp(reason, "ExpiredProviderToken") == 0 ||
						  strcmp(reason, "InvalidProviderToken") == 0))
	{
		bool		renewed = apns_token_rejected(st, gen, time(NULL));

		notify_set_error(d, NOTIFY_OUTCOME_RETRY, "apns %ld %s", status, why);
		d->retry_after = renewed ? 0 : -1;
		return;
	}

	/* an idle connection closed under the request: nothing wrong with it */
	if (status == 400 && strcmp(reason, "IdleTimeout") == 0)
	{
		st->warm = false;
		notify_set_error(d, NOTIFY_OUTCOME_RETRY, "apns %ld %s", status, why);
		d->retry_after = 0;
		return;
	}

	if (status == 429 || status == 500 || status == 503 ||
		notify_http_status_transient(status))
	{
		notify_set_error(d, NOTIFY_OUTCOME_RETRY, "apns %ld %s", status, why);
		d->retry_after = notify_parse_retry_after(&d->response_headers);
		return;
	}

	if (status == 0)
	{
		notify_set_error(d, NOTIFY_OUTCOME_RETRY, "apns no HTTP status");
		return;
	}

	/*
	 * Everything else is permanent: DeviceTokenNotForTopic, Forbidden,
	 * PayloadTooLarge, BadTopic, MissingTopic, BadCertificate, ...
	 */
	notify_set_error(d, NOTIFY_OUTCOME_FAILED, "apns %ld %s", status, why);
}

static void
apns_release(void *state, NotifyDelivery *d)
{
	/* provider_data holds a token generation, not memory */
	d->provider_data = NULL;
}

static bool
apns_needs_warmup(void *state)
{
	ApnsState  *st = state;

	return !st->warm || apns_token_due(st, time(NULL));
}

/* Keys a apns config may have, besides the common ones (provider.h). */
static const char *const apns_config_keys[] = {
	"team_id", "key_id", "key", "topic", "sandbox", "push_type", "token_refresh_s", NULL
};

const NotifyProviderOps notify_apns_ops = {
	.kind = "apns",
	.channel = "push",
	.secret_keys = apns_secret_keys,
	.config_keys = apns_config_keys,
	.check_config = apns_check_config,
	.payload_size = apns_payload_size,
	.create = apns_create,
	.prepare = apns_prepare,
	.finish = apns_finish,
	.release = apns_release,
	.destroy = apns_destroy,
	.needs_warmup = apns_needs_warmup,
};
