/*-------------------------------------------------------------------------
 *
 * worker.c
 *	  A delivery worker: drains the outbox rows of one provider.
 *
 * The loop, one batch at a time:
 *
 *	 1. claim   (short transaction)  read the provider's row; claim up to
 *				notify.batch_size due rows, highest priority then oldest,
 *				FOR UPDATE SKIP LOCKED, marking them in flight with a lease;
 *				commit.
 *	 2. send    (no transaction)     hand the batch to the engine, which runs
 *				every request concurrently on one curl multi handle whose
 *				connections stay open between batches.
 *	 3. record  (short transaction)  finished rows move to notify.deliveries,
 *				retried rows get their next attempt time (backoff with jitter,
 *				or the provider's Retry-After) and an attempts row, dead
 *				tokens deactivate their device, an SMS STOP opts the recipient
 *				out; commit.
 *
 * No transaction is open during network I/O, so a slow provider holds back
 * no vacuum and no lock.  A worker killed in step 2 leaves its rows in
 * flight; they are claimed again when the lease runs out (or at once after
 * a crash restart, see launcher.c): delivery is at least once, and the
 * duplicates are bounded by one batch.
 *
 * SIGTERM is honoured between batches.  An ERROR inside a batch is logged,
 * the worker's curl state is rebuilt, and the loop goes on after a pause.
 *
 * This file owns the SQL of claiming and recording; the wire protocols live
 * in the provider files and the HTTP machinery in engine.c.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

/*
 * PostgreSQL declares a SQL function json_object() that jansson also
 * defines: hide PostgreSQL's name while its headers are read, and read
 * jansson (through provider.h) last.
 */
#define json_object pg_json_object

#include <math.h>

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "commands/extension.h"
#include "common/pg_prng.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "tcop/utility.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#undef json_object

#include "notify.h"
#include "provider.h"

/* The statements a worker runs, prepared once and kept. */
static const char *const provider_sql =
"SELECT kind, config::text, enabled, paused, updated_at "
"  FROM notify.providers WHERE name = $1";

static const char *const claim_sql =
"WITH c AS ("
"  SELECT o.id FROM notify.outbox o"
"   WHERE o.provider = $1 AND o.next_attempt_at <= now()"
"     AND NOT EXISTS (SELECT 1 FROM notify.providers p"
"                      WHERE p.name = $1 AND (p.paused OR NOT p.enabled))"
"     AND (o.lease_until IS NULL OR o.lease_until < now())"
"   ORDER BY o.priority DESC, o.next_attempt_at, o.id"
"   LIMIT $2"
"   FOR UPDATE OF o SKIP LOCKED)"
" UPDATE notify.outbox o"
"    SET status = 'inflight', attempts = o.attempts + 1,"
"        lease_until = now() + $3 * interval '1 millisecond'"
"   FROM c, notify.notifications n"
"  WHERE o.id = c.id AND n.id = o.notification_id"
" RETURNING o.id, o.channel, o.destination, o.attempts - o.attempt_base, o.priority,"
"           coalesce(floor(extract(epoch FROM o.expires_at))::int8, 0),"
"           coalesce(o.expires_at <= clock_timestamp(), false),"
"           n.recipient, (n.rendered -> o.channel)::text";

static const char *const finish_sql =
"WITH u AS ("
"  SELECT * FROM unnest($1::int8[], $2::text[], $3::text[], $4::int4[], $5::text[],"
"                       $6::timestamptz[], $7::int4[])"
"    AS u(id, status, err, pstatus, pmid, sent_at, segments)),"
" f AS ("
"  DELETE FROM notify.outbox o USING u WHERE o.id = u.id"
"  RETURNING o.id, o.notification_id, o.recipient_id, o.channel, o.provider,"
"            o.destination, o.device_id, o.priority, o.attempts, o.created_at,"
"            u.status, u.err, u.pstatus, u.pmid, u.sent_at, u.segments)"
" INSERT INTO notify.deliveries (id, notification_id, recipient_id, channel, provider,"
"   destination, device_id, priority, status, attempts, last_error, provider_status,"
"   provider_message_id, segments, created_at, sent_at)"
" SELECT id, notification_id, recipient_id, channel, provider, destination, device_id,"
"   priority, status, attempts, err, pstatus, pmid, segments, created_at, sent_at FROM f";

static const char *const retry_sql =
"WITH u AS ("
"  SELECT * FROM unnest($1::int8[], $2::int4[], $3::text[], $4::int4[])"
"    AS u(id, delay_ms, err, pstatus)),"
" r AS ("
"  UPDATE notify.outbox o"
"     SET status = 'retry', lease_until = NULL, last_error = u.err,"
"         next_attempt_at = now() + u.delay_ms * interval '1 millisecond'"
"    FROM u WHERE o.id = u.id"
"  RETURNING o.id, o.attempts, u.err, u.pstatus)"
" INSERT INTO notify.attempts (outbox_id, attempt, outcome, provider_status, error)"
" SELECT id, attempts, 'retry', pstatus, err FROM r"
" ON CONFLICT DO NOTHING";

static const char *const deactivate_sql =
"UPDATE notify.devices d"
"   SET active = false, last_error = u.err, deactivated_at = now(), updated_at = now()"
"  FROM unnest($1::int8[], $2::text[]) AS u(outbox_id, err), notify.outbox o"
" WHERE o.id = u.outbox_id AND d.id = o.device_id";

static const char *const deactivate_done_sql =
"UPDATE notify.devices d"
"   SET active = false, last_error = u.err, deactivated_at = now(), updated_at = now()"
"  FROM unnest($1::int8[], $2::text[]) AS u(outbox_id, err), notify.deliveries x"
" WHERE x.id = u.outbox_id AND d.id = x.device_id";

static const char *const optout_sql =
"INSERT INTO notify.preferences AS p (recipient_id, channel, category, enabled, source)"
" SELECT DISTINCT x.recipient_id, x.channel, NULL::text, false, 'sms_stop'"
"   FROM notify.deliveries x WHERE x.id = ANY ($1::int8[])"
" ON CONFLICT ON CONSTRAINT preferences_key DO UPDATE"
"   SET enabled = false, source = 'sms_stop', updated_at = now()";

typedef struct WorkerPlans
{
	SPIPlanPtr	provider;
	SPIPlanPtr	claim;
	SPIPlanPtr	finish;
	SPIPlanPtr	retry;
	SPIPlanPtr	deactivate;
	SPIPlanPtr	deactivate_done;
	SPIPlanPtr	optout;
} WorkerPlans;

/* State that lives as long as the worker. */
static NotifyWorkerSlot *my_slot = NULL;
static int	my_slotno = -1;
static char my_provider[NOTIFY_NAME_LEN];
static WorkerPlans plans;
static MemoryContext worker_ctx = NULL;
static MemoryContext batch_ctx = NULL;

static const NotifyProviderOps *ops = NULL;
static void *provider_state = NULL;
static json_t *provider_config = NULL;
static NotifyEngine *engine = NULL;
static TimestampTz config_stamp = 0;
static bool provider_broken = false;

/* One claimed row while its batch is in progress. */
typedef struct Claimed
{
	NotifyDelivery d;
	bool		expired;
	TimestampTz sent_at;
} Claimed;

static Claimed *batch = NULL;
static int	batch_n = 0;

/*
 * The provider's "rate_limit" (deliveries per second, shared by its
 * workers) as a token bucket holding at most one second's worth.
 */
static double rate_per_worker = 0;
static double rate_tokens = 0;
static TimestampTz rate_stamp = 0;

/* When the bucket is empty: how long to wait for the next token. */
static long rate_nap_ms = -1;

static void
release_batch_json(void)
{
	for (int i = 0; i < batch_n; i++)
	{
		if (batch[i].d.message)
		{
			json_decref(batch[i].d.message);
			batch[i].d.message = NULL;
		}
	}
	batch_n = 0;
	batch = NULL;
}

static void
drop_provider(void)
{
	if (engine)
	{
		notify_engine_destroy(engine);
		engine = NULL;
	}
	if (provider_state && ops)
		ops->destroy(provider_state);
	provider_state = NULL;
	if (provider_config)
		json_decref(provider_config);
	provider_config = NULL;
	ops = NULL;
	config_stamp = 0;
}

static void
worker_exit(int code, Datum arg)
{
	release_batch_json();
	drop_provider();
	if (my_slot)
	{
		notify_slots_lock(true);
		my_slot->in_use = false;
		my_slot->pid = 0;
		my_slot->latch = NULL;
		notify_slots_unlock();
	}
}

static void
set_slot_error(const char *msg)
{
	notify_slots_lock(true);
	strlcpy(my_slot->last_error, msg, NOTIFY_SLOT_ERROR_LEN);
	notify_slots_unlock();
}

static SPIPlanPtr
prepare(const char *sql, int nargs, Oid *types)
{
	SPIPlanPtr	plan = SPI_prepare(sql, nargs, types);

	if (plan == NULL)
		elog(ERROR, "notify worker could not prepare statement: %s",
			 SPI_result_code_string(SPI_result));
	if (SPI_keepplan(plan) != 0)
		elog(ERROR, "SPI_keepplan failed");
	return plan;
}

static void
prepare_plans(void)
{
	Oid			t_provider[] = {TEXTOID};
	Oid			t_claim[] = {TEXTOID, INT4OID, INT4OID};
	Oid			t_finish[] = {INT8ARRAYOID, TEXTARRAYOID, TEXTARRAYOID, INT4ARRAYOID,
	TEXTARRAYOID, TIMESTAMPTZARRAYOID, INT4ARRAYOID};
	Oid			t_retry[] = {INT8ARRAYOID, INT4ARRAYOID, TEXTARRAYOID, INT4ARRAYOID};
	Oid			t_pairs[] = {INT8ARRAYOID, TEXTARRAYOID};
	Oid			t_ids[] = {INT8ARRAYOID};

	if (plans.provider)
		return;
	plans.provider = prepare(provider_sql, 1, t_provider);
	plans.claim = prepare(claim_sql, 3, t_claim);
	plans.finish = prepare(finish_sql, 7, t_finish);
	plans.retry = prepare(retry_sql, 4, t_retry);
	plans.deactivate = prepare(deactivate_sql, 2, t_pairs);
	plans.deactivate_done = prepare(deactivate_done_sql, 2, t_pairs);
	plans.optout = prepare(optout_sql, 1, t_ids);
}

static void
begin_tx(const char *activity)
{
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	PushActiveSnapshot(GetTransactionSnapshot());
	pgstat_report_activity(STATE_RUNNING, activity);
}

static void
end_tx(void)
{
	PopActiveSnapshot();
	SPI_finish();
	CommitTransactionCommand();
	pgstat_report_stat(false);
	pgstat_report_activity(STATE_IDLE, NULL);
}

typedef enum ProviderCheck
{
	PROVIDER_READY,
	PROVIDER_PAUSED,
	PROVIDER_GONE,				/* dropped or disabled: exit */
	PROVIDER_BROKEN				/* configuration unusable: wait */
} ProviderCheck;

/*
 * Read this worker's provider row (inside a transaction) and (re)build the
 * provider state when its configuration changed.
 */
static ProviderCheck
load_provider(void)
{
	Datum		arg = CStringGetTextDatum(my_provider);
	bool		isnull;
	char	   *kind;
	char	   *config_text;
	bool		enabled;
	bool		paused;
	TimestampTz stamp;
	json_error_t jerr;
	char	   *err = NULL;
	json_t	   *config;
	void	   *state;
	const NotifyProviderOps *new_ops;

	if (SPI_execute_plan(plans.provider, &arg, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not read provider \"%s\"", my_provider);
	if (SPI_processed == 0)
		return PROVIDER_GONE;

	enabled = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3, &isnull));
	if (!enabled)
		return PROVIDER_GONE;
	paused = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 4, &isnull));
	stamp = DatumGetTimestampTz(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 5, &isnull));

	if (stamp != config_stamp)
	{
		kind = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
		config_text = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2);

		drop_provider();
		config_stamp = stamp;
		provider_broken = true;

		new_ops = notify_provider_lookup(kind);
		if (new_ops == NULL)
		{
			set_slot_error("unknown provider kind");
			return PROVIDER_BROKEN;
		}
		config = json_loads(config_text, 0, &jerr);
		if (config == NULL)
		{
			set_slot_error("provider config is not valid JSON");
			return PROVIDER_BROKEN;
		}
		state = new_ops->create(config, &err);
		if (state == NULL)
		{
			char		msg[NOTIFY_SLOT_ERROR_LEN];

			snprintf(msg, sizeof(msg), "provider cannot start: %s",
					 err ? err : "unknown error");
			free(err);
			json_decref(config);
			set_slot_error(msg);
			ereport(WARNING,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("notify provider \"%s\" cannot start: %s", my_provider, msg),
					 errhint("Fix it with notify_set_provider(); its deliveries stay queued.")));
			return PROVIDER_BROKEN;
		}
		ops = new_ops;
		provider_state = state;
		provider_config = config;
		provider_broken = false;

		rate_per_worker = json_number_value(json_object_get(config, "rate_limit")) /
			Max(notify_workers_per_provider, 1);
		rate_tokens = Max(rate_per_worker, 1.0);
		rate_stamp = GetCurrentTimestamp();
	}

	if (provider_broken)
		return PROVIDER_BROKEN;
	return paused ? PROVIDER_PAUSED : PROVIDER_READY;
}

static NotifyEngine *
get_engine(void)
{
	NotifyEngineOptions opts;
	json_t	   *h2c;

	if (engine)
		return engine;
	memset(&opts, 0, sizeof(opts));
	opts.timeout_ms = notify_request_timeout_ms;
	opts.connect_timeout_ms = Min(notify_request_timeout_ms, 5000);
	opts.max_host_connections = notify_max_host_connections;
	opts.max_concurrent = notify_max_inflight;
	h2c = provider_config ? json_object_get(provider_config, "h2c") : NULL;
	opts.h2c = h2c != NULL && json_is_true(h2c);
	engine = notify_engine_create(&opts);
	if (engine == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("notify could not create its HTTP engine")));
	return engine;
}

static char *
copy_text(HeapTuple tup, TupleDesc desc, int col)
{
	char	   *v = SPI_getvalue(tup, desc, col);

	return v ? v : pstrdup("");
}

/*
 * How many rows the rate limit lets this worker claim now (at most
 * notify.batch_size); 0 sets rate_nap_ms to the wait for the next one.
 */
static int
rate_allowance(void)
{
	TimestampTz now;
	double		burst;

	if (rate_per_worker <= 0)
		return notify_batch_size;

	now = GetCurrentTimestamp();
	burst = Max(rate_per_worker, 1.0);
	rate_tokens = Min(burst, rate_tokens + rate_per_worker * (double) (now - rate_stamp) / USECS_PER_SEC);
	rate_stamp = now;
	if (rate_tokens < 1.0)
	{
		rate_nap_ms = (long) ceil((1.0 - rate_tokens) * 1000.0 / rate_per_worker);
		return 0;
	}
	return (int) Min((double) notify_batch_size, floor(rate_tokens));
}

/* Claim up to limit rows; returns the number of rows claimed. */
static int
claim_batch(int limit)
{
	Datum		args[3];
	SPITupleTable *tt;
	MemoryContext old;

	args[0] = CStringGetTextDatum(my_provider);
	args[1] = Int32GetDatum(limit);
	args[2] = Int32GetDatum(notify_lease_ms);

	if (SPI_execute_plan(plans.claim, args, NULL, false, 0) != SPI_OK_UPDATE_RETURNING)
		elog(ERROR, "could not claim outbox rows");

	tt = SPI_tuptable;
	old = MemoryContextSwitchTo(batch_ctx);
	batch = palloc0(sizeof(Claimed) * Max(SPI_processed, 1));
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = tt->vals[i];
		Claimed    *c = &batch[i];
		bool		isnull;
		char	   *message;
		json_error_t jerr;

		c->d.id = DatumGetInt64(SPI_getbinval(tup, tt->tupdesc, 1, &isnull));
		c->d.channel = copy_text(tup, tt->tupdesc, 2);
		c->d.destination = copy_text(tup, tt->tupdesc, 3);
		c->d.attempt = DatumGetInt32(SPI_getbinval(tup, tt->tupdesc, 4, &isnull));
		c->d.priority = DatumGetInt16(SPI_getbinval(tup, tt->tupdesc, 5, &isnull));
		c->d.expires_at = DatumGetInt64(SPI_getbinval(tup, tt->tupdesc, 6, &isnull));
		c->expired = DatumGetBool(SPI_getbinval(tup, tt->tupdesc, 7, &isnull));
		c->d.recipient = copy_text(tup, tt->tupdesc, 8);
		c->d.retry_after = -1;
		message = SPI_getvalue(tup, tt->tupdesc, 9);
		batch_n = i + 1;
		c->d.message = message ? json_loads(message, 0, &jerr) : NULL;
		if (c->d.message == NULL && !c->expired)
			notify_set_error(&c->d, NOTIFY_OUTCOME_FAILED,
							 "rendered message is missing or not JSON");
	}
	MemoryContextSwitchTo(old);
	return (int) SPI_processed;
}

/* Exponential backoff with jitter: base * 2^(attempt-1), +-25%, capped. */
static int
backoff_ms(int attempt, int retry_after)
{
	double		delay;

	if (retry_after >= 0)
		return (int) Min((double) retry_after * 1000.0, (double) notify_backoff_max_ms * 4);

	delay = (double) notify_backoff_base_ms * pow(2.0, Min(attempt - 1, 30));
	delay = Min(delay, (double) notify_backoff_max_ms);
	delay *= 0.75 + 0.5 * pg_prng_double(&pg_global_prng_state);
	return (int) Max(delay, 1.0);
}

static ArrayType *
text_array(char **values, bool *nulls, int n)
{
	Datum	   *d = palloc(sizeof(Datum) * Max(n, 1));
	int			dims[1] = {n};
	int			lbs[1] = {1};

	for (int i = 0; i < n; i++)
		d[i] = nulls && nulls[i] ? (Datum) 0 : CStringGetTextDatum(values[i]);
	return construct_md_array(d, nulls, 1, dims, lbs, TEXTOID, -1, false, TYPALIGN_INT);
}

static ArrayType *
scalar_array(Datum *values, bool *nulls, int n, Oid type)
{
	int			dims[1] = {n};
	int			lbs[1] = {1};

	if (type == INT8OID || type == TIMESTAMPTZOID)
		return construct_md_array(values, nulls, 1, dims, lbs, type, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE);
	return construct_md_array(values, nulls, 1, dims, lbs, type, 4, true, TYPALIGN_INT);
}

/* Write the outcomes of the batch in one transaction. */
static void
record_batch(int n)
{
	/* finished rows */
	Datum	   *f_id = palloc(sizeof(Datum) * n);
	char	  **f_status = palloc(sizeof(char *) * n);
	char	  **f_err = palloc(sizeof(char *) * n);
	bool	   *f_err_null = palloc(sizeof(bool) * n);
	Datum	   *f_pstatus = palloc(sizeof(Datum) * n);
	bool	   *f_pstatus_null = palloc(sizeof(bool) * n);
	char	  **f_pmid = palloc(sizeof(char *) * n);
	bool	   *f_pmid_null = palloc(sizeof(bool) * n);
	Datum	   *f_sent = palloc(sizeof(Datum) * n);
	bool	   *f_sent_null = palloc(sizeof(bool) * n);
	Datum	   *f_segments = palloc(sizeof(Datum) * n);
	bool	   *f_segments_null = palloc(sizeof(bool) * n);
	int			nf = 0;

	/* retried rows */
	Datum	   *r_id = palloc(sizeof(Datum) * n);
	Datum	   *r_delay = palloc(sizeof(Datum) * n);
	char	  **r_err = palloc(sizeof(char *) * n);
	Datum	   *r_pstatus = palloc(sizeof(Datum) * n);
	bool	   *r_pstatus_null = palloc(sizeof(bool) * n);
	int			nr = 0;

	/* side effects */
	Datum	   *dead_id = palloc(sizeof(Datum) * n);
	char	  **dead_err = palloc(sizeof(char *) * n);
	bool	   *dead_final = palloc(sizeof(bool) * n);
	int			ndead = 0;
	Datum	   *opt_id = palloc(sizeof(Datum) * n);
	int			nopt = 0;
	uint64		delivered = 0,
				failed = 0,
				retried = 0;

	for (int i = 0; i < n; i++)
	{
		Claimed    *c = &batch[i];
		NotifyDelivery *d = &c->d;
		const char *status = NULL;
		char	   *err = d->error[0] ? pstrdup(d->error) : NULL;

		if (c->expired)
		{
			status = "expired";
			err = pstrdup("expired before it could be delivered");
		}
		else if (d->outcome == NOTIFY_OUTCOME_SENT)
			status = "sent";
		else if (d->outcome == NOTIFY_OUTCOME_FAILED)
			status = "failed";
		else if (d->attempt >= notify_max_attempts)
		{
			status = "dead";
			err = psprintf("gave up after %d attempts: %s", d->attempt,
						   d->error[0] ? d->error : "transient failure");
		}

		if (d->deactivate_device)
		{
			dead_id[ndead] = Int64GetDatum(d->id);
			dead_err[ndead] = err ? err : pstrdup("token rejected by provider");
			dead_final[ndead] = status != NULL;
			ndead++;
		}

		if (status == NULL)
		{
			r_id[nr] = Int64GetDatum(d->id);
			r_delay[nr] = Int32GetDatum(backoff_ms(d->attempt, d->retry_after));
			r_err[nr] = err ? err : pstrdup("transient failure");
			r_pstatus[nr] = Int32GetDatum((int32) d->http_status);
			r_pstatus_null[nr] = d->http_status == 0;
			nr++;
			retried++;
			continue;
		}

		if (d->opt_out)
			opt_id[nopt++] = Int64GetDatum(d->id);

		f_id[nf] = Int64GetDatum(d->id);
		f_status[nf] = (char *) status;
		f_err[nf] = err;
		f_err_null[nf] = err == NULL;
		f_pstatus[nf] = Int32GetDatum((int32) d->http_status);
		f_pstatus_null[nf] = d->http_status == 0 || c->expired;
		f_pmid[nf] = d->provider_id;
		f_pmid_null[nf] = d->provider_id[0] == '\0';
		f_sent[nf] = TimestampTzGetDatum(c->sent_at);
		f_sent_null[nf] = strcmp(status, "sent") != 0;
		f_segments[nf] = Int32GetDatum(d->segments);
		f_segments_null[nf] = d->segments <= 0;
		nf++;
		if (strcmp(status, "sent") == 0)
			delivered++;
		else
			failed++;
	}

	/* Devices of rows still in the outbox must be looked up before the move. */
	if (ndead > 0)
	{
		Datum		args[2];
		int			k = 0;
		Datum	   *ids = palloc(sizeof(Datum) * ndead);
		char	  **errs = palloc(sizeof(char *) * ndead);

		for (int i = 0; i < ndead; i++)
			if (!dead_final[i])
			{
				ids[k] = dead_id[i];
				errs[k++] = dead_err[i];
			}
		if (k > 0)
		{
			args[0] = PointerGetDatum(scalar_array(ids, NULL, k, INT8OID));
			args[1] = PointerGetDatum(text_array(errs, NULL, k));
			if (SPI_execute_plan(plans.deactivate, args, NULL, false, 0) != SPI_OK_UPDATE)
				elog(ERROR, "could not deactivate devices");
		}
	}

	if (nf > 0)
	{
		Datum		args[7];
		char		nulls[7] = "       ";

		args[0] = PointerGetDatum(scalar_array(f_id, NULL, nf, INT8OID));
		args[1] = PointerGetDatum(text_array(f_status, NULL, nf));
		args[2] = PointerGetDatum(text_array(f_err, f_err_null, nf));
		args[3] = PointerGetDatum(scalar_array(f_pstatus, f_pstatus_null, nf, INT4OID));
		args[4] = PointerGetDatum(text_array(f_pmid, f_pmid_null, nf));
		args[5] = PointerGetDatum(scalar_array(f_sent, f_sent_null, nf, TIMESTAMPTZOID));
		args[6] = PointerGetDatum(scalar_array(f_segments, f_segments_null, nf, INT4OID));
		if (SPI_execute_plan(plans.finish, args, nulls, false, 0) != SPI_OK_INSERT)
			elog(ERROR, "could not record finished deliveries");
	}

	if (nr > 0)
	{
		Datum		args[4];

		args[0] = PointerGetDatum(scalar_array(r_id, NULL, nr, INT8OID));
		args[1] = PointerGetDatum(scalar_array(r_delay, NULL, nr, INT4OID));
		args[2] = PointerGetDatum(text_array(r_err, NULL, nr));
		args[3] = PointerGetDatum(scalar_array(r_pstatus, r_pstatus_null, nr, INT4OID));
		if (SPI_execute_plan(plans.retry, args, NULL, false, 0) != SPI_OK_INSERT)
			elog(ERROR, "could not record retries");
	}

	if (ndead > 0)
	{
		Datum		args[2];
		int			k = 0;
		Datum	   *ids = palloc(sizeof(Datum) * ndead);
		char	  **errs = palloc(sizeof(char *) * ndead);

		for (int i = 0; i < ndead; i++)
			if (dead_final[i])
			{
				ids[k] = dead_id[i];
				errs[k++] = dead_err[i];
			}
		if (k > 0)
		{
			args[0] = PointerGetDatum(scalar_array(ids, NULL, k, INT8OID));
			args[1] = PointerGetDatum(text_array(errs, NULL, k));
			if (SPI_execute_plan(plans.deactivate_done, args, NULL, false, 0) != SPI_OK_UPDATE)
				elog(ERROR, "could not deactivate devices");
		}
	}

	if (nopt > 0)
	{
		Datum		args[1];

		args[0] = PointerGetDatum(scalar_array(opt_id, NULL, nopt, INT8OID));
		if (SPI_execute_plan(plans.optout, args, NULL, false, 0) != SPI_OK_INSERT)
			elog(ERROR, "could not record opt-outs");
	}

	notify_slots_lock(true);
	my_slot->batches++;
	my_slot->delivered += delivered;
	my_slot->failed += failed;
	my_slot->retried += retried;
	my_slot->last_batch_at = GetCurrentTimestamp();
	notify_slots_unlock();
}

/*
 * One claim-send-record cycle.  Returns the number of rows handled, or -1
 * when there is nothing this worker can do right now (paused, broken).
 * Exits the process when the provider is gone.
 */
static int
run_batch(void)
{
	ProviderCheck check;
	int			allowance;
	int			n;
	int			nsend = 0;
	NotifyDelivery *to_send;
	char		activity[128];

	MemoryContextReset(batch_ctx);

	/* 1. claim */
	notify_slot_set_state(my_slot, NOTIFY_WS_CLAIMING);
	begin_tx("claiming");
	if (!notify_lock_extension())
	{
		end_tx();
		ereport(LOG,
				(errmsg("notify worker for provider \"%s\" exits: the extension was dropped",
						my_provider)));
		proc_exit(0);
	}
	prepare_plans();
	check = load_provider();
	if (check == PROVIDER_GONE)
	{
		end_tx();
		ereport(LOG,
				(errmsg("notify worker for provider \"%s\" exits: the provider was disabled or dropped",
						my_provider)));
		proc_exit(0);
	}
	if (check != PROVIDER_READY)
	{
		end_tx();
		notify_slot_set_state(my_slot, check == PROVIDER_PAUSED ? NOTIFY_WS_PAUSED : NOTIFY_WS_BACKOFF);
		return -1;
	}
	allowance = rate_allowance();
	if (allowance == 0)
	{
		end_tx();
		return -1;				/* rate limited: rate_nap_ms says how long */
	}
	n = claim_batch(allowance);
	end_tx();
	rate_tokens -= n;
	if (n == 0)
		return 0;

	/* 2. send, outside any transaction */
	notify_slot_set_state(my_slot, NOTIFY_WS_SENDING);
	to_send = MemoryContextAlloc(batch_ctx, sizeof(NotifyDelivery) * n);
	for (int i = 0; i < n; i++)
	{
		if (!batch[i].expired && batch[i].d.message != NULL)
			to_send[nsend++] = batch[i].d;
	}
	if (nsend > 0)
	{
		snprintf(activity, sizeof(activity), "delivering %d via %s", nsend, my_provider);
		pgstat_report_activity(STATE_RUNNING, activity);
		pgstat_report_wait_start(PG_WAIT_EXTENSION);
		notify_engine_run(get_engine(), ops, provider_state, to_send, nsend);
		pgstat_report_wait_end();
	}
	for (int i = 0, j = 0; i < n; i++)
	{
		if (!batch[i].expired && batch[i].d.message != NULL)
		{
			json_t	   *msg = batch[i].d.message;

			batch[i].d = to_send[j++];
			batch[i].d.message = msg;
		}
		batch[i].sent_at = GetCurrentTimestamp();
	}

	/* 3. record */
	notify_slot_set_state(my_slot, NOTIFY_WS_RECORDING);
	begin_tx("recording outcomes");
	record_batch(n);
	end_tx();
	release_batch_json();
	return n;
}

void
notify_worker_main(Datum arg)
{
	my_slotno = DatumGetInt32(arg);

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, SignalHandlerForShutdownRequest);
	BackgroundWorkerUnblockSignals();

	my_slot = notify_slot(my_slotno);
	strlcpy(my_provider, my_slot->provider, NOTIFY_NAME_LEN);

	BackgroundWorkerInitializeConnectionByOid(my_slot->dboid, InvalidOid, 0);

	notify_slots_lock(true);
	my_slot->pid = MyProcPid;
	my_slot->latch = &MyProc->procLatch;
	my_slot->state = NOTIFY_WS_IDLE;
	notify_slots_unlock();
	before_shmem_exit(worker_exit, (Datum) 0);

	{
		char		appname[NAMEDATALEN];

		snprintf(appname, sizeof(appname), "notify worker %s", my_provider);
		pgstat_report_appname(appname);
	}

	worker_ctx = AllocSetContextCreate(TopMemoryContext, "notify worker",
									   ALLOCSET_DEFAULT_SIZES);
	batch_ctx = AllocSetContextCreate(worker_ctx, "notify batch",
									  ALLOCSET_DEFAULT_SIZES);

	while (!ShutdownRequestPending)
	{
		volatile int handled = 0;
		long		nap;

		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
			/* new timeouts and limits take effect on a fresh engine */
			if (engine)
			{
				notify_engine_destroy(engine);
				engine = NULL;
			}
			if (my_slot->number >= notify_workers_per_provider)
			{
				ereport(LOG,
						(errmsg("notify worker %d for provider \"%s\" exits: notify.workers_per_provider is %d",
								my_slot->number, my_provider, notify_workers_per_provider)));
				break;
			}
		}

		PG_TRY();
		{
			handled = run_batch();
		}
		PG_CATCH();
		{
			ErrorData  *edata;

			MemoryContextSwitchTo(worker_ctx);
			edata = CopyErrorData();
			FlushErrorState();
			AbortOutOfAnyTransaction();

			/* rows of this batch stay in flight until their lease runs out */
			release_batch_json();
			if (engine)
			{
				notify_engine_destroy(engine);
				engine = NULL;
			}
			set_slot_error(edata->message);
			ereport(LOG,
					(errmsg("notify worker for provider \"%s\" hit an error and goes on: %s",
							my_provider, edata->message)));
			FreeErrorData(edata);
			notify_slot_set_state(my_slot, NOTIFY_WS_BACKOFF);
			handled = -1;
			pgstat_report_activity(STATE_IDLE, NULL);
		}
		PG_END_TRY();

		nap = notify_poll_interval_ms;
		if (rate_nap_ms >= 0)
		{
			nap = Min(nap, Max(rate_nap_ms, 1));
			rate_nap_ms = -1;
		}
		if (handled >= notify_batch_size)
			continue;			/* more is waiting: go on at once */
		if (handled > 0)
			nap = 0;			/* check once more before sleeping */
		if (handled == 0)
			notify_slot_set_state(my_slot, NOTIFY_WS_IDLE);

		if (handled < 0 && my_slot->state == NOTIFY_WS_PAUSED)
		{
			/*
			 * Paused: every committed send still sets our latch.  Look at
			 * the provider at most every 100 ms rather than once per send;
			 * a resume is still seen within a poll interval.
			 */
			(void) WaitLatch(MyLatch, WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
							 Min(100, nap), PG_WAIT_EXTENSION);
			nap -= Min(100, nap);
		}

		if (nap > 0)
		{
			(void) WaitLatch(MyLatch,
							 WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
							 nap,
							 PG_WAIT_EXTENSION);
			ResetLatch(MyLatch);
		}
	}

	proc_exit(0);
}
