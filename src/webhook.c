/*-------------------------------------------------------------------------
 *
 * webhook.c
 *	  The "webhook" provider: POSTs a rendered JSON body to an HTTP(S)
 *	  endpoint, signed with HMAC-SHA256 when a secret is configured.
 *
 * Request:
 *	 POST <destination URL, or config endpoint>
 *	 Content-Type: application/json
 *	 X-Notify-Id: <outbox id>          (same on every retry: deduplicate)
 *	 Idempotency-Key: notify-<outbox id>
 *	 X-Notify-Timestamp: <unix seconds>               (with a secret)
 *	 X-Notify-Signature: t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>
 *	 config "headers", then the message's "headers" (the message wins)
 *	 body: message.body as compact JSON
 *
 * Answers: 2xx sent (provider id from a JSON "id" if any); 408, 425, 429
 * and 5xx retried, honouring Retry-After; anything else failed, with the
 * start of the body in the error.
 *
 * Owns only the webhook request and its classification; transfers are the
 * engine's, HMAC is crypto.c's.
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

typedef struct WebhookState
{
	json_t	   *config;			/* our reference */
	char	   *endpoint;
	char	   *secret;			/* NULL when unsigned */
	json_t	   *headers;		/* config headers (object), borrowed from
								 * config */
} WebhookState;

static const char *const webhook_secret_keys[] = {"secret", NULL};

/* Headers the engine and this file set; config and message cannot. */
static const char *const reserved_headers[] = {
	"content-type", "content-length", "host", "transfer-encoding",
	"expect", "connection", "x-notify-id", "idempotency-key",
	"x-notify-signature", "x-notify-timestamp", NULL
};

/* An RFC 9110 token: the characters a header name may use. */
static bool
valid_header_name(const char *s)
{
	if (s == NULL || *s == '\0')
		return false;
	for (; *s; s++)
	{
		unsigned char c = (unsigned char) *s;

		if (!isalnum(c) && strchr("!#$%&'*+-.^_`|~", c) == NULL)
			return false;
	}
	return true;
}

/* A header value must not smuggle in another header. */
static bool
valid_header_value(const char *s)
{
	for (; *s; s++)
	{
		unsigned char c = (unsigned char) *s;

		if (c == '\r' || c == '\n' || c == '\0')
			return false;
	}
	return true;
}

static bool
reserved_header(const char *name)
{
	int			i;

	for (i = 0; reserved_headers[i]; i++)
		if (strcasecmp(name, reserved_headers[i]) == 0)
			return true;
	return false;
}

/*
 * Check an object of extra headers.  Returns NULL when fine, else a
 * malloc'd message naming the problem (header values are not secrets, but
 * are not echoed anyway).
 */
static char *
check_headers(json_t *headers, const char *what)
{
	const char *name;
	json_t	   *value;
	char		msg[300];

	if (headers == NULL)
		return NULL;
	if (!json_is_object(headers))
	{
		snprintf(msg, sizeof(msg), "%s must be an object of strings", what);
		return strdup(msg);
	}
	json_object_foreach(headers, name, value)
	{
		if (!valid_header_name(name))
		{
			snprintf(msg, sizeof(msg), "%s: \"%.100s\" is not a valid header name",
					 what, name);
			return strdup(msg);
		}
		if (!json_is_string(value) || !valid_header_value(json_string_value(value)))
		{
			snprintf(msg, sizeof(msg),
					 "%s: header \"%.100s\" must be a string without line breaks",
					 what, name);
			return strdup(msg);
		}
		if (reserved_header(name))
		{
			snprintf(msg, sizeof(msg), "%s: header \"%.100s\" is set by notify",
					 what, name);
			return strdup(msg);
		}
	}
	return NULL;
}

static char *
webhook_check_config(json_t *config)
{
	json_t	   *v;

	if (!json_is_object(config))
		return strdup("webhook config must be a JSON object");

	v = json_object_get(config, "endpoint");
	if (!json_is_string(v))
		return strdup("webhook config needs \"endpoint\" (an http:// or https:// URL)");
	if (!notify_is_http_url(json_string_value(v)))
		return strdup("webhook \"endpoint\" must be an http:// or https:// URL");

	v = json_object_get(config, "secret");
	if (v != NULL && (!json_is_string(v) || json_string_length(v) == 0))
		return strdup("webhook \"secret\" must be a non-empty string");

	v = json_object_get(config, "ca_file");
	if (v != NULL && !json_is_string(v))
		return strdup("webhook \"ca_file\" must be a string");

	return check_headers(json_object_get(config, "headers"),
						 "webhook \"headers\"");
}

static void
webhook_destroy(void *arg)
{
	WebhookState *st = (WebhookState *) arg;

	if (st == NULL)
		return;
	free(st->endpoint);
	free(st->secret);
	json_decref(st->config);
	free(st);
}

static void *
webhook_create(json_t *config, char **err)
{
	WebhookState *st;
	json_t	   *secret;

	*err = webhook_check_config(config);
	if (*err != NULL)
		return NULL;

	st = calloc(1, sizeof(WebhookState));
	if (st == NULL)
	{
		*err = strdup("out of memory");
		return NULL;
	}
	st->config = json_incref(config);
	st->endpoint = strdup(json_string_value(json_object_get(config, "endpoint")));
	secret = json_object_get(config, "secret");
	if (json_is_string(secret))
		st->secret = strdup(json_string_value(secret));
	st->headers = json_object_get(config, "headers");
	if (st->endpoint == NULL || (json_is_string(secret) && st->secret == NULL))
	{
		webhook_destroy(st);
		*err = strdup("out of memory");
		return NULL;
	}
	return st;
}

static bool
webhook_prepare(void *arg, NotifyDelivery *d)
{
	WebhookState *st = (WebhookState *) arg;
	json_t	   *body = json_object_get(d->message, "body");
	json_t	   *msg_headers = json_object_get(d->message, "headers");
	const char *url;
	const char *name;
	json_t	   *value;
	char	   *problem;
	bool		ok = true;

	if (body == NULL)
	{
		notify_set_error(d, NOTIFY_OUTCOME_FAILED, "webhook message has no \"body\"");
		return false;
	}
	problem = check_headers(msg_headers, "webhook message \"headers\"");
	if (problem != NULL)
	{
		notify_set_error(d, NOTIFY_OUTCOME_FAILED, "%s", problem);
		free(problem);
		return false;
	}

	/* a per-recipient URL (the destination) wins over the configured one */
	url = notify_is_http_url(d->destination) ? d->destination : st->endpoint;

	d->body = json_dumps(body, JSON_COMPACT | JSON_ENCODE_ANY);
	if (d->body == NULL)
	{
		notify_set_error(d, NOTIFY_OUTCOME_FAILED,
						 "webhook body cannot be encoded as JSON");
		return false;
	}
	d->body_len = strlen(d->body);

	ok = ok && notify_add_header(&d->headers, "Content-Type: application/json");
	ok = ok && notify_add_header(&d->headers, "X-Notify-Id: %lld",
								 (long long) d->id);
	ok = ok && notify_add_header(&d->headers, "Idempotency-Key: notify-%lld",
						  (long long) d->id);
	ok = ok && notify_add_header(&d->headers, "Expect:");

	if (st->secret != NULL && ok)
	{
		long long	t = (long long) time(NULL);
		char		prefix[32];
		size_t		plen = (size_t) snprintf(prefix, sizeof(prefix), "%lld.", t);
		unsigned char *signed_text = malloc(plen + d->body_len);
		char		hex[65];

		if (signed_text == NULL)
			ok = false;
		else
		{
			memcpy(signed_text, prefix, plen);
			memcpy(signed_text + plen, d->body, d->body_len);
			notify_hmac_sha256_hex((const unsigned char *) st->secret,
								   strlen(st->secret),
								   signed_text, plen + d->body_len, hex);
			free(signed_text);
			ok = notify_add_header(&d->headers, "X-Notify-Timestamp: %lld", t) &&
				notify_add_header(&d->headers,
								  "X-Notify-Signature: t=%lld,v1=%s", t, hex);
		}
	}

	/* config headers unless the message sets the same one */
	if (json_is_object(st->headers))
	{
		json_object_foreach(st->headers, name, value)
		{
			const char *mname;
			json_t	   *mvalue;
			bool		overridden = false;

			if (json_is_object(msg_headers))
			{
				json_object_foreach(msg_headers, mname, mvalue)
				{
					if (strcasecmp(mname, name) == 0)
						overridden = true;
				}
			}
			if (!overridden && ok)
				ok = notify_add_header(&d->headers, "%s: %s", name,
								json_string_value(value));
		}
	}
	if (json_is_object(msg_headers))
	{
		json_object_foreach(msg_headers, name, value)
		{
			if (ok)
				ok = notify_add_header(&d->headers, "%s: %s", name,
								json_string_value(value));
		}
	}

	if (!ok)
	{
		notify_set_error(d, NOTIFY_OUTCOME_RETRY, "webhook: out of memory");
		return false;
	}

	notify_http_post(d->easy, url, d->body, d->body_len, d->headers,
					 st->config);
	return true;
}

static void
webhook_finish(void *arg, NotifyDelivery *d, CURLcode rc)
{
	long		status = d->http_status;

	if (rc != CURLE_OK)
		return;					/* the engine's RETRY stands */

	if (status >= 200 && status <= 299)
	{
		json_t	   *answer;
		json_t	   *id;

		d->outcome = NOTIFY_OUTCOME_SENT;
		d->error[0] = '\0';
		d->provider_id[0] = '\0';
		answer = notify_buf_json_object(&d->response);
		id = json_object_get(answer, "id");
		if (json_is_string(id))
			notify_printable_copy(d->provider_id, sizeof(d->provider_id),
								  json_string_value(id), json_string_length(id));
		else if (json_is_integer(id))
			snprintf(d->provider_id, sizeof(d->provider_id), "%lld",
					 (long long) json_integer_value(id));
		json_decref(answer);
		return;
	}

	if (notify_http_status_transient(status) || status == 0)
	{
		notify_set_error(d, NOTIFY_OUTCOME_RETRY, "webhook %ld", status);
		d->retry_after = notify_parse_retry_after(&d->response_headers);
		return;
	}

	{
		char		text[201];

		notify_response_snippet(text, sizeof(text), &d->response);
		notify_set_error(d, NOTIFY_OUTCOME_FAILED, "webhook %ld: %s", status, text);
	}
}

/* Keys a webhook config may have, besides the common ones (provider.h). */
static const char *const webhook_config_keys[] = {
	"secret", "headers", NULL
};

const NotifyProviderOps notify_webhook_ops = {
	.kind = "webhook",
	.channel = "webhook",
	.secret_keys = webhook_secret_keys,
	.config_keys = webhook_config_keys,
	.check_config = webhook_check_config,
	.payload_size = NULL,
	.create = webhook_create,
	.prepare = webhook_prepare,
	.finish = webhook_finish,
	.release = NULL,
	.destroy = webhook_destroy,
	.needs_warmup = NULL,
};
