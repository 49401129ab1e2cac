/*-------------------------------------------------------------------------
 *
 * deliver.c
 *	  A command-line driver for the delivery engine and one provider, for
 *	  running providers end to end against the simulators in test/sim/
 *	  (and under valgrind or ASan) without a database.
 *
 *	  deliver KIND CONFIG.json MESSAGE.json DEST [N]
 *
 * Sends N (default 1) copies of the rendered MESSAGE to DEST through a
 * provider of KIND configured by CONFIG, in one engine run, and prints
 * one line per delivery:
 *
 *	  <id> <SENT|RETRY|FAILED> http=<status> retry_after=<s> segments=<n>
 *	  deactivate=<0|1> opt_out=<0|1> provider_id=<id> error=<text>
 *
 * then a summary line "deliver: S sent, R retry, F failed".  The exit
 * status is 0 when every delivery was sent, 2 otherwise, 1 on a usage or
 * setup error.
 *
 * Environment (all optional):
 *	  NOTIFY_H2C=1			HTTP/2 prior knowledge for http:// URLs
 *	  NOTIFY_BATCHES=k		run the N deliveries k times on one engine
 *							(connections are reused between runs)
 *	  NOTIFY_CONCURRENCY=c	transfers in flight at once (default 100)
 *	  NOTIFY_HOST_CONNS=h	CURLMOPT_MAX_HOST_CONNECTIONS (default 0)
 *	  NOTIFY_TIMEOUT_MS=t	per-request timeout (default 10000)
 *	  NOTIFY_PRIORITY=p		notify priority, -10 .. 10 (default 0)
 *	  NOTIFY_EXPIRES_IN=s	expires_at = now + s
 *	  NOTIFY_ID_BASE=b		first outbox id (default 1)
 *	  NOTIFY_RECIPIENT=r	recipient (user id; default "user-1")
 *	  NOTIFY_INTERRUPT_AFTER=k	an "interrupted" hook that answers true
 *							from its k-th call on (the batch must still
 *							complete); its call count is printed
 *
 * Owns nothing but this command: it is test tooling, not part of the
 * extension.
 *
 *-------------------------------------------------------------------------
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "provider.h"

static long
env_long(const char *name, long dflt)
{
	const char *v = getenv(name);

	return (v != NULL && *v != '\0') ? strtol(v, NULL, 10) : dflt;
}

static const char *
outcome_name(NotifyOutcome o)
{
	switch (o)
	{
		case NOTIFY_OUTCOME_SENT:
			return "SENT";
		case NOTIFY_OUTCOME_RETRY:
			return "RETRY";
		case NOTIFY_OUTCOME_FAILED:
			return "FAILED";
	}
	return "?";
}

/* The engine's "interrupted" hook: true from the k-th call on. */
static long interrupt_calls;
static long interrupt_after;

static bool
interrupted(void *arg)
{
	interrupt_calls++;
	return interrupt_calls >= interrupt_after;
}

static double
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000.0 + ts.tv_nsec / 1e6;
}

int
main(int argc, char **argv)
{
	const NotifyProviderOps *ops;
	json_t	   *config = NULL;
	json_t	   *message = NULL;
	json_error_t jerr;
	char	   *err = NULL;
	void	   *state = NULL;
	NotifyEngine *engine = NULL;
	NotifyEngineOptions opts;
	NotifyDelivery *deliveries = NULL;
	int			n = 1;
	long		batches;
	long		b;
	long		id_base;
	long		sent = 0,
				retry = 0,
				failed = 0;
	int			status = 1;
	int			i;
	double		t0;
	const char *recipient;

	if (argc < 5 || argc > 6)
	{
		fprintf(stderr, "usage: %s KIND CONFIG.json MESSAGE.json DEST [N]\n",
				argv[0]);
		return 1;
	}
	if (argc == 6)
		n = atoi(argv[5]);
	if (n < 1)
		n = 1;

	ops = notify_provider_lookup(argv[1]);
	if (ops == NULL)
	{
		fprintf(stderr, "deliver: unknown provider kind \"%s\"\n", argv[1]);
		return 1;
	}

	if (curl_global_init(CURL_GLOBAL_ALL) != CURLE_OK)
	{
		fprintf(stderr, "deliver: curl_global_init failed\n");
		return 1;
	}

	config = json_load_file(argv[2], 0, &jerr);
	if (config == NULL)
	{
		fprintf(stderr, "deliver: %s: %s (line %d)\n", argv[2], jerr.text,
				jerr.line);
		goto done;
	}
	message = json_load_file(argv[3], 0, &jerr);
	if (message == NULL)
	{
		fprintf(stderr, "deliver: %s: %s (line %d)\n", argv[3], jerr.text,
				jerr.line);
		goto done;
	}

	err = ops->check_config(config);
	if (err != NULL)
	{
		fprintf(stderr, "deliver: config: %s\n", err);
		goto done;
	}
	if (ops->payload_size != NULL)
	{
		long		limit = 0;
		long		size = ops->payload_size(message, &limit, &err);

		if (size < 0)
		{
			fprintf(stderr, "deliver: message: %s\n", err ? err : "?");
			goto done;
		}
		printf("payload: %ld bytes (limit %ld)\n", size, limit);
		if (limit > 0 && size > limit)
		{
			fprintf(stderr, "deliver: message too large\n");
			goto done;
		}
	}

	state = ops->create(config, &err);
	if (state == NULL)
	{
		fprintf(stderr, "deliver: create: %s\n", err ? err : "?");
		goto done;
	}

	memset(&opts, 0, sizeof(opts));
	opts.timeout_ms = env_long("NOTIFY_TIMEOUT_MS", 10000);
	opts.connect_timeout_ms = 5000;
	opts.max_concurrent = env_long("NOTIFY_CONCURRENCY", 100);
	opts.max_host_connections = env_long("NOTIFY_HOST_CONNS", 0);
	opts.h2c = env_long("NOTIFY_H2C", 0) != 0;
	interrupt_after = env_long("NOTIFY_INTERRUPT_AFTER", 0);
	if (interrupt_after > 0)
		opts.interrupted = interrupted;
	engine = notify_engine_create(&opts);
	if (engine == NULL)
	{
		fprintf(stderr, "deliver: cannot create the engine\n");
		goto done;
	}

	deliveries = calloc(n, sizeof(NotifyDelivery));
	if (deliveries == NULL)
	{
		fprintf(stderr, "deliver: out of memory\n");
		goto done;
	}

	batches = env_long("NOTIFY_BATCHES", 1);
	id_base = env_long("NOTIFY_ID_BASE", 1);
	recipient = getenv("NOTIFY_RECIPIENT") ? getenv("NOTIFY_RECIPIENT") : "user-1";
	t0 = now_ms();
	for (b = 0; b < batches; b++)
	{
		for (i = 0; i < n; i++)
		{
			NotifyDelivery *d = &deliveries[i];
			long		expires_in = env_long("NOTIFY_EXPIRES_IN", 0);

			memset(d, 0, sizeof(*d));
			d->id = id_base + b * n + i;
			d->channel = ops->channel;
			d->destination = argv[4];
			d->recipient = recipient;
			d->message = message;
			d->priority = (int) env_long("NOTIFY_PRIORITY", 0);
			d->expires_at = expires_in > 0 ? (int64_t) time(NULL) + expires_in : 0;
			d->attempt = 1;
		}

		notify_engine_run(engine, ops, state, deliveries, n);

		for (i = 0; i < n; i++)
		{
			NotifyDelivery *d = &deliveries[i];

			printf("%lld %s http=%ld retry_after=%d segments=%d deactivate=%d opt_out=%d provider_id=%s error=%s\n",
				   (long long) d->id, outcome_name(d->outcome), d->http_status,
				   d->retry_after, d->segments, d->deactivate_device ? 1 : 0,
				   d->opt_out ? 1 : 0, d->provider_id, d->error);
			if (d->outcome == NOTIFY_OUTCOME_SENT)
				sent++;
			else if (d->outcome == NOTIFY_OUTCOME_RETRY)
				retry++;
			else
				failed++;
		}
	}
	if (interrupt_after > 0)
		printf("interrupted hook: %ld calls\n", interrupt_calls);
	printf("deliver: %ld sent, %ld retry, %ld failed in %.0f ms\n",
		   sent, retry, failed, now_ms() - t0);
	status = (retry == 0 && failed == 0) ? 0 : 2;

done:
	free(err);
	free(deliveries);
	notify_engine_destroy(engine);
	if (state != NULL)
		ops->destroy(state);
	json_decref(message);
	json_decref(config);
	curl_global_cleanup();
	return status;
}
