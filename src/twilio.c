/*-------------------------------------------------------------------------
 *
 * twilio.c
 *	  The "twilio" provider: SMS through Twilio's Messages API.
 *
 * Request:
 *	 POST <endpoint>/2010-04-01/Accounts/<AccountSid>/Messages.json
 *	 HTTP Basic: AccountSid:AuthToken, or ApiKeySid:ApiKeySecret
 *	 form: To=<E.164>&From=<number>|MessagingServiceSid=<MG...>&Body=...
 *	       [&StatusCallback=<url>]
 *
 * Answers: 201 with {"sid","num_segments",...} is sent.  Errors carry a
 * Twilio "code": 21211 (invalid To) and 21614 (not a mobile number) fail;
 * 21610 (the recipient replied STOP) fails and marks an opt-out; 20429 or
 * HTTP 429 and 5xx are retried (Retry-After honoured); 401 / 20003 is a
 * configuration problem (bad credentials) and fails the message with an
 * error saying so; any other 4xx fails.
 *
 * Owns only the Twilio request and its classification.  Delivery-status
 * callbacks Twilio POSTs to StatusCallback are received elsewhere.
 *
 *-------------------------------------------------------------------------
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "provider.h"

#define TWILIO_ENDPOINT "https://api.twilio.com"

typedef struct TwilioState
{
	json_t	   *config;			/* our reference */
	char	   *url;			/* .../Accounts/<sid>/Messages.json */
	const char *username;		/* account or API key sid (in config) */
	const char *password;		/* auth token or API key secret */
	const char *from;			/* NULL when not configured */
	const char *service_sid;	/* NULL when not configured */
	const char *status_callback;	/* NULL when not configured */
} TwilioState;

static const char *const twilio_secret_keys[] = {
	"auth_token", "api_key_secret", NULL
};

/* A Twilio sid: two letters of prefix, then letters and digits. */
static bool
valid_sid(const char *s, const char *prefix)
{
	size_t		len;
	size_t		i;

	if (s == NULL || strncmp(s, prefix, 2) != 0)
		return false;
	len = strlen(s);
	if (len < 4 || len > 64)
		return false;
	for (i = 0; i < len; i++)
		if (!isalnum((unsigned char) s[i]))
			return false;
	return true;
}

/* "+", then 1 to 15 digits, the first not 0. */
static bool
valid_e164(const char *s)
{
	size_t		n = 0;

	if (s == NULL || s[0] != '+' || s[1] < '1' || s[1] > '9')
		return false;
	for (s++; *s; s++)
	{
		if (!isdigit((unsigned char) *s))
			return false;
		n++;
	}
	return n >= 1 && n <= 15;
}

static char *
twilio_check_config(json_t *config)
{
	const char *s;
	static const char *const string_keys[] = {
		"account_sid", "auth_token", "api_key_sid", "api_key_secret", "from",
		"messaging_service_sid", "status_callback", "endpoint", "ca_file", NULL
	};
	char	   *problem;

	if (!json_is_object(config))
		return strdup("twilio config must be a JSON object");
	problem = notify_check_string_keys(config, "twilio", string_keys);
	if (problem != NULL)
		return problem;

	if (!valid_sid(notify_json_nonempty(config, "account_sid"), "AC"))
		return strdup("twilio config needs \"account_sid\" (AC followed by letters and digits)");

	if (notify_json_nonempty(config, "api_key_sid") != NULL ||
		notify_json_nonempty(config, "api_key_secret") != NULL)
	{
		if (!valid_sid(notify_json_nonempty(config, "api_key_sid"), "SK"))
			return strdup("twilio \"api_key_sid\" must be an SK... sid");
		if (notify_json_nonempty(config, "api_key_secret") == NULL)
			return strdup("twilio \"api_key_sid\" needs \"api_key_secret\"");
	}
	else if (notify_json_nonempty(config, "auth_token") == NULL)
		return strdup("twilio config needs \"auth_token\", or \"api_key_sid\" and \"api_key_secret\"");

	s = notify_json_nonempty(config, "from");
	if (s == NULL &&
		notify_json_nonempty(config, "messaging_service_sid") == NULL)
		return strdup("twilio config needs \"from\" or \"messaging_service_sid\"");
	if (notify_json_nonempty(config, "messaging_service_sid") != NULL &&
		!valid_sid(notify_json_nonempty(config, "messaging_service_sid"), "MG"))
		return strdup("twilio \"messaging_service_sid\" must be an MG... sid");

	s = notify_json_nonempty(config, "status_callback");
	if (s != NULL && !notify_is_http_url(s))
		return strdup("twilio \"status_callback\" must be an http:// or https:// URL");
	s = notify_json_nonempty(config, "endpoint");
	if (s != NULL && !notify_is_http_url(s))
		return strdup("twilio \"endpoint\" must be an http:// or https:// URL");
	return NULL;
}

static void
twilio_destroy(void *arg)
{
	TwilioState *st = (TwilioState *) arg;

	if (st == NULL)
		return;
	free(st->url);
	json_decref(st->config);
	free(st);
}

static void *
twilio_create(json_t *config, char **err)
{
	TwilioState *st;
	const char *endpoint;
	const char *sid;

	*err = twilio_check_config(config);
	if (*err != NULL)
		return NULL;

	st = calloc(1, sizeof(TwilioState));
	if (st == NULL)
	{
		*err = strdup("out of memory");
		return NULL;
	}
	st->config = json_incref(config);

	endpoint = notify_json_nonempty(config, "endpoint");
	if (endpoint == NULL)
		endpoint = TWILIO_ENDPOINT;
	sid = notify_json_nonempty(config, "account_sid");
	st->url = notify_endpoint_url(endpoint,
								  "/2010-04-01/Accounts/%s/Messages.json",
								  sid);
	if (st->url == NULL)
	{
		twilio_destroy(st);
		*err = strdup("out of memory");
		return NULL;
	}

	if (notify_json_nonempty(config, "api_key_sid") != NULL)
	{
		st->username = notify_json_nonempty(config, "api_key_sid");
		st->password = notify_json_nonempty(config, "api_key_secret");
	}
	else
	{
		st->username = sid;
		st->password = notify_json_nonempty(config, "auth_token");
	}
	st->from = notify_json_nonempty(config, "from");
	st->service_sid = notify_json_nonempty(config, "messaging_service_sid");
	st->status_callback = notify_json_nonempty(config, "status_callback");
	return st;
}

/* Append "&name=<escaped value>" (no "&" for the first field). */
static bool
form_add(CURL *easy, NotifyBuf *buf, const char *name, const char *value)
{
	if (buf->len > 0)
		notify_buf_append(buf, "&", 1);
	notify_buf_append(buf, name, strlen(name));
	notify_buf_append(buf, "=", 1);
	return notify_buf_append_escaped(easy, buf, value) && buf->data != NULL;
}

static bool
twilio_prepare(void *arg, NotifyDelivery *d)
{
	TwilioState *st = (TwilioState *) arg;
	const char *text = json_string_value(json_object_get(d->message, "body"));
	NotifyBuf	form = {0};
	bool		ok;

	if (!valid_e164(d->destination))
	{
		notify_set_error(d, NOTIFY_OUTCOME_FAILED,
						 "twilio: destination is not an E.164 number");
		return false;
	}
	if (text == NULL || text[0] == '\0')
	{
		notify_set_error(d, NOTIFY_OUTCOME_FAILED,
						 "twilio: message has no \"body\"");
		return false;
	}

	ok = form_add(d->easy, &form, "To", d->destination);
	if (ok && st->from != NULL)
		ok = form_add(d->easy, &form, "From", st->from);
	if (ok && st->service_sid != NULL)
		ok = form_add(d->easy, &form, "MessagingServiceSid", st->service_sid);
	if (ok)
		ok = form_add(d->easy, &form, "Body", text);
	if (ok && st->status_callback != NULL)
		ok = form_add(d->easy, &form, "StatusCallback", st->status_callback);
	if (!ok)
	{
		notify_buf_free(&form);
		notify_set_error(d, NOTIFY_OUTCOME_RETRY, "twilio: out of memory");
		return false;
	}
	d->body = form.data;		/* ownership passes to the delivery */
	d->body_len = form.len;

	if (!notify_add_header(&d->headers,
						   "Content-Type: application/x-www-form-urlencoded") ||
		!notify_add_header(&d->headers, "Accept: application/json") ||
		!notify_add_header(&d->headers, "Expect:"))
	{
		notify_set_error(d, NOTIFY_OUTCOME_RETRY, "twilio: out of memory");
		return false;
	}

	notify_http_post(d->easy, st->url, d->body, d->body_len, d->headers,
					 st->config);
	curl_easy_setopt(d->easy, CURLOPT_HTTPAUTH, (long) CURLAUTH_BASIC);
	curl_easy_setopt(d->easy, CURLOPT_USERNAME, st->username);
	curl_easy_setopt(d->easy, CURLOPT_PASSWORD, st->password);
	return true;
}

/* An integer that Twilio may send as a number or as a string. */
static long
json_loose_integer(json_t *v)
{
	if (json_is_integer(v))
		return (long) json_integer_value(v);
	if (json_is_string(v))
		return strtol(json_string_value(v), NULL, 10);
	return 0;
}

static void
twilio_finish(void *arg, NotifyDelivery *d, CURLcode rc)
{
	long		status = d->http_status;
	json_t	   *answer;
	long		code;
	char		message[256];
	char		codestr[32];

	if (rc != CURLE_OK)
		return;					/* the engine's RETRY stands */

	answer = notify_buf_json_object(&d->response);

	if (status >= 200 && status <= 299)
	{
		json_t	   *sid = json_object_get(answer, "sid");

		d->outcome = NOTIFY_OUTCOME_SENT;
		d->error[0] = '\0';
		if (json_is_string(sid))
			notify_printable_copy(d->provider_id, sizeof(d->provider_id),
								  json_string_value(sid),
								  json_string_length(sid));
		d->segments = (int) json_loose_integer(json_object_get(answer,
															   "num_segments"));
		json_decref(answer);
		return;
	}

	code = json_loose_integer(json_object_get(answer, "code"));
	{
		json_t	   *m = json_object_get(answer, "message");

		if (json_is_string(m))
			notify_printable_copy(message, sizeof(message),
								  json_string_value(m), json_string_length(m));
		else
			notify_response_snippet(message, sizeof(message), &d->response);
	}
	json_decref(answer);

	/* " <code>" when Twilio gave one */
	if (code != 0)
		snprintf(codestr, sizeof(codestr), " %ld", code);
	else
		codestr[0] = '\0';

	if (code == 21610)
	{
		notify_set_error(d, NOTIFY_OUTCOME_FAILED,
						 "twilio %ld 21610: recipient opted out (replied STOP)",
						 status);
		d->opt_out = true;
	}
	else if (code == 21211 || code == 21614)
		notify_set_error(d, NOTIFY_OUTCOME_FAILED, "twilio %ld%s: %s",
						 status, codestr, message);
	else if (status == 401 || code == 20003)
		notify_set_error(d, NOTIFY_OUTCOME_FAILED,
						 "twilio %ld%s authentication failed: a configuration problem "
						 "(check account_sid and auth_token or the API key), "
						 "not this message's",
						 status, codestr);
	else if (code == 20429 || notify_http_status_transient(status) ||
			 status == 0)
	{
		notify_set_error(d, NOTIFY_OUTCOME_RETRY, "twilio %ld%s: %s",
						 status, codestr, message);
		d->retry_after = notify_parse_retry_after(&d->response_headers);
	}
	else
		notify_set_error(d, NOTIFY_OUTCOME_FAILED, "twilio %ld%s: %s",
						 status, codestr, message);
}

/* Keys a twilio config may have, besides the common ones (provider.h). */
static const char *const twilio_config_keys[] = {
	"account_sid", "auth_token", "api_key_sid", "api_key_secret", "from",
	"messaging_service_sid", "status_callback", NULL
};

const NotifyProviderOps notify_twilio_ops = {
	.kind = "twilio",
	.channel = "sms",
	.secret_keys = twilio_secret_keys,
	.config_keys = twilio_config_keys,
	.check_config = twilio_check_config,
	.payload_size = NULL,
	.create = twilio_create,
	.prepare = twilio_prepare,
	.finish = twilio_finish,
	.release = NULL,
	.destroy = twilio_destroy,
	.needs_warmup = NULL,
};
