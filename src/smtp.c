/*-------------------------------------------------------------------------
 *
 * smtp.c
 *	  The "smtp" provider: email through an SMTP submission server, with
 *	  libcurl's SMTP client.
 *
 * One message per delivery: MAIL FROM the configured address, RCPT TO the
 * destination, DATA a MIME message built with curl_mime:
 *	 Date, Message-ID, From, To, Reply-To, Subject (RFC 2047 when not
 *	 ASCII), MIME-Version, List-Unsubscribe (+ RFC 8058 one-click POST)
 *	 multipart/alternative: text/plain (quoted-printable) first,
 *	 text/html (base64) last -- the last part is the preferred one.
 *
 * TLS: "starttls" (default; smtp://host, port 587, STARTTLS required),
 * "implicit" (smtps://host, port 465) or "none" (only to a server on
 * localhost, for a local relay or a test server).
 *
 * Connections: libcurl keeps finished SMTP sessions in the engine's multi
 * handle connection cache and sends the next message on the same session
 * (a new MAIL FROM), so a batch to one server costs one TCP+TLS handshake
 * and one AUTH per concurrent connection, not one per message; QUIT is
 * sent when the engine is destroyed.
 *
 * Replies: 2xx sent; 4xx retried (greylisting, mailbox busy); 5xx failed
 * (a bounce); authentication rejected and a server without STARTTLS are
 * configuration problems and fail the message.
 *
 * Owns only building the message and classifying the SMTP result.
 *
 *-------------------------------------------------------------------------
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "crypto.h"
#include "provider.h"

/* RFC 5322: lines SHOULD stay within 78 characters, MUST within 998. */
#define LINE_SOFT	78
#define LINE_HARD	998

typedef struct SmtpState
{
	json_t	   *config;			/* our reference */
	char	   *url;			/* scheme://host:port/<helo> */
	long		use_ssl;		/* CURLOPT_USE_SSL */
	const char *username;		/* NULL for no AUTH */
	const char *password;
	const char *from;
	const char *from_name;		/* NULL when none */
	const char *reply_to;		/* NULL when none */
	const char *unsubscribe_url;	/* NULL when none */
} SmtpState;

static const char *const smtp_secret_keys[] = {"password", NULL};

/*
 * A plain addr-spec we are willing to put in an envelope and a header:
 * printable ASCII, one '@', no spaces, brackets, quotes or separators.
 */
static bool
valid_address(const char *s)
{
	const char *at;
	const char *p;

	if (s == NULL || *s == '\0' || strlen(s) > 254)
		return false;
	at = strchr(s, '@');
	if (at == NULL || at == s || at[1] == '\0' || strchr(at + 1, '@') != NULL)
		return false;
	for (p = s; *p; p++)
	{
		unsigned char c = (unsigned char) *p;

		if (c <= 0x20 || c >= 0x7f || strchr("<>()[]\\,;:\"", c) != NULL)
			return false;
	}
	for (p = at + 1; *p; p++)
	{
		if (!isalnum((unsigned char) *p) && *p != '.' && *p != '-')
			return false;
	}
	return true;
}

static bool
valid_hostname(const char *s)
{
	if (s == NULL || *s == '\0' || strlen(s) > 253)
		return false;
	for (; *s; s++)
	{
		if (!isalnum((unsigned char) *s) && *s != '.' && *s != '-')
			return false;
	}
	return true;
}

static bool
is_local_host(const char *host)
{
	return strcasecmp(host, "localhost") == 0 ||
		strcmp(host, "127.0.0.1") == 0 ||
		strcmp(host, "[::1]") == 0 || strcmp(host, "::1") == 0;
}

/*
 * Parse and check the endpoint and tls settings; on success *url_out is
 * the malloc'd transfer URL (with the EHLO name as its path) and *use_ssl
 * the CURLOPT_USE_SSL level.  Returns NULL or a malloc'd complaint.
 */
static char *
smtp_endpoint(json_t *config, char **url_out, long *use_ssl)
{
	const char *endpoint = notify_json_nonempty(config, "endpoint");
	const char *tls = notify_json_nonempty(config, "tls");
	const char *helo = notify_json_nonempty(config, "helo");
	const char *from = notify_json_nonempty(config, "from");
	CURLU	   *u;
	char	   *scheme = NULL;
	char	   *host = NULL;
	char	   *port = NULL;
	char	   *user = NULL;
	char	   *problem = NULL;
	char		hostname[256];
	char		pathbuf[300];
	bool		implicit;

	if (endpoint == NULL)
		return strdup("smtp config needs \"endpoint\" (smtp://host:587 or smtps://host:465)");

	u = curl_url();
	if (u == NULL)
		return strdup("out of memory");
	if (curl_url_set(u, CURLUPART_URL, endpoint, 0) != CURLUE_OK ||
		curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
		curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK)
	{
		problem = strdup("smtp \"endpoint\" is not a valid URL");
		goto done;
	}
	if (curl_url_get(u, CURLUPART_USER, &user, 0) == CURLUE_OK)
	{
		problem = strdup("smtp \"endpoint\" must not contain credentials: use \"username\" and \"password\"");
		goto done;
	}

	if (strcmp(scheme, "smtps") == 0)
	{
		implicit = true;
		if (tls != NULL && strcmp(tls, "implicit") != 0)
		{
			problem = strdup("smtp: an smtps:// endpoint means \"tls\": \"implicit\"");
			goto done;
		}
	}
	else if (strcmp(scheme, "smtp") == 0)
	{
		implicit = false;
		if (tls == NULL || strcmp(tls, "starttls") == 0)
			*use_ssl = CURLUSESSL_ALL;
		else if (strcmp(tls, "none") == 0)
		{
			if (!is_local_host(host))
			{
				problem = strdup("smtp \"tls\": \"none\" is only allowed to localhost; use \"starttls\" or \"implicit\"");
				goto done;
			}
			*use_ssl = CURLUSESSL_NONE;
		}
		else if (strcmp(tls, "implicit") == 0)
		{
			problem = strdup("smtp \"tls\": \"implicit\" needs an smtps:// endpoint");
			goto done;
		}
		else
		{
			problem = strdup("smtp \"tls\" must be \"starttls\", \"implicit\" or \"none\"");
			goto done;
		}
	}
	else
	{
		problem = strdup("smtp \"endpoint\" must be an smtp:// or smtps:// URL");
		goto done;
	}
	if (implicit)
		*use_ssl = CURLUSESSL_ALL;

	if (curl_url_get(u, CURLUPART_PORT, &port, 0) != CURLUE_OK)
		curl_url_set(u, CURLUPART_PORT, implicit ? "465" : "587", 0);

	/* the URL's path is the name we give in EHLO */
	if (helo == NULL)
	{
		/* this host's name when it looks like one, else the sender's domain */
		if (gethostname(hostname, sizeof(hostname)) != 0)
			hostname[0] = '\0';
		hostname[sizeof(hostname) - 1] = '\0';
		if (strchr(hostname, '.') != NULL && valid_hostname(hostname))
			helo = hostname;
		else if (from != NULL && strchr(from, '@') != NULL &&
				 valid_hostname(strchr(from, '@') + 1))
			helo = strchr(from, '@') + 1;
		else
			helo = "localhost";
	}
	else if (!valid_hostname(helo))
	{
		problem = strdup("smtp \"helo\" must be a host name");
		goto done;
	}
	snprintf(pathbuf, sizeof(pathbuf), "/%s", helo);
	curl_url_set(u, CURLUPART_PATH, pathbuf, 0);
	curl_url_set(u, CURLUPART_QUERY, NULL, 0);
	curl_url_set(u, CURLUPART_FRAGMENT, NULL, 0);

	if (url_out != NULL)
	{
		char	   *url = NULL;

		if (curl_url_get(u, CURLUPART_URL, &url, 0) != CURLUE_OK)
			problem = strdup("smtp \"endpoint\" is not a valid URL");
		else
		{
			*url_out = strdup(url);
			curl_free(url);
			if (*url_out == NULL)
				problem = strdup("out of memory");
		}
	}

done:
	curl_free(scheme);
	curl_free(host);
	curl_free(port);
	curl_free(user);
	curl_url_cleanup(u);
	return problem;
}

static char *
smtp_check_config(json_t *config)
{
	static const char *const string_keys[] = {
		"endpoint", "tls", "username", "password", "from", "from_name",
		"reply_to", "unsubscribe_url", "helo", "ca_file", NULL
	};
	const char *s;
	long		use_ssl;
	char	   *problem;

	if (!json_is_object(config))
		return strdup("smtp config must be a JSON object");
	problem = notify_check_string_keys(config, "smtp", string_keys);
	if (problem != NULL)
		return problem;

	if (!valid_address(notify_json_nonempty(config, "from")))
		return strdup("smtp config needs \"from\", a plain address (name@example.com)");
	s = notify_json_nonempty(config, "reply_to");
	if (s != NULL && !valid_address(s))
		return strdup("smtp \"reply_to\" must be a plain address");
	if (notify_json_nonempty(config, "password") != NULL &&
		notify_json_nonempty(config, "username") == NULL)
		return strdup("smtp \"password\" needs \"username\"");
	s = notify_json_nonempty(config, "from_name");
	if (s != NULL && (strchr(s, '\r') || strchr(s, '\n')))
		return strdup("smtp \"from_name\" must be one line");
	s = notify_json_nonempty(config, "unsubscribe_url");
	if (s != NULL &&
		strncasecmp(s, "https://", 8) != 0 && strncasecmp(s, "http://", 7) != 0 &&
		strncasecmp(s, "mailto:", 7) != 0)
		return strdup("smtp \"unsubscribe_url\" must be an https:// or mailto: URL");
	if (s != NULL && strpbrk(s, "<> \r\n") != NULL)
		return strdup("smtp \"unsubscribe_url\" must not contain spaces or angle brackets");

	return smtp_endpoint(config, NULL, &use_ssl);
}

static void
smtp_destroy(void *arg)
{
	SmtpState  *st = (SmtpState *) arg;

	if (st == NULL)
		return;
	free(st->url);
	json_decref(st->config);
	free(st);
}

static void *
smtp_create(json_t *config, char **err)
{
	SmtpState  *st;

	*err = smtp_check_config(config);
	if (*err != NULL)
		return NULL;
	st = calloc(1, sizeof(SmtpState));
	if (st == NULL)
	{
		*err = strdup("out of memory");
		return NULL;
	}
	st->config = json_incref(config);
	*err = smtp_endpoint(config, &st->url, &st->use_ssl);
	if (*err != NULL)
	{
		smtp_destroy(st);
		return NULL;
	}
	st->username = notify_json_nonempty(config, "username");
	st->password = notify_json_nonempty(config, "password");
	st->from = notify_json_nonempty(config, "from");
	st->from_name = notify_json_nonempty(config, "from_name");
	st->reply_to = notify_json_nonempty(config, "reply_to");
	st->unsubscribe_url = notify_json_nonempty(config, "unsubscribe_url");
	return st;
}

/* Length of the UTF-8 character starting at s (1 for a stray byte). */
static size_t
utf8_char_len(const unsigned char *s, size_t avail)
{
	size_t		n;
	size_t		i;

	if (s[0] < 0x80)
		return 1;
	else if ((s[0] & 0xe0) == 0xc0)
		n = 2;
	else if ((s[0] & 0xf0) == 0xe0)
		n = 3;
	else if ((s[0] & 0xf8) == 0xf0)
		n = 4;
	else
		return 1;
	if (n > avail)
		return 1;
	for (i = 1; i < n; i++)
		if ((s[i] & 0xc0) != 0x80)
			return 1;
	return n;
}

/*
 * RFC 2047 "B" encoding of text as UTF-8 encoded-words, each at most 75
 * characters and split only between characters, joined by CRLF SPACE
 * (folding) so that every line stays within 76 characters.  prefix is the
 * length of what precedes the text on the first line ("Subject: ").
 */
static bool
encode_words(NotifyBuf *out, const char *text, size_t prefix)
{
	const unsigned char *s = (const unsigned char *) text;
	size_t		len = strlen(text);
	size_t		pos = 0;
	bool		first = true;

	while (pos < len)
	{
		/* room for base64 on this line: 76 - prefix - "=?UTF-8?B?" - "?=" */
		size_t		room = first ? (prefix + 12 < 76 - 16 ? 76 - prefix - 12 : 16) : 63;
		size_t		maxbytes = (room / 4) * 3;
		size_t		chunk = 0;
		char	   *b64;

		while (pos + chunk < len)
		{
			size_t		cl = utf8_char_len(s + pos + chunk, len - pos - chunk);

			if (chunk + cl > maxbytes && chunk > 0)
				break;
			chunk += cl;
		}
		b64 = notify_b64_encode(s + pos, chunk);
		if (b64 == NULL)
			return false;
		if (!first)
			notify_buf_append(out, "\r\n ", 3);
		notify_buf_append(out, "=?UTF-8?B?", 10);
		notify_buf_append(out, b64, strlen(b64));
		notify_buf_append(out, "?=", 2);
		free(b64);
		pos += chunk;
		first = false;
	}
	return out->data != NULL;
}

/*
 * Header text (an unstructured field body like Subject, or a display
 * name): control characters become spaces; printable ASCII stays as it
 * is, folded at spaces past 78 characters; anything else, or a word too
 * long to fold, is RFC 2047-encoded.  Returns malloc'd text or NULL.
 */
static char *
header_text(const char *text, size_t prefix, bool quote)
{
	NotifyBuf	clean = {0};
	NotifyBuf	out = {0};
	bool		ascii = true;
	size_t		i;

	notify_buf_append(&clean, "", 0);
	for (i = 0; text[i]; i++)
	{
		unsigned char c = (unsigned char) text[i];

		if (c < 0x20 || c == 0x7f)
			c = ' ';
		if (c >= 0x80)
			ascii = false;
		notify_buf_append(&clean, (const char *) &c, 1);
	}
	if (clean.data == NULL)
		return NULL;

	if (ascii && quote)
	{
		/* a display name: a quoted-string, escaping " and \ */
		notify_buf_append(&out, "\"", 1);
		for (i = 0; i < clean.len; i++)
		{
			if (clean.data[i] == '"' || clean.data[i] == '\\')
				notify_buf_append(&out, "\\", 1);
			notify_buf_append(&out, clean.data + i, 1);
		}
		notify_buf_append(&out, "\"", 1);
		if (out.data != NULL && prefix + out.len > LINE_HARD - 80)
		{
			notify_buf_free(&out);
			ascii = false;		/* absurdly long: encode and fold */
		}
	}
	else if (ascii)
	{
		/* fold before a space when a line would pass 78 characters */
		size_t		linelen = prefix;
		size_t		p = 0;

		while (p < clean.len && ascii)
		{
			size_t		seg = p;

			/* a segment: its leading spaces, then a word */
			while (seg < clean.len && clean.data[seg] == ' ')
				seg++;
			while (seg < clean.len && clean.data[seg] != ' ')
				seg++;
			if (p > 0 && clean.data[p] == ' ' && linelen + (seg - p) > LINE_SOFT)
			{
				notify_buf_append(&out, "\r\n", 2);
				linelen = 0;
			}
			notify_buf_append(&out, clean.data + p, seg - p);
			linelen += seg - p;
			if (linelen > LINE_HARD - 2)
				ascii = false;	/* one word too long to fold */
			p = seg;
		}
		if (!ascii)
			notify_buf_free(&out);
		else if (out.data == NULL)
			notify_buf_append(&out, "", 0);
	}

	if (!ascii)
	{
		if (!encode_words(&out, clean.data, prefix))
			notify_buf_free(&out);
	}
	notify_buf_free(&clean);
	return out.data;
}

/* RFC 5322 date-time in UTC, independent of the locale. */
static void
format_date(char *buf, size_t len, time_t t)
{
	static const char *const days[] = {
		"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"
	};
	static const char *const months[] = {
		"Jan", "Feb", "Mar", "Apr", "May", "Jun",
		"Jul", "Aug", "Sep", "Oct", "Nov", "Dec"
	};
	struct tm	tm;

	gmtime_r(&t, &tm);
	snprintf(buf, len, "%s, %02d %s %04d %02d:%02d:%02d +0000",
			 days[tm.tm_wday], tm.tm_mday, months[tm.tm_mon],
			 tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
}

/*
 * The unsubscribe URL for one recipient: {{recipient}} and {{email}}
 * replaced by the URL-escaped user id and address.  malloc'd or NULL.
 */
static char *
unsubscribe_for(CURL *easy, const char *tmpl, const char *recipient,
				const char *email)
{
	NotifyBuf	out = {0};
	const char *p = tmpl;

	notify_buf_append(&out, "", 0);
	while (*p)
	{
		const char *value = NULL;
		size_t		skip = 0;

		if (strncmp(p, "{{recipient}}", 13) == 0)
		{
			value = recipient ? recipient : "";
			skip = 13;
		}
		else if (strncmp(p, "{{email}}", 9) == 0)
		{
			value = email ? email : "";
			skip = 9;
		}
		if (value != NULL)
		{
			if (!notify_buf_append_escaped(easy, &out, value))
			{
				notify_buf_free(&out);
				return NULL;
			}
			p += skip;
		}
		else
			notify_buf_append(&out, p++, 1);
	}
	return out.data;
}

/* text with every line ending made CRLF; malloc'd or NULL. */
static char *
crlf_text(const char *text)
{
	NotifyBuf	out = {0};
	const char *p;

	notify_buf_append(&out, "", 0);
	for (p = text; *p; p++)
	{
		if (*p == '\n' && (p == text || p[-1] != '\r'))
			notify_buf_append(&out, "\r\n", 2);
		else
			notify_buf_append(&out, p, 1);
	}
	return out.data;
}

static bool
add_part(curl_mime *mime, const char *data, const char *type,
		 const char *encoder)
{
	curl_mimepart *part = curl_mime_addpart(mime);

	return part != NULL &&
		curl_mime_data(part, data, CURL_ZERO_TERMINATED) == CURLE_OK &&
		curl_mime_type(part, type) == CURLE_OK &&
		curl_mime_encoder(part, encoder) == CURLE_OK;
}

static bool
smtp_prepare(void *arg, NotifyDelivery *d)
{
	SmtpState  *st = (SmtpState *) arg;
	json_t	   *m = d->message;
	const char *subject = json_string_value(json_object_get(m, "subject"));
	const char *text = json_string_value(json_object_get(m, "text"));
	const char *html = json_string_value(json_object_get(m, "html"));
	const char *from = json_string_value(json_object_get(m, "from"));
	const char *from_name = json_string_value(json_object_get(m, "from_name"));
	const char *reply_to = json_string_value(json_object_get(m, "reply_to"));
	const char *domain;
	char		date[64];
	char		uuid[37];
	char		rnd[33];
	char	   *enc_subject = NULL;
	char	   *enc_name = NULL;
	char	   *unsub = NULL;
	char	   *plain = NULL;
	bool		ok = true;
	int			i,
				o;

	if (text != NULL && text[0] == '\0')
		text = NULL;
	if (html != NULL && html[0] == '\0')
		html = NULL;
	if (subject == NULL || (text == NULL && html == NULL))
	{
		notify_set_error(d, NOTIFY_OUTCOME_FAILED,
						 "smtp: message needs \"subject\" and \"text\" or \"html\"");
		return false;
	}
	if (!valid_address(d->destination))
	{
		notify_set_error(d, NOTIFY_OUTCOME_FAILED,
						 "smtp: destination is not a plain email address");
		return false;
	}
	if (from == NULL || from[0] == '\0')
		from = st->from;
	else if (!valid_address(from))
	{
		notify_set_error(d, NOTIFY_OUTCOME_FAILED,
						 "smtp: message \"from\" is not a plain email address");
		return false;
	}
	if (from_name == NULL || from_name[0] == '\0')
		from_name = st->from_name;
	if (reply_to == NULL || reply_to[0] == '\0')
		reply_to = st->reply_to;
	else if (!valid_address(reply_to))
	{
		notify_set_error(d, NOTIFY_OUTCOME_FAILED,
						 "smtp: message \"reply_to\" is not a plain email address");
		return false;
	}
	domain = strchr(from, '@') + 1;

	/* Message-ID: unique, and names the outbox row */
	notify_uuid_random(uuid);
	for (i = 0, o = 0; uuid[i] && o < 32; i++)
		if (uuid[i] != '-')
			rnd[o++] = uuid[i];
	rnd[o] = '\0';
	snprintf(d->provider_id, sizeof(d->provider_id), "<notify.%lld.%s@%s>",
			 (long long) d->id, rnd, domain);

	format_date(date, sizeof(date), time(NULL));
	enc_subject = header_text(subject, 9, false);
	if (from_name != NULL && from_name[0] != '\0')
		enc_name = header_text(from_name, 6, true);
	if (st->unsubscribe_url != NULL)
		unsub = unsubscribe_for(d->easy, st->unsubscribe_url, d->recipient,
								d->destination);
	ok = enc_subject != NULL &&
		(from_name == NULL || from_name[0] == '\0' || enc_name != NULL) &&
		(st->unsubscribe_url == NULL || unsub != NULL);

	ok = ok && notify_add_header(&d->headers, "Date: %s", date);
	ok = ok && notify_add_header(&d->headers, "Message-ID: %s", d->provider_id);
	if (enc_name != NULL)
		ok = ok && notify_add_header(&d->headers, "From: %s <%s>", enc_name, from);
	else
		ok = ok && notify_add_header(&d->headers, "From: %s", from);
	ok = ok && notify_add_header(&d->headers, "To: %s", d->destination);
	if (reply_to != NULL)
		ok = ok && notify_add_header(&d->headers, "Reply-To: %s", reply_to);
	ok = ok && notify_add_header(&d->headers, "Subject: %s", enc_subject);
	ok = ok && notify_add_header(&d->headers, "MIME-Version: 1.0");

	/*
	 * The top-level type of curl's mime tree: curl reads a Content-Type
	 * among the message headers as the root's type, adds the boundary
	 * itself and does not repeat our line.
	 */
	ok = ok && notify_add_header(&d->headers, "Content-Type: multipart/alternative");
	if (unsub != NULL)
	{
		ok = ok && notify_add_header(&d->headers, "List-Unsubscribe: <%s>", unsub);
		if (strncasecmp(unsub, "mailto:", 7) != 0)
			ok = ok && notify_add_header(&d->headers,
										 "List-Unsubscribe-Post: List-Unsubscribe=One-Click");
	}
	free(enc_subject);
	free(enc_name);
	free(unsub);

	/* the envelope: bounces go to the configured sender */
	if (ok)
	{
		char		rcpt[300];
		struct curl_slist *l;

		snprintf(rcpt, sizeof(rcpt), "<%s>", d->destination);
		l = curl_slist_append(NULL, rcpt);
		ok = l != NULL;
		d->rcpt = l;
	}

	/* the body: text/plain first, text/html last */
	if (ok)
	{
		d->mime = curl_mime_init(d->easy);
		ok = d->mime != NULL;
	}
	if (ok && text != NULL)
	{
		plain = crlf_text(text);
		ok = plain != NULL &&
			add_part(d->mime, plain, "text/plain; charset=UTF-8", "quoted-printable");
		free(plain);
	}
	if (ok && html != NULL)
		ok = add_part(d->mime, html, "text/html; charset=UTF-8", "base64");

	if (!ok)
	{
		d->provider_id[0] = '\0';
		notify_set_error(d, NOTIFY_OUTCOME_RETRY, "smtp: out of memory");
		return false;
	}

	{
		char		mailfrom[300];

		snprintf(mailfrom, sizeof(mailfrom), "<%s>", st->from);
		curl_easy_setopt(d->easy, CURLOPT_MAIL_FROM, mailfrom);
	}
	curl_easy_setopt(d->easy, CURLOPT_URL, st->url);
	curl_easy_setopt(d->easy, CURLOPT_PROTOCOLS_STR, "smtp,smtps");
	curl_easy_setopt(d->easy, CURLOPT_USE_SSL, st->use_ssl);
	if (st->username != NULL)
	{
		curl_easy_setopt(d->easy, CURLOPT_USERNAME, st->username);
		curl_easy_setopt(d->easy, CURLOPT_PASSWORD,
						 st->password ? st->password : "");
	}
	curl_easy_setopt(d->easy, CURLOPT_MAIL_RCPT, d->rcpt);
	curl_easy_setopt(d->easy, CURLOPT_HTTPHEADER, d->headers);
	curl_easy_setopt(d->easy, CURLOPT_MIMEPOST, d->mime);
	notify_http_common(d->easy, st->config);
	return true;
}

/* ": <curl's message>" or nothing, for an error line. */
static void
smtp_detail(char *out, size_t outlen, const char *curl_error)
{
	char		text[CURL_ERROR_SIZE];

	notify_printable_copy(text, sizeof(text), curl_error, strlen(curl_error));
	if (text[0] != '\0')
		snprintf(out, outlen, ": %s", text);
	else
		out[0] = '\0';
}

static void
smtp_finish(void *arg, NotifyDelivery *d, CURLcode rc)
{
	long		code = d->http_status;	/* the last SMTP reply code */
	char		detail[CURL_ERROR_SIZE + 2];

	if (rc == CURLE_OK)
	{
		d->outcome = NOTIFY_OUTCOME_SENT;
		d->error[0] = '\0';
		return;					/* provider_id is the Message-ID */
	}
	d->provider_id[0] = '\0';

	if (rc == CURLE_USE_SSL_FAILED && !(code >= 400 && code <= 499))
		notify_set_error(d, NOTIFY_OUTCOME_FAILED,
						 "smtp: server does not offer STARTTLS (set \"tls\" to \"implicit\" with an smtps:// endpoint?)");
	else if (rc == CURLE_LOGIN_DENIED && !(code >= 400 && code <= 499))
		notify_set_error(d, NOTIFY_OUTCOME_FAILED,
						 "smtp auth failed (%ld): check \"username\" and \"password\"",
						 code);
	else if (code >= 500 && code <= 599)
	{
		smtp_detail(detail, sizeof(detail), d->curl_error);
		notify_set_error(d, NOTIFY_OUTCOME_FAILED, "smtp %ld (bounce)%s",
						 code, detail);
	}
	else if (code >= 400 && code <= 499)
	{
		/* greylisting, a busy mailbox, a 454 to STARTTLS or AUTH */
		smtp_detail(detail, sizeof(detail), d->curl_error);
		notify_set_error(d, NOTIFY_OUTCOME_RETRY, "smtp %ld%s", code, detail);
	}
	/* else: connection trouble, the engine's RETRY stands */
}

/* Keys a smtp config may have, besides the common ones (provider.h). */
static const char *const smtp_config_keys[] = {
	"tls", "username", "password", "from", "from_name", "reply_to",
	"unsubscribe_url", "helo", NULL
};

const NotifyProviderOps notify_smtp_ops = {
	.kind = "smtp",
	.channel = "email",
	.secret_keys = smtp_secret_keys,
	.config_keys = smtp_config_keys,
	.check_config = smtp_check_config,
	.payload_size = NULL,
	.create = smtp_create,
	.prepare = smtp_prepare,
	.finish = smtp_finish,
	.release = NULL,
	.destroy = smtp_destroy,
	.needs_warmup = NULL,
};
