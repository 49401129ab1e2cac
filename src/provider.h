/*-------------------------------------------------------------------------
 *
 * provider.h
 *	  The contract between the delivery engine and one provider kind.
 *
 * This header, the engine (engine.c), the providers (apns.c, fcm.c,
 * webpush.c, twilio.c, smtp.c, webhook.c) and the crypto helpers are plain
 * C on top of libcurl, jansson and OpenSSL: they include no PostgreSQL
 * header, never palloc and never ereport.  That keeps them usable outside
 * the server (unit tests, fuzzers, valgrind) and means a provider can never
 * longjmp out of a transfer and leak a curl handle.  The PostgreSQL side
 * (worker.c) turns outbox rows into NotifyDelivery structs and the
 * outcomes back into rows.
 *
 * Life of one delivery:
 *	 worker fills the input fields
 *	 -> ops->prepare() builds the request on d->easy (URL, headers, body)
 *	 -> engine runs the transfer (many at once, one curl multi handle)
 *	 -> ops->finish() reads d->http_status / d->response and sets the outcome
 *	 -> engine frees the per-delivery resources (headers, body, mime, rcpt,
 *		provider_data via release(), the response buffers; the easy handle
 *		goes back to the engine's pool): after notify_engine_run() only the
 *		outcome fields and http_status are meaningful
 *
 *-------------------------------------------------------------------------
 */
#ifndef NOTIFY_PROVIDER_H
#define NOTIFY_PROVIDER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <curl/curl.h>
#include <jansson.h>

/*
 * Inside the server, the postgres executable exports a SQL function named
 * json_object(), and the dynamic linker binds our calls to jansson's
 * json_object() to it.  Every file that includes this header therefore
 * creates objects through json_pack("{}"), which jansson resolves
 * internally.  (jansson's own internal calls are not affected.)
 */
static inline json_t *
notify_json_object(void)
{
	return json_pack("{}");
}
#define json_object() notify_json_object()

/* What happened to one delivery attempt. */
typedef enum NotifyOutcome
{
	NOTIFY_OUTCOME_SENT = 0,	/* accepted by the provider */
	NOTIFY_OUTCOME_RETRY,		/* transient: try again after backoff */
	NOTIFY_OUTCOME_FAILED		/* permanent: never retry */
} NotifyOutcome;

/* A growable byte buffer (malloc-based). */
typedef struct NotifyBuf
{
	char	   *data;			/* always NUL-terminated when non-NULL */
	size_t		len;
	size_t		cap;
} NotifyBuf;

#define NOTIFY_ERROR_LEN 512
#define NOTIFY_PROVIDER_ID_LEN 160

typedef struct NotifyDelivery
{
	/* ---- input, filled by the caller before prepare() ---- */
	int64_t		id;				/* outbox row id (idempotency, apns-id) */
	const char *channel;		/* "push", "sms", "email", "webhook" */
	const char *destination;	/* device token, subscription JSON, E.164
								 * phone, email address, or URL */
	const char *recipient;		/* the application's user id */
	json_t	   *message;		/* rendered template content (borrowed) */
	int			priority;		/* notify priority, -10 .. 10, 0 normal */
	int64_t		expires_at;		/* unix seconds; 0 = no expiry */
	int			attempt;		/* 1 for the first attempt */

	/* ---- transfer state, shared by engine and provider ---- */
	CURL	   *easy;			/* created by the engine before prepare() */
	struct curl_slist *headers; /* freed by the engine */
	char	   *body;			/* request body, malloc'd; freed by engine */
	size_t		body_len;
	curl_mime  *mime;			/* for SMTP; freed by the engine */
	struct curl_slist *rcpt;	/* SMTP recipients; freed by the engine */
	NotifyBuf	response;		/* response body, filled by the engine */
	NotifyBuf	response_headers;	/* raw response header lines */
	char		curl_error[CURL_ERROR_SIZE];
	long		http_status;	/* HTTP status or SMTP reply code; 0 = none */
	void	   *provider_data;	/* provider's own per-delivery state */

	/* ---- outcome, filled by finish() (or by the engine on failure) ---- */
	NotifyOutcome outcome;
	int			retry_after;	/* seconds the provider asked us to wait;
								 * -1 when it did not say */
	char		error[NOTIFY_ERROR_LEN];	/* why; never contains a secret */
	char		provider_id[NOTIFY_PROVIDER_ID_LEN];	/* provider's message
														 * id */
	bool		deactivate_device;	/* token/subscription is gone for good */
	bool		opt_out;		/* recipient opted out (SMS STOP) */
	int			segments;		/* SMS segments reported, 0 = unknown */
} NotifyDelivery;

/*
 * One provider kind.  "state" is whatever create() returns; it lives as
 * long as the worker (cached tokens, parsed keys) and is rebuilt when the
 * provider's configuration changes.
 */
typedef struct NotifyProviderOps
{
	const char *kind;			/* "apns", "fcm", "webpush", "twilio",
								 * "smtp", "webhook" */
	const char *channel;		/* the channel this kind delivers */

	/*
	 * Config keys whose values are secrets: never shown in a view, a log
	 * line or an error.  A dotted path names a key inside an object
	 * ("service_account.private_key").  NULL-terminated.
	 */
	const char *const *secret_keys;

	/*
	 * Top-level config keys this kind understands, besides the ones every
	 * kind takes ("endpoint", "ca_file", "h2c", "rate_limit");
	 * NULL-terminated.  Any other key is refused, so a misspelt setting is
	 * an error instead of being silently ignored.
	 */
	const char *const *config_keys;

	/*
	 * Validate a configuration.  Returns NULL when it is usable, else a
	 * malloc'd message saying what is wrong (no secret in it).  Must not
	 * touch the network.
	 */
	char	   *(*check_config) (json_t *config);

	/*
	 * Size in bytes of the payload this provider would send for a rendered
	 * message, and the provider's limit; used at send time to refuse an
	 * oversized push.  May be NULL (no limit).  Returns -1 and sets *err
	 * (malloc'd) when the message cannot be encoded.
	 */
	long		(*payload_size) (json_t *message, long *limit, char **err);

	/* Build per-worker state.  NULL and *err (malloc'd) on failure. */
	void	   *(*create) (json_t *config, char **err);

	/*
	 * Build the request for one delivery on d->easy.  Returns false and
	 * fills d->error / d->outcome when the delivery cannot be attempted
	 * (e.g. a malformed destination: FAILED; a token endpoint that is down:
	 * RETRY).
	 */
	bool		(*prepare) (void *state, NotifyDelivery *d);

	/*
	 * Classify a finished transfer.  rc is curl's result; when it is not
	 * CURLE_OK the engine has already marked the delivery RETRY with the
	 * curl error, and finish() may refine that.
	 */
	void		(*finish) (void *state, NotifyDelivery *d, CURLcode rc);

	/* Free d->provider_data, if the provider used it.  May be NULL. */
	void		(*release) (void *state, NotifyDelivery *d);

	/* Free the per-worker state. */
	void		(*destroy) (void *state);

	/*
	 * True while the next batch must start with one request alone (APNS
	 * with token auth allows one stream until a request succeeded).  May
	 * be NULL.
	 */
	bool		(*needs_warmup) (void *state);
} NotifyProviderOps;

/* providers.c: the registry of kinds. */
extern const NotifyProviderOps *notify_provider_lookup(const char *kind);
extern const char *const *notify_provider_kinds(void);

/* Per-kind operation tables, defined in each provider's file. */
extern const NotifyProviderOps notify_apns_ops;
extern const NotifyProviderOps notify_fcm_ops;
extern const NotifyProviderOps notify_webpush_ops;
extern const NotifyProviderOps notify_twilio_ops;
extern const NotifyProviderOps notify_smtp_ops;
extern const NotifyProviderOps notify_webhook_ops;

/* ----------------------------------------------------------------
 * Helpers shared by the providers (providers.c)
 * ----------------------------------------------------------------
 */

/* Response bodies and headers beyond this many bytes are discarded. */
#define NOTIFY_RESPONSE_CAP (64 * 1024)

/* Bytes of a response body quoted in an error message, at most. */
#define NOTIFY_SNIPPET_MAX	200

/* Buffers. */

/* Append len bytes to buf, NUL-terminated (dropped when out of memory). */
extern void notify_buf_append(NotifyBuf *buf, const char *data, size_t len);
/* Free buf's data and leave it empty. */
extern void notify_buf_free(NotifyBuf *buf);
/* Append value URL-escaped by curl; false when curl cannot escape it. */
extern bool notify_buf_append_escaped(CURL *easy, NotifyBuf *buf,
									  const char *value);
/* curl write/header callback into a NotifyBuf, up to NOTIFY_RESPONSE_CAP. */
extern size_t notify_buf_write_cb(char *ptr, size_t size, size_t nmemb,
								  void *userdata);
/* The buffer parsed as a JSON object (a new reference), or NULL. */
extern json_t *notify_buf_json_object(const NotifyBuf *buf);

/* Strings, configs and messages. */

/* printf into a malloc'd string (at most NOTIFY_ERROR_LEN - 1 bytes). */
extern char *notify_strdupf(const char *fmt,...)
			__attribute__((format(printf, 1, 2)));
/* obj[key] when it is a string (maybe empty), else NULL. */
extern const char *notify_json_string(json_t *obj, const char *key);
/* obj[key] when it is a non-empty string, else NULL. */
extern const char *notify_json_nonempty(json_t *obj, const char *key);
/* A push message string field, NULL if unset; false and *err if no string. */
extern bool notify_msg_str(json_t *message, const char *key, const char **out,
						   char **err);
/* A push message flag: true, 1, "true" or "1" set it. */
extern bool notify_msg_flag(json_t *message, const char *key);
/* NULL when every one of keys in config is a string, else a complaint. */
extern char *notify_check_string_keys(json_t *config, const char *kind,
									  const char *const *keys);
/* An http:// or https:// URL with something after the scheme. */
extern bool notify_is_http_url(const char *s);
/* The endpoint without trailing slashes, then the formatted path; malloc'd. */
extern char *notify_endpoint_url(const char *endpoint, const char *fmt,...)
			__attribute__((format(printf, 2, 3)));

/* Requests. */

/*
 * Append one formatted header line ("Name: value") to *list.  Returns
 * false (and leaves *list as it was) when out of memory.
 */
extern bool notify_add_header(struct curl_slist **list, const char *fmt,...)
			__attribute__((format(printf, 2, 3)));

/*
 * Settings from the provider's config that every HTTP provider applies in
 * prepare(): "ca_file" (CURLOPT_CAINFO) and TLS 1.2 as the floor.  The
 * engine itself sets timeouts, CURLOPT_PIPEWAIT, the HTTP version (HTTP/2
 * over TLS by ALPN; prior knowledge for http:// when h2c is on), the write
 * and header callbacks and the error buffer.
 */
extern void notify_http_common(CURL *easy, json_t *config);

/* A POST of body with headers to url (http/https only), plus http_common. */
extern void notify_http_post(CURL *easy, const char *url, const char *body,
							 size_t len, struct curl_slist *headers,
							 json_t *config);

/* Answers and outcomes. */

/* Retry classification shared by HTTP providers: 408, 425, 429, 5xx. */
extern bool notify_http_status_transient(long status);

/*
 * Parse Retry-After (delta seconds or HTTP date) from the response headers
 * of the last response: seconds from now, clamped to 0 .. 86400; -1 when
 * absent or unparseable.
 */
extern int	notify_parse_retry_after(const NotifyBuf *headers);

/* A header's trimmed value in the last response, into out; false if absent. */
extern bool notify_response_header(const NotifyBuf *headers, const char *name,
								   char *out, size_t outlen);

/*
 * Copy at most srclen bytes of a service's answer into dst (dstlen bytes,
 * always NUL-terminated) for an error message: control characters and
 * non-ASCII bytes become '?' or a space, so the text is safe in a log line
 * and valid UTF-8 in an outbox row.
 */
extern void notify_printable_copy(char *dst, size_t dstlen, const char *src,
								  size_t srclen);

/* The first NOTIFY_SNIPPET_MAX bytes of a response body, made printable. */
extern void notify_response_snippet(char *dst, size_t dstlen,
									const NotifyBuf *buf);

/* Set the outcome of a delivery and the reason for it. */
extern void notify_set_error(NotifyDelivery *d, NotifyOutcome outcome,
							 const char *fmt,...)
			__attribute__((format(printf, 3, 4)));

/* Engine (engine.c). */
typedef struct NotifyEngine NotifyEngine;

typedef struct NotifyEngineOptions
{
	long		timeout_ms;		/* whole-request timeout */
	long		connect_timeout_ms;
	long		max_host_connections;	/* 0 = libcurl default */
	long		max_concurrent;	/* transfers in flight at once */
	bool		h2c;			/* plaintext http:// URLs: HTTP/2 prior
								 * knowledge (test servers) */
	/*
	 * Called between curl polls (at least every 100 ms) so the caller can
	 * service its latch.  Must not longjmp (no ereport, no
	 * CHECK_FOR_INTERRUPTS).  A true answer is noted and the hook is not
	 * called again in that run, but the batch still completes: requests in
	 * flight may already have been accepted.  May be NULL.
	 */
	bool		(*interrupted) (void *arg);
	void	   *interrupted_arg;
} NotifyEngineOptions;

extern NotifyEngine *notify_engine_create(const NotifyEngineOptions *opts);

/*
 * Deliver n deliveries concurrently through one provider; returns when all
 * have an outcome.  Connections stay open for the next call.
 */
extern void notify_engine_run(NotifyEngine *engine,
							  const NotifyProviderOps *ops, void *state,
							  NotifyDelivery *deliveries, int n);
extern void notify_engine_destroy(NotifyEngine *engine);

#endif							/* NOTIFY_PROVIDER_H */
