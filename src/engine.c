/*-------------------------------------------------------------------------
 *
 * engine.c
 *	  Runs a batch of deliveries concurrently through one curl multi handle.
 *
 * One engine per worker.  Its multi handle lives as long as the engine, so
 * the connections it opened (HTTP/2 to APNS and FCM, SMTP sessions) stay
 * open between batches and later batches multiplex onto them.  Finished
 * easy handles are reset and kept in a small pool for the next transfer.
 *
 * The engine owns the transfer: it creates the easy handle, applies the
 * settings every transfer shares (timeouts, HTTP version, PIPEWAIT, the
 * response callbacks), lets the provider build the request (prepare),
 * drives the transfers, lets the provider classify the answer (finish)
 * and frees everything the delivery held: request headers, body, mime,
 * recipients, the provider's per-delivery data and the response buffers.
 * After notify_engine_run() returns only the outcome fields of each
 * delivery are meaningful.
 *
 * What it deliberately does not do: speak any provider's protocol, touch
 * the database, or initialise libcurl.  curl_global_init(CURL_GLOBAL_ALL)
 * is the caller's job, once per process before the first engine is
 * created (the worker does it at start; test/unit/deliver.c too).
 *
 * HTTP/2 health: libcurl checks a pooled connection before reusing it;
 * curl_easy_upkeep() only acts on an easy handle's private connection
 * cache, not on a multi handle's, so the engine sends no PINGs of its own
 * and relies on TCP keepalive and libcurl's dead-connection check.
 *
 *-------------------------------------------------------------------------
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "provider.h"

/* Longest curl_multi_poll wait, so "interrupted" is consulted often. */
#define POLL_MS				100

/* Streams per HTTP/2 connection we allow ourselves (libcurl's default). */
#define MAX_STREAMS			100L

#define DEFAULT_CONCURRENT	100

struct NotifyEngine
{
	NotifyEngineOptions opts;
	CURLM	   *multi;
	CURL	  **pool;			/* idle easy handles, already reset */
	int			npool;
	int			poolcap;
	bool		h2c_no_reuse;	/* libcurl < 8.0.0: see set_h2c() */

	/*
	 * Whether the provider answered over HTTP/2.  Until it has, only as many
	 * transfers as there are connections are started: CURLOPT_TIMEOUT_MS
	 * also counts the time a transfer waits for a free connection, so the
	 * tail of a large batch queued behind HTTP/1.1 connections would time
	 * out (and be sent twice) against a slow server.
	 */
	bool		multiplexing;
};

NotifyEngine *
notify_engine_create(const NotifyEngineOptions *opts)
{
	NotifyEngine *engine = calloc(1, sizeof(NotifyEngine));
	long		maxconnects;

	if (engine == NULL)
		return NULL;
	engine->opts = *opts;
	engine->h2c_no_reuse = curl_version_info(CURLVERSION_NOW)->version_num < 0x080000;
	if (engine->opts.max_concurrent <= 0)
		engine->opts.max_concurrent = DEFAULT_CONCURRENT;

	engine->multi = curl_multi_init();
	if (engine->multi == NULL)
	{
		free(engine);
		return NULL;
	}

	curl_multi_setopt(engine->multi, CURLMOPT_PIPELINING, CURLPIPE_MULTIPLEX);
	curl_multi_setopt(engine->multi, CURLMOPT_MAX_CONCURRENT_STREAMS,
					  MAX_STREAMS);
	if (engine->opts.max_host_connections > 0)
		curl_multi_setopt(engine->multi, CURLMOPT_MAX_HOST_CONNECTIONS,
						  engine->opts.max_host_connections);

	/*
	 * By default the connection cache holds four connections per easy
	 * handle currently added, so it shrinks as a batch drains and the last
	 * transfers would close connections we want for the next batch (SMTP
	 * opens one per concurrent message).  Size it for a full batch.
	 */
	maxconnects = engine->opts.max_concurrent;
	if (maxconnects < 8)
		maxconnects = 8;
	if (engine->opts.max_host_connections > maxconnects)
		maxconnects = engine->opts.max_host_connections;
	curl_multi_setopt(engine->multi, CURLMOPT_MAXCONNECTS, maxconnects);

	engine->poolcap = (int) engine->opts.max_concurrent;
	if (engine->poolcap > 256)
		engine->poolcap = 256;
	engine->pool = calloc(engine->poolcap, sizeof(CURL *));
	if (engine->pool == NULL)
	{
		curl_multi_cleanup(engine->multi);
		free(engine);
		return NULL;
	}
	return engine;
}

static CURL *
pool_get(NotifyEngine *engine)
{
	if (engine->npool > 0)
		return engine->pool[--engine->npool];
	return curl_easy_init();
}

static void
pool_put(NotifyEngine *engine, CURL *easy)
{
	if (easy == NULL)
		return;
	if (engine->npool < engine->poolcap)
	{
		curl_easy_reset(easy);
		engine->pool[engine->npool++] = easy;
	}
	else
		curl_easy_cleanup(easy);
}

/*
 * Copy a curl error buffer, removing the user:password@ part of any URL in
 * it so that no credential ends up in an outbox row.
 */
static void
copy_redacted(char *dst, size_t dstlen, const char *src)
{
	size_t		o = 0;
	const char *p = src;

	while (*p && o + 1 < dstlen)
	{
		if (strncmp(p, "://", 3) == 0)
		{
			const char *q = p + 3;
			const char *at = NULL;

			/* an '@' before the end of the authority means userinfo */
			while (*q && *q != '/' && *q != ' ' && *q != '?' && *q != '#')
			{
				if (*q == '@')
					at = q;
				q++;
			}
			if (at != NULL)
			{
				const char *mark = "://***@";
				size_t		i;

				for (i = 0; mark[i] && o + 1 < dstlen; i++)
					dst[o++] = mark[i];
				p = at + 1;
				continue;
			}
		}
		dst[o++] = *p++;
	}
	dst[o] = '\0';
}

/* Reset what the engine owns in a delivery before its transfer. */
static void
delivery_init(NotifyDelivery *d)
{
	d->easy = NULL;
	d->headers = NULL;
	d->body = NULL;
	d->body_len = 0;
	d->mime = NULL;
	d->rcpt = NULL;
	memset(&d->response, 0, sizeof(d->response));
	memset(&d->response_headers, 0, sizeof(d->response_headers));
	d->curl_error[0] = '\0';
	d->http_status = 0;
	d->provider_data = NULL;

	d->outcome = NOTIFY_OUTCOME_RETRY;
	d->retry_after = -1;
	d->error[0] = '\0';
	d->provider_id[0] = '\0';
	d->deactivate_device = false;
	d->opt_out = false;
	d->segments = 0;
}

/* Free everything a delivery holds except its outcome. */
static void
delivery_cleanup(NotifyEngine *engine, const NotifyProviderOps *ops,
				 void *state, NotifyDelivery *d)
{
	if (ops->release)
		ops->release(state, d);
	d->provider_data = NULL;
	curl_slist_free_all(d->headers);
	d->headers = NULL;
	free(d->body);
	d->body = NULL;
	d->body_len = 0;
	curl_slist_free_all(d->rcpt);
	d->rcpt = NULL;

	/*
	 * The mime structure is referenced by the easy handle (MIMEPOST):
	 * reset the handle first, then free the mime.
	 */
	pool_put(engine, d->easy);
	d->easy = NULL;
	curl_mime_free(d->mime);
	d->mime = NULL;

	notify_buf_free(&d->response);
	notify_buf_free(&d->response_headers);
}

/* The options every transfer shares; the provider sets the rest. */
static void
set_common_options(NotifyEngine *engine, NotifyDelivery *d)
{
	CURL	   *easy = d->easy;

	curl_easy_setopt(easy, CURLOPT_PRIVATE, (void *) d);
	curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, notify_buf_write_cb);
	curl_easy_setopt(easy, CURLOPT_WRITEDATA, (void *) &d->response);
	curl_easy_setopt(easy, CURLOPT_HEADERFUNCTION, notify_buf_write_cb);
	curl_easy_setopt(easy, CURLOPT_HEADERDATA, (void *) &d->response_headers);
	curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, d->curl_error);
	if (engine->opts.timeout_ms > 0)
		curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, engine->opts.timeout_ms);
	if (engine->opts.connect_timeout_ms > 0)
		curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT_MS,
						 engine->opts.connect_timeout_ms);
	curl_easy_setopt(easy, CURLOPT_PIPEWAIT, 1L);
	curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(easy, CURLOPT_HTTP_VERSION,
					 (long) CURL_HTTP_VERSION_2TLS);
	curl_easy_setopt(easy, CURLOPT_TCP_KEEPALIVE, 1L);
	curl_easy_setopt(easy, CURLOPT_TCP_KEEPIDLE, 30L);
	curl_easy_setopt(easy, CURLOPT_TCP_KEEPINTVL, 15L);
}

/*
 * Plaintext h2c test servers need HTTP/2 by prior knowledge.  The URL is
 * set by prepare(), so this runs after it; CURLINFO_EFFECTIVE_URL reports
 * the URL set so far.
 *
 * libcurl before 8.0.0 breaks a reused prior-knowledge connection: it
 * layers HTTP/2 onto it a second time and the next stream fails with
 * "Error in the HTTP2 framing layer" (curl issue #10634, fixed by PR
 * #10643 in 8.0.0; Debian 12 ships 7.88.1).  There every h2c transfer
 * gets a connection of its own: correct, but not multiplexed.  h2c is for
 * test servers only; TLS (ALPN) connections are unaffected.
 */
static void
set_h2c(NotifyEngine *engine, NotifyDelivery *d)
{
	char	   *url = NULL;

	if (!engine->opts.h2c)
		return;
	if (curl_easy_getinfo(d->easy, CURLINFO_EFFECTIVE_URL, &url) == CURLE_OK &&
		url != NULL && strncasecmp(url, "http://", 7) == 0)
	{
		curl_easy_setopt(d->easy, CURLOPT_HTTP_VERSION,
						 (long) CURL_HTTP_VERSION_2_PRIOR_KNOWLEDGE);
		if (engine->h2c_no_reuse)
		{
			curl_easy_setopt(d->easy, CURLOPT_FRESH_CONNECT, 1L);
			curl_easy_setopt(d->easy, CURLOPT_FORBID_REUSE, 1L);
		}
	}
}

/*
 * Set up one delivery and add it to the multi handle.  Returns true when
 * its transfer is in flight; otherwise the delivery already has its
 * outcome and holds nothing.
 */
static bool
start_delivery(NotifyEngine *engine, const NotifyProviderOps *ops,
			   void *state, NotifyDelivery *d)
{
	CURLMcode	mc;

	delivery_init(d);
	d->easy = pool_get(engine);
	if (d->easy == NULL)
	{
		notify_set_error(d, NOTIFY_OUTCOME_RETRY, "curl: cannot create a handle");
		return false;
	}
	set_common_options(engine, d);

	if (!ops->prepare(state, d))
	{
		/* prepare() has set the outcome; make sure it says something */
		if (d->error[0] == '\0')
			notify_set_error(d, d->outcome, "%s: request not built", ops->kind);
		delivery_cleanup(engine, ops, state, d);
		return false;
	}
	set_h2c(engine, d);

	mc = curl_multi_add_handle(engine->multi, d->easy);
	if (mc != CURLM_OK)
	{
		notify_set_error(d, NOTIFY_OUTCOME_RETRY, "curl: %s",
						 curl_multi_strerror(mc));
		delivery_cleanup(engine, ops, state, d);
		return false;
	}
	return true;
}

/* A transfer is over: classify it and free what it held. */
static void
complete_delivery(NotifyEngine *engine, const NotifyProviderOps *ops,
				  void *state, NotifyDelivery *d, CURLcode rc)
{
	long		status = 0;

	if (curl_easy_getinfo(d->easy, CURLINFO_RESPONSE_CODE, &status) == CURLE_OK)
		d->http_status = status;

	if (rc != CURLE_OK)
	{
		char		detail[CURL_ERROR_SIZE];

		/*
		 * Every transport failure is transient for this message: timeouts,
		 * connection failures and the HTTP/2 stream and GOAWAY errors
		 * (CURLE_HTTP2, CURLE_HTTP2_STREAM, CURLE_RECV_ERROR,
		 * CURLE_SEND_ERROR).  finish() may make it permanent.
		 */
		/*
		 * The connection went away under the request (GOAWAY, a reset
		 * stream, a dropped socket): nothing says the provider is unwell,
		 * so the retry need not wait for the backoff.  A server that is
		 * down fails to connect instead, and does back off.
		 */
		if (rc == CURLE_HTTP2 || rc == CURLE_HTTP2_STREAM || rc == CURLE_SEND_ERROR ||
			rc == CURLE_RECV_ERROR || rc == CURLE_GOT_NOTHING)
			d->retry_after = 0;

		copy_redacted(detail, sizeof(detail), d->curl_error);
		if (detail[0] != '\0')
			notify_set_error(d, NOTIFY_OUTCOME_RETRY, "curl: %s (%s)",
							 curl_easy_strerror(rc), detail);
		else
			notify_set_error(d, NOTIFY_OUTCOME_RETRY, "curl: %s",
							 curl_easy_strerror(rc));
	}

	ops->finish(state, d, rc);

	curl_multi_remove_handle(engine->multi, d->easy);
	delivery_cleanup(engine, ops, state, d);
}

/* Abandon every transfer still in flight (the multi handle failed). */
static void
abort_inflight(NotifyEngine *engine, const NotifyProviderOps *ops,
			   void *state, NotifyDelivery *deliveries, int n,
			   const char *why)
{
	int			i;

	for (i = 0; i < n; i++)
	{
		NotifyDelivery *d = &deliveries[i];

		if (d->easy == NULL)
			continue;
		curl_multi_remove_handle(engine->multi, d->easy);
		notify_set_error(d, NOTIFY_OUTCOME_RETRY, "curl: %s", why);
		delivery_cleanup(engine, ops, state, d);
	}
}

/*
 * Transfers to keep in flight: what the connections can carry at once
 * (one request each over HTTP/1.1 and SMTP, MAX_STREAMS over HTTP/2),
 * never more than opts.max_concurrent.
 */
static long
in_flight_limit(NotifyEngine *engine, long maxc)
{
	long		conns = engine->opts.max_host_connections;
	long		carry;

	if (conns <= 0)
		return maxc;			/* no connection limit: nothing queues */
	carry = engine->multiplexing ? conns * MAX_STREAMS : conns;
	return carry < maxc ? carry : maxc;
}

/*
 * Deliver n deliveries through one provider.  At most opts.max_concurrent
 * transfers are in flight; more are added as others finish.
 *
 * When ops->needs_warmup() says so (APNS token auth until one request
 * has succeeded), transfers go one at a time, asking again after each,
 * and fan out once it says no.
 *
 * opts.interrupted is called on every turn of the loop (at least every
 * 100 ms, since no poll waits longer).  A true answer does not cut the
 * batch short: in-flight requests may already have been accepted by the
 * provider, so every delivery still gets its real outcome.  The hook
 * exists so that the caller can service its latch while waiting; once it
 * has said true it is not called again in this run.  It must not longjmp
 * (no ereport, no CHECK_FOR_INTERRUPTS), or the curl handles in flight
 * would leak.
 */
void
notify_engine_run(NotifyEngine *engine, const NotifyProviderOps *ops,
				  void *state, NotifyDelivery *deliveries, int n)
{
	int			next = 0;
	int			inflight = 0;
	bool		warming;
	bool		interrupted = false;
	long		maxc = engine->opts.max_concurrent;

	/* nothing of a delivery's is live before it starts */
	for (next = 0; next < n; next++)
		deliveries[next].easy = NULL;
	next = 0;

	/*
	 * A provider with a warm-up rule always starts a batch with one request
	 * alone: the connection may have been replaced since the last batch
	 * (GOAWAY), and only an answer tells whether the new one is warm.
	 */
	warming = ops->needs_warmup != NULL;

	for (;;)
	{
		long		limit = warming ? 1 : in_flight_limit(engine, maxc);
		int			running = 0;
		int			completed = 0;
		CURLMcode	mc;
		CURLMsg    *msg;
		int			queued;

		while (inflight < limit && next < n)
		{
			if (start_delivery(engine, ops, state, &deliveries[next]))
				inflight++;
			next++;
		}
		if (inflight == 0)
			break;				/* everything started has finished */

		mc = curl_multi_perform(engine->multi, &running);
		if (mc != CURLM_OK)
		{
			abort_inflight(engine, ops, state, deliveries, n,
						   curl_multi_strerror(mc));
			inflight = 0;
			continue;
		}

		while ((msg = curl_multi_info_read(engine->multi, &queued)) != NULL)
		{
			NotifyDelivery *d = NULL;

			if (msg->msg != CURLMSG_DONE)
				continue;
			curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **) &d);
			if (d == NULL)
			{
				/* not ours: cannot happen, but do not spin on it */
				curl_multi_remove_handle(engine->multi, msg->easy_handle);
				continue;
			}
			if (!engine->multiplexing)
			{
				long		version = 0;

				curl_easy_getinfo(msg->easy_handle, CURLINFO_HTTP_VERSION, &version);
				engine->multiplexing = version >= CURL_HTTP_VERSION_2_0 && !engine->h2c_no_reuse;
			}
			complete_delivery(engine, ops, state, d, msg->data.result);
			inflight--;
			completed++;
		}

		/* every turn, so that a busy batch still lets the caller in */
		if (!interrupted && engine->opts.interrupted != NULL)
			interrupted = engine->opts.interrupted(engine->opts.interrupted_arg);

		if (completed > 0)
		{
			if (warming)
				warming = ops->needs_warmup(state);
			continue;			/* start more before waiting */
		}

		mc = curl_multi_poll(engine->multi, NULL, 0, POLL_MS, NULL);
		if (mc != CURLM_OK)
		{
			abort_inflight(engine, ops, state, deliveries, n,
						   curl_multi_strerror(mc));
			inflight = 0;
		}
	}
}

/*
 * Free the engine: pooled handles, then the multi handle (which closes the
 * cached connections, sending QUIT to SMTP servers).  No transfer is ever
 * in flight here, since notify_engine_run() always finishes its batch.
 */
void
notify_engine_destroy(NotifyEngine *engine)
{
	int			i;

	if (engine == NULL)
		return;
	for (i = 0; i < engine->npool; i++)
		curl_easy_cleanup(engine->pool[i]);
	free(engine->pool);
	curl_multi_cleanup(engine->multi);
	free(engine);
}
