/*-------------------------------------------------------------------------
 *
 * providers.c
 *	  The registry of provider kinds and the small helpers every provider
 *	  shares: growable buffers, error formatting, the HTTP settings common
 *	  to all of them, retry classification and Retry-After parsing.
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
