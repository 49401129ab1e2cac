/*-------------------------------------------------------------------------
 *
 * fcm.c
 *	  The "fcm" provider: push to Android (and iOS and web through
 *	  Firebase) with the FCM HTTP v1 API.
 *
 * Request:
 *	 POST <endpoint>/v1/projects/<project_id>/messages:send
 *	 Authorization: Bearer <OAuth2 access token>
 *	 {"message":{"token":...,"notification":{...},"data":{...},
 *	             "android":{...},"apns":{...},"webpush":{...}}}
 *
 * The access token comes from the service account: an RS256 JWT (iss =
 * client_email, scope firebase.messaging, aud = token_uri, one hour) is
 * exchanged at token_uri by a synchronous POST on its own easy handle, in
 * prepare(), about once an hour; the token is cached in the provider state
 * until five minutes before it expires.  A failing token endpoint makes
 * the delivery RETRY, and is not asked again for 30 s so that a batch does
 * not wait for it once per message.
 *
 * Answers: 200 {"name":...} is sent.  Errors are Google JSON errors
 * {"error":{"code","message","status","details":[{"errorCode"}]}}:
 * UNREGISTERED, and INVALID_ARGUMENT about the registration token, fail
 * and deactivate the token; other INVALID_ARGUMENT, SENDER_ID_MISMATCH,
 * THIRD_PARTY_AUTH_ERROR fail; QUOTA_EXCEEDED, UNAVAILABLE, INTERNAL (and
 * 408/429/5xx generally) retry honouring Retry-After; 401 UNAUTHENTICATED
 * drops the cached access token and retries at once.
 *
 * Owns the FCM message format, the service-account token exchange and the
 * classification of FCM answers.  JWT signing is crypto.c's; transfers
 * other than the token exchange are the engine's.
 *
 *-------------------------------------------------------------------------
 */
#include <ctype.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "crypto.h"
#include "provider.h"

#define FCM_ENDPOINT		"https://fcm.googleapis.com"
#define FCM_TOKEN_URI		"https://oauth2.googleapis.com/token"
#define FCM_SCOPE			"https://www.googleapis.com/auth/firebase.messaging"
#define FCM_PAYLOAD_LIMIT	4096

#define ALNUM "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
#define PROJECT_ID_CHARS	ALNUM "-_.:"
#define DEVICE_TOKEN_CHARS	ALNUM "-_:."

/* token exchange: timeouts, early refresh, and back-off after a failure */
#define TOKEN_TIMEOUT_MS	10000L
#define TOKEN_CONNECT_MS	5000L
#define TOKEN_MARGIN		300
#define TOKEN_FAIL_BACKOFF	30

/* Exported for test/unit/test_providers.c; not part of the contract. */
extern json_t *notify_fcm_request(json_t *message, const char *token,
								  int priority, int64_t expires_at,
								  time_t now, char **err);

typedef struct FcmState
{
	json_t	   *config;			/* our reference */
	json_t	   *sa;				/* service account object (our reference) */
	const char *client_email;	/* in sa */
	const char *token_uri;		/* in config or sa, or the default */
	char	   *send_url;
	EVP_PKEY   *key;

	char	   *access_token;	/* NULL when none cached */
	time_t		token_expires;	/* refresh at or after this */
	uintptr_t	token_gen;		/* bumped whenever a token is minted */

	time_t		mint_failed_at; /* 0, or when the last exchange failed */
	char		mint_error[NOTIFY_ERROR_LEN - 64];
} FcmState;

/*
 * "service_account.private_key" is the secret; "service_account" as a
 * whole is listed too because it may be given as one JSON string, where
 * the dotted path cannot reach the key inside it.
 */
static const char *const fcm_secret_keys[] = {
	"service_account.private_key", "service_account", NULL
};

/*
 * The service account as an object (a new reference), whether the config
 * holds an object or the downloaded JSON file's text.  NULL when missing
 * or malformed (the parser's message is not repeated: it could quote the
 * key).
 */
static json_t *
service_account(json_t *config)
{
	json_t	   *v = json_object_get(config, "service_account");

	if (json_is_object(v))
		return json_incref(v);
	if (json_is_string(v))
	{
		json_t	   *sa = json_loads(json_string_value(v), 0, NULL);

		if (json_is_object(sa))
			return sa;
		json_decref(sa);
	}
	return NULL;
}

static const char *
project_id(json_t *config, json_t *sa)
{
	const char *p = notify_json_nonempty(config, "project_id");

	return p ? p : notify_json_nonempty(sa, "project_id");
}

static const char *
token_uri(json_t *config, json_t *sa)
{
	const char *t = notify_json_nonempty(config, "token_uri");

	if (t == NULL)
		t = notify_json_nonempty(sa, "token_uri");
	return t ? t : FCM_TOKEN_URI;
}

static char *
fcm_check_config(json_t *config)
{
	json_t	   *sa;
	const char *pid;
	const char *s;
	char		errbuf[NOTIFY_ERRBUF];
	EVP_PKEY   *key;
	char	   *problem = NULL;

	if (!json_is_object(config))
		return strdup("fcm config must be a JSON object");
	sa = service_account(config);
	if (sa == NULL)
		return strdup("fcm config needs \"service_account\": the service account JSON (an object, or its text)");

	if (notify_json_nonempty(sa, "client_email") == NULL)
		problem = strdup("fcm \"service_account\" has no \"client_email\"");
	else if (notify_json_nonempty(sa, "private_key") == NULL)
		problem = strdup("fcm \"service_account\" has no \"private_key\"");
	else if ((pid = project_id(config, sa)) == NULL)
		problem = strdup("fcm config needs \"project_id\" (in \"service_account\" or beside it)");
	else if (strspn(pid, PROJECT_ID_CHARS) != strlen(pid))
		problem = strdup("fcm \"project_id\" has characters a project id cannot have");
	else if (!notify_is_http_url(token_uri(config, sa)))
		problem = strdup("fcm \"token_uri\" must be an http:// or https:// URL");
	else if ((s = notify_json_nonempty(config, "endpoint")) != NULL &&
			 !notify_is_http_url(s))
		problem = strdup("fcm \"endpoint\" must be an http:// or https:// URL");
	else if (json_object_get(config, "ca_file") != NULL &&
			 !json_is_string(json_object_get(config, "ca_file")))
		problem = strdup("fcm \"ca_file\" must be a string");
	else
	{
		key = notify_load_private_key(notify_json_nonempty(sa, "private_key"),
									  errbuf);
		if (key == NULL)
			problem = strdup("fcm \"service_account\".\"private_key\" is not a usable PEM private key");
		EVP_PKEY_free(key);
	}
	json_decref(sa);
	return problem;
}

static void
fcm_destroy(void *arg)
{
	FcmState   *st = (FcmState *) arg;

	if (st == NULL)
		return;
	free(st->send_url);
	free(st->access_token);
	EVP_PKEY_free(st->key);
	json_decref(st->sa);
	json_decref(st->config);
	free(st);
}

static void *
fcm_create(json_t *config, char **err)
{
	FcmState   *st;
	const char *endpoint;
	char		errbuf[NOTIFY_ERRBUF];

	*err = fcm_check_config(config);
	if (*err != NULL)
		return NULL;
	st = calloc(1, sizeof(FcmState));
	if (st == NULL)
	{
		*err = strdup("out of memory");
		return NULL;
	}
	st->config = json_incref(config);
	st->sa = service_account(config);
	if (st->sa == NULL)
	{
		fcm_destroy(st);
		*err = strdup("out of memory");
		return NULL;
	}
	st->client_email = notify_json_nonempty(st->sa, "client_email");
	st->token_uri = token_uri(config, st->sa);
	st->key = notify_load_private_key(notify_json_nonempty(st->sa, "private_key"),
									  errbuf);
	if (st->key == NULL)
	{
		fcm_destroy(st);
		*err = strdup("fcm \"service_account\".\"private_key\" is not a usable PEM private key");
		return NULL;
	}

	endpoint = notify_json_nonempty(config, "endpoint");
	if (endpoint == NULL)
		endpoint = FCM_ENDPOINT;
	st->send_url = notify_endpoint_url(endpoint,
									   "/v1/projects/%s/messages:send",
									   project_id(config, st->sa));
	if (st->send_url == NULL)
	{
		fcm_destroy(st);
		*err = strdup("out of memory");
		return NULL;
	}
	return st;
}

/* ---------------------------------------------------------------------
 * The message
 * ---------------------------------------------------------------------
 */

/* Copy src[key] into dst[dstkey] when it is a non-empty string. */
static void
copy_string(json_t *dst, const char *dstkey, json_t *src, const char *key)
{
	const char *s = notify_json_nonempty(src, key);

	if (s != NULL)
		json_object_set_new(dst, dstkey, json_string(s));
}

/* Set key to a new value only if the object is non-empty; else drop it. */
static void
set_if_nonempty(json_t *dst, const char *key, json_t *obj)
{
	if (json_object_size(obj) > 0)
		json_object_set_new(dst, key, obj);
	else
		json_decref(obj);
}

static bool
reserved_data_key(const char *k)
{
	return strcmp(k, "from") == 0 || strcmp(k, "message_type") == 0 ||
		strcmp(k, "notification") == 0 ||
		strncasecmp(k, "google", 6) == 0 || strncasecmp(k, "gcm", 3) == 0;
}

/*
 * FCM data is string -> string: strings stay, everything else becomes its
 * JSON text ({"n":1} -> "1", true -> "true", objects -> compact JSON).
 */
static json_t *
stringify_data(json_t *data, char **err)
{
	json_t	   *out = json_object();
	const char *k;
	json_t	   *v;

	json_object_foreach(data, k, v)
	{
		if (reserved_data_key(k))
		{
			char		msg[200];

			snprintf(msg, sizeof(msg),
					 "push \"data\" key \"%.100s\" is reserved by FCM", k);
			*err = strdup(msg);
			json_decref(out);
			return NULL;
		}
		if (json_is_string(v))
			json_object_set_new(out, k, json_string(json_string_value(v)));
		else
		{
			char	   *text = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);

			if (text == NULL)
			{
				*err = strdup("push \"data\" cannot be encoded");
				json_decref(out);
				return NULL;
			}
			json_object_set_new(out, k, json_string(text));
			free(text);
		}
	}
	return out;
}

/* Merge a copy of template's extra object (message.android, ...) in. */
static void
merge_extra(json_t *msg, const char *key, json_t *extra)
{
	json_t	   *copy;
	json_t	   *target;

	if (!json_is_object(extra))
		return;
	copy = json_deep_copy(extra);
	target = json_object_get(msg, key);
	if (target == NULL)
		json_object_set_new(msg, key, copy);
	else
	{
		json_object_update_recursive(target, copy);
		json_decref(copy);
	}
}

/*
 * The request body {"message":{...}} for one rendered push message (see
 * MESSAGES.md).  token may be NULL (to measure the payload).  Returns a
 * new reference, or NULL with *err (malloc'd).
 */
json_t *
notify_fcm_request(json_t *message, const char *token, int priority,
				   int64_t expires_at, time_t now, char **err)
{
	json_t	   *msg;
	json_t	   *notification;
	json_t	   *android;
	json_t	   *anotif;
	json_t	   *apns;
	json_t	   *apns_headers;
	json_t	   *aps;
	json_t	   *webpush;
	json_t	   *wp_headers;
	json_t	   *data;
	json_t	   *v;
	bool		visible;
	bool		background;
	long long	ttl = -1;
	const char *collapse;
	const char *image;
	const char *url;
	char		num[32];

	*err = NULL;
	if (!json_is_object(message))
	{
		*err = strdup("push message must be a JSON object");
		return NULL;
	}
	visible = notify_json_nonempty(message, "title") != NULL ||
		notify_json_nonempty(message, "body") != NULL;
	background = json_is_true(json_object_get(message, "content_available"));
	if (!visible && !background)
	{
		*err = strdup("push message needs \"title\" or \"body\" (or \"content_available\": true)");
		return NULL;
	}
	if (expires_at > 0)
		ttl = expires_at > now ? (long long) (expires_at - now) : 0;
	else if (json_is_integer(json_object_get(message, "ttl")) &&
			 json_integer_value(json_object_get(message, "ttl")) >= 0)
		ttl = (long long) json_integer_value(json_object_get(message, "ttl"));
	collapse = notify_json_nonempty(message, "collapse_id");
	image = notify_json_nonempty(message, "image");
	url = notify_json_nonempty(message, "url");

	msg = json_object();
	if (token != NULL)
		json_object_set_new(msg, "token", json_string(token));

	/* notification: what every platform shows */
	notification = json_object();
	copy_string(notification, "title", message, "title");
	copy_string(notification, "body", message, "body");
	if (visible)
		copy_string(notification, "image", message, "image");
	set_if_nonempty(msg, "notification", notification);

	/* data: strings only */
	v = json_object_get(message, "data");
	if (v != NULL && !json_is_null(v))
	{
		if (!json_is_object(v))
		{
			*err = strdup("push \"data\" must be an object");
			json_decref(msg);
			return NULL;
		}
		data = stringify_data(v, err);
		if (data == NULL)
		{
			json_decref(msg);
			return NULL;
		}
		set_if_nonempty(msg, "data", data);
	}

	/* android */
	android = json_object();
	json_object_set_new(android, "priority",
						json_string((visible && priority >= 0) || priority > 0 ?
									"high" : "normal"));
	if (ttl >= 0)
	{
		snprintf(num, sizeof(num), "%llds", ttl);
		json_object_set_new(android, "ttl", json_string(num));
	}
	if (collapse != NULL)
		json_object_set_new(android, "collapse_key", json_string(collapse));
	if (visible)
	{
		anotif = json_object();
		copy_string(anotif, "sound", message, "sound");
		if (collapse != NULL)
			json_object_set_new(anotif, "tag", json_string(collapse));
		set_if_nonempty(android, "notification", anotif);
	}
	json_object_set_new(msg, "android", android);

	/* apns: headers and the aps dictionary */
	apns = json_object();
	apns_headers = json_object();
	json_object_set_new(apns_headers, "apns-priority",
						json_string(visible && priority >= 0 ? "10" : "5"));
	if (!visible)
		json_object_set_new(apns_headers, "apns-push-type",
							json_string("background"));
	if (collapse != NULL)
		json_object_set_new(apns_headers, "apns-collapse-id",
							json_string(collapse));
	if (expires_at > 0)
	{
		snprintf(num, sizeof(num), "%lld", (long long) expires_at);
		json_object_set_new(apns_headers, "apns-expiration", json_string(num));
	}
	json_object_set_new(apns, "headers", apns_headers);

	aps = json_object();
	if (notify_json_nonempty(message, "subtitle") != NULL && visible)
	{
		json_t	   *alert = json_object();

		copy_string(alert, "title", message, "title");
		copy_string(alert, "subtitle", message, "subtitle");
		copy_string(alert, "body", message, "body");
		json_object_set_new(aps, "alert", alert);
	}
	if (visible)
		copy_string(aps, "sound", message, "sound");
	v = json_object_get(message, "badge");
	if (json_is_integer(v))
		json_object_set_new(aps, "badge", json_integer(json_integer_value(v)));
	copy_string(aps, "category", message, "category");
	copy_string(aps, "thread-id", message, "thread_id");
	if (json_is_true(json_object_get(message, "mutable_content")) ||
		(image != NULL && visible))
		json_object_set_new(aps, "mutable-content", json_integer(1));
	if (background)
		json_object_set_new(aps, "content-available", json_integer(1));
	if (json_object_size(aps) > 0)
	{
		json_t	   *payload = json_object();

		json_object_set_new(payload, "aps", aps);
		json_object_set_new(apns, "payload", payload);
	}
	else
		json_decref(aps);
	if (image != NULL && visible)
	{
		json_t	   *opts = json_object();

		json_object_set_new(opts, "image", json_string(image));
		json_object_set_new(apns, "fcm_options", opts);
	}
	json_object_set_new(msg, "apns", apns);

	/* webpush */
	webpush = json_object();
	wp_headers = json_object();
	if (ttl >= 0)
	{
		snprintf(num, sizeof(num), "%lld", ttl);
		json_object_set_new(wp_headers, "TTL", json_string(num));
	}
	json_object_set_new(wp_headers, "Urgency",
						json_string(priority > 0 ? "high" :
									priority < 0 ? "low" : "normal"));
	json_object_set_new(webpush, "headers", wp_headers);
	if (url != NULL && strncasecmp(url, "https://", 8) == 0)
	{
		json_t	   *opts = json_object();

		json_object_set_new(opts, "link", json_string(url));
		json_object_set_new(webpush, "fcm_options", opts);
	}
	json_object_set_new(msg, "webpush", webpush);

	/* the template's own platform settings win */
	merge_extra(msg, "android", json_object_get(message, "android"));
	merge_extra(msg, "apns", json_object_get(message, "apns"));
	merge_extra(msg, "webpush", json_object_get(message, "webpush"));

	v = json_object();
	json_object_set_new(v, "message", msg);
	return v;
}

/*
 * Size of the message as sent, without the device token (not known when
 * a message is checked; FCM's 4096-byte limit is on the payload).
 */
static long
fcm_payload_size(json_t *message, long *limit, char **err)
{
	json_t	   *req = notify_fcm_request(message, NULL, 0, 0, time(NULL), err);
	char	   *text;
	long		size;

	*limit = FCM_PAYLOAD_LIMIT;
	if (req == NULL)
		return -1;
	text = json_dumps(req, JSON_COMPACT);
	json_decref(req);
	if (text == NULL)
	{
		*err = strdup("push message cannot be encoded");
		return -1;
	}
	size = (long) strlen(text);
	free(text);
	return size;
}

/* ---------------------------------------------------------------------
 * The access token
 * ---------------------------------------------------------------------
 */

/*
 * Exchange a fresh service-account JWT for an access token.  Returns
 * true with st->access_token set, or false with err filled in (never
 * quoting the JWT, the key or the token).
 */
static bool
mint_token(FcmState *st, char *err, size_t errlen)
{
	time_t		now = time(NULL);
	json_t	   *hdr = NULL;
	json_t	   *claims = NULL;
	char	   *hdr_text = NULL;
	char	   *claims_text = NULL;
	char	   *jwt = NULL;
	char	   *form = NULL;
	CURL	   *easy = NULL;
	struct curl_slist *headers = NULL;
	NotifyBuf	response = {0};
	char		curl_err[CURL_ERROR_SIZE] = "";
	char		errbuf[NOTIFY_ERRBUF] = "";
	json_t	   *answer = NULL;
	CURLcode	rc;
	long		status = 0;
	bool		ok = false;

	hdr = json_pack("{s:s, s:s}", "alg", "RS256", "typ", "JWT");
	claims = json_pack("{s:s, s:s, s:s, s:I, s:I}",
					   "iss", st->client_email,
					   "scope", FCM_SCOPE,
					   "aud", st->token_uri,
					   "iat", (json_int_t) now,
					   "exp", (json_int_t) now + 3600);
	if (hdr != NULL && claims != NULL)
	{
		hdr_text = json_dumps(hdr, JSON_COMPACT);
		claims_text = json_dumps(claims, JSON_COMPACT);
	}
	if (hdr_text == NULL || claims_text == NULL)
	{
		snprintf(err, errlen, "out of memory");
		goto done;
	}
	jwt = notify_jwt_sign(st->key, "RS256", hdr_text, claims_text, errbuf);
	if (jwt == NULL)
	{
		snprintf(err, errlen, "cannot sign the JWT: %s", errbuf);
		goto done;
	}

	{
		static const char prefix[] =
			"grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer&assertion=";
		size_t		len = sizeof(prefix) + strlen(jwt);

		/* a JWT is base64url and dots: nothing to escape */
		form = malloc(len);
		if (form == NULL)
		{
			snprintf(err, errlen, "out of memory");
			goto done;
		}
		snprintf(form, len, "%s%s", prefix, jwt);
	}

	easy = curl_easy_init();
	if (easy == NULL ||
		!notify_add_header(&headers, "Content-Type: application/x-www-form-urlencoded") ||
		!notify_add_header(&headers, "Accept: application/json") ||
		!notify_add_header(&headers, "Expect:"))
	{
		snprintf(err, errlen, "out of memory");
		goto done;
	}
	notify_http_post(easy, st->token_uri, form, strlen(form), headers,
					 st->config);
	curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, notify_buf_write_cb);
	curl_easy_setopt(easy, CURLOPT_WRITEDATA, (void *) &response);
	curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, curl_err);
	curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, TOKEN_TIMEOUT_MS);
	curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT_MS, TOKEN_CONNECT_MS);
	curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);

	rc = curl_easy_perform(easy);
	if (rc != CURLE_OK)
	{
		snprintf(err, errlen, "curl: %s%s%s%s", curl_easy_strerror(rc),
				 curl_err[0] ? " (" : "", curl_err, curl_err[0] ? ")" : "");
		goto done;
	}
	curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &status);
	answer = notify_buf_json_object(&response);

	if (status == 200 && notify_json_nonempty(answer, "access_token") != NULL)
	{
		json_t	   *exp = json_object_get(answer, "expires_in");
		long long	expires_in = 3600;
		char	   *token = strdup(notify_json_nonempty(answer, "access_token"));

		if (token == NULL)
		{
			snprintf(err, errlen, "out of memory");
			goto done;
		}
		if (json_is_integer(exp))
			expires_in = json_integer_value(exp);
		else if (json_is_string(exp))
			expires_in = strtoll(json_string_value(exp), NULL, 10);
		if (expires_in <= 0)
			expires_in = 60;
		free(st->access_token);
		st->access_token = token;
		st->token_expires = now + (expires_in > 2 * TOKEN_MARGIN ?
								   expires_in - TOKEN_MARGIN : expires_in / 2);
		st->token_gen++;
		ok = true;
	}
	else
	{
		/* OAuth errors: {"error":"invalid_grant","error_description":...} */
		const char *e = notify_json_nonempty(answer, "error");
		const char *desc = notify_json_nonempty(answer, "error_description");
		char		text[201];

		if (e == NULL && json_is_object(json_object_get(answer, "error")))
		{
			/* Google JSON error shape */
			e = notify_json_nonempty(json_object_get(answer, "error"), "status");
			desc = notify_json_nonempty(json_object_get(answer, "error"),
										"message");
		}
		if (e != NULL)
		{
			char		etext[100];

			notify_printable_copy(etext, sizeof(etext), e, strlen(e));
			notify_printable_copy(text, sizeof(text), desc ? desc : "",
								  desc ? strlen(desc) : 0);
			snprintf(err, errlen, "HTTP %ld %s%s%s", status, etext,
					 text[0] ? ": " : "", text);
		}
		else
		{
			notify_response_snippet(text, sizeof(text), &response);
			snprintf(err, errlen, "HTTP %ld%s%s", status, text[0] ? ": " : "",
					 text);
		}
	}

done:
	json_decref(answer);
	notify_buf_free(&response);
	curl_slist_free_all(headers);
	if (easy != NULL)
		curl_easy_cleanup(easy);
	free(form);
	free(jwt);
	free(hdr_text);
	free(claims_text);
	json_decref(hdr);
	json_decref(claims);
	return ok;
}

/* A current access token, minting one when needed; NULL with err. */
static const char *
access_token(FcmState *st, char *err, size_t errlen)
{
	time_t		now = time(NULL);

	if (st->access_token != NULL && now < st->token_expires)
		return st->access_token;
	if (st->mint_failed_at != 0 && now - st->mint_failed_at < TOKEN_FAIL_BACKOFF &&
		now >= st->mint_failed_at)
	{
		snprintf(err, errlen, "%s", st->mint_error);
		return NULL;
	}
	if (!mint_token(st, err, errlen))
	{
		st->mint_failed_at = now;
		snprintf(st->mint_error, sizeof(st->mint_error), "%s", err);
		return NULL;
	}
	st->mint_failed_at = 0;
	return st->access_token;
}

/* ---------------------------------------------------------------------
 * One delivery
 * ---------------------------------------------------------------------
 */

static bool
valid_token(const char *t)
{
	size_t		len;

	if (t == NULL)
		return false;
	len = strlen(t);
	return len > 0 && len <= 4096 &&
		strspn(t, DEVICE_TOKEN_CHARS) == len;
}

static bool
fcm_prepare(void *arg, NotifyDelivery *d)
{
	FcmState   *st = (FcmState *) arg;
	const char *token;
	json_t	   *req;
	char	   *err = NULL;
	char		why[NOTIFY_ERROR_LEN - 64];

	if (!valid_token(d->destination))
	{
		notify_set_error(d, NOTIFY_OUTCOME_FAILED,
						 "fcm: destination is not an FCM registration token");
		d->deactivate_device = true;
		return false;
	}
	req = notify_fcm_request(d->message, d->destination, d->priority,
							 d->expires_at, time(NULL), &err);
	if (req == NULL)
	{
		notify_set_error(d, NOTIFY_OUTCOME_FAILED, "fcm: %s",
						 err ? err : "out of memory");
		free(err);
		return false;
	}
	d->body = json_dumps(req, JSON_COMPACT);
	json_decref(req);
	if (d->body == NULL)
	{
		notify_set_error(d, NOTIFY_OUTCOME_RETRY, "fcm: out of memory");
		return false;
	}
	d->body_len = strlen(d->body);

	token = access_token(st, why, sizeof(why));
	if (token == NULL)
	{
		notify_set_error(d, NOTIFY_OUTCOME_RETRY, "fcm token endpoint: %s", why);
		return false;
	}
	/* remember which token this request carries (see fcm_finish) */
	d->provider_data = (void *) st->token_gen;

	if (!notify_add_header(&d->headers, "Authorization: Bearer %s", token) ||
		!notify_add_header(&d->headers,
						   "Content-Type: application/json; charset=UTF-8") ||
		!notify_add_header(&d->headers, "Expect:"))
	{
		notify_set_error(d, NOTIFY_OUTCOME_RETRY, "fcm: out of memory");
		return false;
	}

	notify_http_post(d->easy, st->send_url, d->body, d->body_len, d->headers,
					 st->config);
	return true;
}

/* strcasestr without _GNU_SOURCE */
static bool
contains_ci(const char *hay, const char *needle)
{
	size_t		n = strlen(needle);

	for (; *hay; hay++)
		if (strncasecmp(hay, needle, n) == 0)
			return true;
	return false;
}

/* Does a Google error say the registration token is at fault? */
static bool
about_token(const char *message, json_t *details)
{
	size_t		i;
	json_t	   *detail;

	if (message != NULL && contains_ci(message, "registration token"))
		return true;
	json_array_foreach(details, i, detail)
	{
		json_t	   *violations = json_object_get(detail, "fieldViolations");
		size_t		j;
		json_t	   *fv;

		json_array_foreach(violations, j, fv)
		{
			const char *field = notify_json_nonempty(fv, "field");

			if (field != NULL && strcmp(field, "message.token") == 0)
				return true;
		}
	}
	return false;
}

static void
fcm_finish(void *arg, NotifyDelivery *d, CURLcode rc)
{
	FcmState   *st = (FcmState *) arg;
	long		status = d->http_status;
	json_t	   *answer;
	json_t	   *error;
	json_t	   *details;
	const char *gstatus;
	const char *gmessage;
	const char *code = NULL;
	char		message[256];
	size_t		i;
	json_t	   *detail;

	if (rc != CURLE_OK)
		return;					/* the engine's RETRY stands */

	answer = notify_buf_json_object(&d->response);

	if (status == 200)
	{
		const char *name = notify_json_nonempty(answer, "name");

		d->outcome = NOTIFY_OUTCOME_SENT;
		d->error[0] = '\0';
		if (name != NULL)
			notify_printable_copy(d->provider_id, sizeof(d->provider_id),
								  name, strlen(name));
		json_decref(answer);
		return;
	}

	error = json_object_get(answer, "error");
	gstatus = notify_json_nonempty(error, "status");
	gmessage = notify_json_nonempty(error, "message");
	details = json_object_get(error, "details");
	json_array_foreach(details, i, detail)
	{
		if (notify_json_nonempty(detail, "errorCode") != NULL)
		{
			code = notify_json_nonempty(detail, "errorCode");
			break;
		}
	}
	if (code == NULL)
		code = gstatus;
	if (gmessage != NULL)
		notify_printable_copy(message, sizeof(message), gmessage,
							  strlen(gmessage));
	else
		notify_response_snippet(message, sizeof(message), &d->response);

#define FCM_ERR(outcome) \
	notify_set_error(d, (outcome), "fcm %ld %s: %s", status, \
					 code ? code : "error", message)

	if (code != NULL && strcmp(code, "UNREGISTERED") == 0)
	{
		FCM_ERR(NOTIFY_OUTCOME_FAILED);
		d->deactivate_device = true;
	}
	else if (code != NULL && strcmp(code, "INVALID_ARGUMENT") == 0)
	{
		FCM_ERR(NOTIFY_OUTCOME_FAILED);
		if (about_token(gmessage, details))
			d->deactivate_device = true;
	}
	else if (code != NULL && (strcmp(code, "SENDER_ID_MISMATCH") == 0 ||
							  strcmp(code, "THIRD_PARTY_AUTH_ERROR") == 0))
		FCM_ERR(NOTIFY_OUTCOME_FAILED);
	else if (status == 401)
	{
		/*
		 * Our access token was refused: forget it (unless a newer one was
		 * minted since this request left) and retry at once; the next
		 * prepare() mints a new token.
		 */
		if (st->access_token != NULL &&
			(uintptr_t) d->provider_data == st->token_gen)
		{
			free(st->access_token);
			st->access_token = NULL;
		}
		FCM_ERR(NOTIFY_OUTCOME_RETRY);
		d->retry_after = 0;
	}
	else if ((code != NULL && (strcmp(code, "QUOTA_EXCEEDED") == 0 ||
							   strcmp(code, "UNAVAILABLE") == 0 ||
							   strcmp(code, "INTERNAL") == 0)) ||
			 notify_http_status_transient(status) || status == 0)
	{
		FCM_ERR(NOTIFY_OUTCOME_RETRY);
		d->retry_after = notify_parse_retry_after(&d->response_headers);
	}
	else
		FCM_ERR(NOTIFY_OUTCOME_FAILED);

#undef FCM_ERR
	json_decref(answer);
}

/* Keys a fcm config may have, besides the common ones (provider.h). */
static const char *const fcm_config_keys[] = {
	"service_account", "project_id", "token_uri", NULL
};

const NotifyProviderOps notify_fcm_ops = {
	.kind = "fcm",
	.channel = "push",
	.secret_keys = fcm_secret_keys,
	.config_keys = fcm_config_keys,
	.check_config = fcm_check_config,
	.payload_size = fcm_payload_size,
	.create = fcm_create,
	.prepare = fcm_prepare,
	.finish = fcm_finish,
	.release = NULL,
	.destroy = fcm_destroy,
	.needs_warmup = NULL,
};
