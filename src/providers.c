/*-------------------------------------------------------------------------
 *
 * providers.c
 *	  The registry of provider kinds and the small helpers the providers
 *	  share: growable buffers (and the curl callback that fills them),
 *	  error formatting, config and message field lookups, endpoint URLs,
 *	  the HTTP settings common to all of them, retry classification, and
 *	  the reading of answers (JSON bodies, response headers, Retry-After).
 *
 * This file owns no transfer and no provider state: it does not know how
 * any one service speaks (that is apns.c, fcm.c, ...) nor how transfers
 * are driven (engine.c).  Plain C, malloc-based, no PostgreSQL headers.
 *
 *-------------------------------------------------------------------------
 */
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "provider.h"

/* Longest wait a server may ask of us; anything longer is clamped. */
#define RETRY_AFTER_MAX		86400

static const NotifyProviderOps *const registry[] = {
	&notify_apns_ops,
	&notify_fcm_ops,
	&notify_webpush_ops,
	&notify_twilio_ops,
	&notify_smtp_ops,
	&notify_webhook_ops,
};

#define NUM_KINDS	(sizeof(registry) / sizeof(registry[0]))

static const char *const kind_names[] = {
	"apns", "fcm", "webpush", "twilio", "smtp", "webhook", NULL
};

/*
 * The operations of one provider kind, or NULL for an unknown kind.
 */
const NotifyProviderOps *
notify_provider_lookup(const char *kind)
{
	size_t		i;

	if (kind == NULL)
		return NULL;
	for (i = 0; i < NUM_KINDS; i++)
	{
		if (strcmp(registry[i]->kind, kind) == 0)
			return registry[i];
	}
	return NULL;
}

/*
 * All kind names, NULL-terminated, in a stable order.
 */
const char *const *
notify_provider_kinds(void)
{
	return kind_names;
}

/*
 * Append len bytes to buf, keeping it NUL-terminated.  On out-of-memory
 * the data is dropped and buf is left as it was: callers only use buffers
 * for responses and diagnostics, where a short read is not fatal.
 */
void
notify_buf_append(NotifyBuf *buf, const char *data, size_t len)
{
	if (buf->len + len + 1 > buf->cap)
	{
		size_t		newcap = buf->cap ? buf->cap : 256;
		char	   *p;

		while (newcap < buf->len + len + 1)
			newcap *= 2;
		p = realloc(buf->data, newcap);
		if (p == NULL)
			return;
		buf->data = p;
		buf->cap = newcap;
	}
	if (len > 0)
		memcpy(buf->data + buf->len, data, len);
	buf->len += len;
	buf->data[buf->len] = '\0';
}

void
notify_buf_free(NotifyBuf *buf)
{
	free(buf->data);
	buf->data = NULL;
	buf->len = 0;
	buf->cap = 0;
}

/*
 * Set the outcome of a delivery and the reason for it (truncated to fit).
 */
void
notify_set_error(NotifyDelivery *d, NotifyOutcome outcome, const char *fmt,...)
{
	va_list		ap;

	d->outcome = outcome;
	va_start(ap, fmt);
	vsnprintf(d->error, sizeof(d->error), fmt, ap);
	va_end(ap);
}

/*
 * The TLS settings every provider applies: the configured CA bundle (a
 * test CA, or a private one) and TLS 1.2 as the lowest version spoken.
 */
void
notify_http_common(CURL *easy, json_t *config)
{
	json_t	   *ca = config ? json_object_get(config, "ca_file") : NULL;

	if (json_is_string(ca) && json_string_length(ca) > 0)
		curl_easy_setopt(easy, CURLOPT_CAINFO, json_string_value(ca));
	curl_easy_setopt(easy, CURLOPT_SSLVERSION, (long) CURL_SSLVERSION_TLSv1_2);
}

/*
 * Statuses that say "not now" rather than "never": 408 Request Timeout,
 * 425 Too Early, 429 Too Many Requests and every 5xx.
 */
bool
notify_http_status_transient(long status)
{
	return status == 408 || status == 425 || status == 429 ||
		(status >= 500 && status <= 599);
}

/*
 * Parse one Retry-After value: delta-seconds, or an HTTP date
 * (IMF-fixdate; curl_getdate also takes the obsolete RFC 850 and asctime
 * forms).  Returns -1 when the value is not understood.
 */
static int
parse_retry_after_value(const char *v, size_t len)
{
	char		tmp[128];
	size_t		i;
	bool		digits = true;

	while (len > 0 && (*v == ' ' || *v == '\t'))
	{
		v++;
		len--;
	}
	while (len > 0 && (v[len - 1] == ' ' || v[len - 1] == '\t' ||
					   v[len - 1] == '\r' || v[len - 1] == '\n'))
		len--;
	if (len == 0 || len >= sizeof(tmp))
		return -1;
	memcpy(tmp, v, len);
	tmp[len] = '\0';

	for (i = 0; i < len; i++)
	{
		if (!isdigit((unsigned char) tmp[i]))
		{
			digits = false;
			break;
		}
	}

	if (digits)
	{
		/* at most 10 digits matter; longer is "very long": clamp */
		long long	secs = 0;

		for (i = 0; i < len; i++)
		{
			secs = secs * 10 + (tmp[i] - '0');
			if (secs > RETRY_AFTER_MAX)
				return RETRY_AFTER_MAX;
		}
		return (int) secs;
	}
	else
	{
		time_t		when = curl_getdate(tmp, NULL);
		time_t		now = time(NULL);

		if (when == (time_t) -1)
			return -1;
		if (when <= now)
			return 0;
		if (when - now > RETRY_AFTER_MAX)
			return RETRY_AFTER_MAX;
		return (int) (when - now);
	}
}

/*
 * Find Retry-After among the raw response header lines.  The buffer may
 * hold several responses (a 100 Continue, say); only the last one counts,
 * so a status line starts the search afresh.  Returns seconds (clamped to
 * one day), or -1 when absent or unparseable.
 */
int
notify_parse_retry_after(const NotifyBuf *headers)
{
	const char *p;
	const char *end;
	int			result = -1;

	if (headers == NULL || headers->data == NULL)
		return -1;

	p = headers->data;
	end = headers->data + headers->len;
	while (p < end)
	{
		const char *eol = memchr(p, '\n', end - p);
		size_t		linelen = eol ? (size_t) (eol - p) : (size_t) (end - p);

		if (linelen >= 5 && strncmp(p, "HTTP/", 5) == 0)
			result = -1;
		else if (linelen > 12 && strncasecmp(p, "retry-after:", 12) == 0)
			result = parse_retry_after_value(p + 12, linelen - 12);

		if (eol == NULL)
			break;
		p = eol + 1;
	}
	return result;
}

/*
 * A service's answer made fit for an error message: whitespace becomes a
 * space, runs of spaces collapse, other control characters and non-ASCII
 * bytes become '?' (a cut could otherwise split a UTF-8 sequence).
 */
void
notify_printable_copy(char *dst, size_t dstlen, const char *src,
					  size_t srclen)
{
	size_t		o = 0;
	size_t		i;

	if (dstlen == 0)
		return;
	for (i = 0; src != NULL && i < srclen && src[i] != '\0' && o + 1 < dstlen; i++)
	{
		unsigned char c = (unsigned char) src[i];

		if (c == ' ' || c == '\t' || c == '\r' || c == '\n')
		{
			if (o > 0 && dst[o - 1] != ' ')
				dst[o++] = ' ';
		}
		else if (c < 0x20 || c >= 0x7f)
			dst[o++] = '?';
		else
			dst[o++] = (char) c;
	}
	while (o > 0 && dst[o - 1] == ' ')
		o--;
	dst[o] = '\0';
}

/*
 * Append "Name: value" (formatted) to a curl header list.
 */
bool
notify_add_header(struct curl_slist **list, const char *fmt,...)
{
	char		line[1024];
	char	   *big = NULL;
	const char *text = line;
	struct curl_slist *l;
	va_list		ap;
	int			len;

	va_start(ap, fmt);
	len = vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	if (len < 0)
		return false;
	if ((size_t) len >= sizeof(line))
	{
		big = malloc((size_t) len + 1);
		if (big == NULL)
			return false;
		va_start(ap, fmt);
		vsnprintf(big, (size_t) len + 1, fmt, ap);
		va_end(ap);
		text = big;
	}
	l = curl_slist_append(*list, text);
	free(big);
	if (l == NULL)
		return false;
	*list = l;
	return true;
}

/*
 * A malloc'd string formatted like printf, truncated to NOTIFY_ERROR_LEN
 * bytes (it is meant for messages); NULL when out of memory.
 */
char *
notify_strdupf(const char *fmt,...)
{
	char		buf[NOTIFY_ERROR_LEN];
	va_list		ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	return strdup(buf);
}

/* obj[key] when it is a string (possibly empty), else NULL. */
const char *
notify_json_string(json_t *obj, const char *key)
{
	json_t	   *v = json_object_get(obj, key);

	return json_is_string(v) ? json_string_value(v) : NULL;
}

/* obj[key] when it is a non-empty string, else NULL. */
const char *
notify_json_nonempty(json_t *obj, const char *key)
{
	json_t	   *v = json_object_get(obj, key);

	if (json_is_string(v) && json_string_length(v) > 0)
		return json_string_value(v);
	return NULL;
}

/*
 * A push message's string field: *out is NULL when the field is absent,
 * null or empty (an unset template variable renders as "").  False and
 * *err (malloc'd) when it has another type.
 */
bool
notify_msg_str(json_t *message, const char *key, const char **out,
			   char **err)
{
	json_t	   *v = json_object_get(message, key);

	*out = NULL;
	if (v == NULL || json_is_null(v))
		return true;
	if (!json_is_string(v))
	{
		*err = notify_strdupf("push message field \"%s\" must be a string",
							  key);
		return false;
	}
	if (json_string_length(v) > 0)
		*out = json_string_value(v);
	return true;
}

/* A message flag: true, 1, "true" or "1" set it. */
bool
notify_msg_flag(json_t *message, const char *key)
{
	json_t	   *v = json_object_get(message, key);

	if (json_is_true(v))
		return true;
	if (json_is_integer(v))
		return json_integer_value(v) != 0;
	if (json_is_string(v))
		return strcmp(json_string_value(v), "true") == 0 ||
			strcmp(json_string_value(v), "1") == 0;
	return false;
}

/*
 * Check that each of the keys present in config is a string.  NULL when
 * they all are, else a malloc'd "<kind> "<key>" must be a string".
 */
char *
notify_check_string_keys(json_t *config, const char *kind,
						 const char *const *keys)
{
	int			i;

	for (i = 0; keys[i]; i++)
	{
		json_t	   *v = json_object_get(config, keys[i]);

		if (v != NULL && !json_is_string(v))
			return notify_strdupf("%s \"%s\" must be a string", kind, keys[i]);
	}
	return NULL;
}

/* An http:// or https:// URL with something after the scheme. */
bool
notify_is_http_url(const char *s)
{
	return s != NULL &&
		((strncasecmp(s, "http://", 7) == 0 && s[7] != '\0') ||
		 (strncasecmp(s, "https://", 8) == 0 && s[8] != '\0'));
}

/*
 * The endpoint without its trailing slashes, followed by the formatted
 * path: malloc'd, NULL when out of memory.
 */
char *
notify_endpoint_url(const char *endpoint, const char *fmt,...)
{
	size_t		elen = strlen(endpoint);
	va_list		ap;
	int			plen;
	char	   *url;

	while (elen > 0 && endpoint[elen - 1] == '/')
		elen--;
	va_start(ap, fmt);
	plen = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (plen < 0)
		return NULL;
	url = malloc(elen + (size_t) plen + 1);
	if (url == NULL)
		return NULL;
	memcpy(url, endpoint, elen);
	va_start(ap, fmt);
	vsnprintf(url + elen, (size_t) plen + 1, fmt, ap);
	va_end(ap);
	return url;
}

/*
 * Append value URL-escaped (curl_easy_escape) to buf.  False when curl
 * cannot escape it; an out-of-memory append shows as usual in buf.
 */
bool
notify_buf_append_escaped(CURL *easy, NotifyBuf *buf, const char *value)
{
	char	   *esc = curl_easy_escape(easy, value, (int) strlen(value));

	if (esc == NULL)
		return false;
	notify_buf_append(buf, esc, strlen(esc));
	curl_free(esc);
	return true;
}

/*
 * A curl write (or header) callback into the NotifyBuf given as its data.
 * Beyond NOTIFY_RESPONSE_CAP bytes the data is discarded.
 */
size_t
notify_buf_write_cb(char *ptr, size_t size, size_t nmemb, void *userdata)
{
	NotifyBuf  *buf = (NotifyBuf *) userdata;
	size_t		n = size * nmemb;

	if (buf->len < NOTIFY_RESPONSE_CAP)
	{
		size_t		room = NOTIFY_RESPONSE_CAP - buf->len;

		notify_buf_append(buf, ptr, n < room ? n : room);
	}
	/* claim we took it all: a long answer must not fail the transfer */
	return n;
}

/*
 * A response body parsed as JSON: a new reference to the object, or NULL
 * when the body is empty, not JSON, or not an object.
 */
json_t *
notify_buf_json_object(const NotifyBuf *buf)
{
	json_t	   *doc;

	if (buf->data == NULL)
		return NULL;
	doc = json_loadb(buf->data, buf->len, 0, NULL);
	if (!json_is_object(doc))
	{
		json_decref(doc);
		return NULL;
	}
	return doc;
}

/*
 * The start of a response body (NOTIFY_SNIPPET_MAX bytes at most), made
 * printable by notify_printable_copy, for an error message.
 */
void
notify_response_snippet(char *dst, size_t dstlen, const NotifyBuf *buf)
{
	notify_printable_copy(dst, dstlen, buf->data,
						  buf->len < NOTIFY_SNIPPET_MAX ?
						  buf->len : NOTIFY_SNIPPET_MAX);
}

/*
 * The value of response header name (case-insensitive) in the raw header
 * lines of the last response, trimmed, into out (truncated to fit).  False
 * when absent.
 */
bool
notify_response_header(const NotifyBuf *headers, const char *name,
					   char *out, size_t outlen)
{
	size_t		namelen = strlen(name);
	const char *p;
	const char *end;
	bool		found = false;

	if (headers == NULL || headers->data == NULL)
		return false;
	p = headers->data;
	end = headers->data + headers->len;
	while (p < end)
	{
		const char *eol = memchr(p, '\n', end - p);
		const char *lend = eol ? eol : end;

		if (lend - p >= 5 && strncmp(p, "HTTP/", 5) == 0)
			found = false;		/* a new response starts */
		else if ((size_t) (lend - p) > namelen && p[namelen] == ':' &&
				 strncasecmp(p, name, namelen) == 0)
		{
			const char *v = p + namelen + 1;
			const char *ve = lend;
			size_t		n;

			while (v < ve && (*v == ' ' || *v == '\t'))
				v++;
			while (ve > v && (ve[-1] == '\r' || ve[-1] == ' ' ||
							  ve[-1] == '\t'))
				ve--;
			n = (size_t) (ve - v);
			if (n >= outlen)
				n = outlen - 1;
			memcpy(out, v, n);
			out[n] = '\0';
			found = true;
		}
		p = lend + 1;
	}
	return found;
}

/*
 * Set easy up to POST body (len bytes) with headers to url, speaking only
 * http or https, and apply notify_http_common().  The caller keeps body
 * and headers alive for the transfer.
 */
void
notify_http_post(CURL *easy, const char *url, const char *body, size_t len,
				 struct curl_slist *headers, json_t *config)
{
	curl_easy_setopt(easy, CURLOPT_URL, url);
	curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(easy, CURLOPT_POST, 1L);
	curl_easy_setopt(easy, CURLOPT_POSTFIELDS, body);
	curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t) len);
	curl_easy_setopt(easy, CURLOPT_HTTPHEADER, headers);
	notify_http_common(easy, config);
}
