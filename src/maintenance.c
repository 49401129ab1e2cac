/*-------------------------------------------------------------------------
 *
 * maintenance.c
 *	  What the launcher does for its database besides starting workers:
 *	  purge history older than notify.retention in small batches, and raise
 *	  alerts (a WARNING in the log and a NOTIFY on channel notify_alerts)
 *	  when deliveries go dead or the queue falls behind.
 *
 * Each piece of work is its own short transaction, so a purge of millions
 * of rows never holds a snapshot or a lock for long, and it runs only when
 * its interval has passed: the launcher may call in as often as it likes.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "pgstat.h"
#include "utils/builtins.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "notify.h"

#define ALERT_CHECK_MS		10000
#define PURGE_CHECK_MS		60000
#define LAG_ALERT_REPEAT_MS 300000
#define PURGE_BATCH			5000

/* How long a transaction may take to show its start in pg_stat_activity. */
#define XACT_SHOW_GRACE_MS	1000

static TimestampTz last_alert_check = 0;
static TimestampTz last_purge = 0;

/* Dead deliveries that finished before this were counted (0: not yet). */
static TimestampTz dead_counted_until = 0;

/*
 * When each provider's lag was last alerted: the alert repeats every
 * LAG_ALERT_REPEAT_MS per provider, and one provider's alert must not
 * silence another's.  Beyond LAG_TRACKED providers the oldest entry is
 * reused (that provider may be alerted again sooner, never later).
 */
#define LAG_TRACKED			64
typedef struct LagAlert
{
	char		provider[NOTIFY_NAME_LEN];
	TimestampTz at;				/* 0: unused */
} LagAlert;
static LagAlert lag_alerts[LAG_TRACKED];

static void
begin(const char *activity)
{
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	PushActiveSnapshot(GetTransactionSnapshot());
	pgstat_report_activity(STATE_RUNNING, activity);
}

static void
finish(void)
{
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	pgstat_report_stat(false);
	pgstat_report_activity(STATE_IDLE, NULL);
}

/* Run one purge statement in batches until it deletes fewer than a batch. */
static uint64
purge_in_batches(const char *sql, TimestampTz cutoff)
{
	uint64		total = 0;
	Oid			types[2] = {TIMESTAMPTZOID, INT4OID};
	Datum		args[2] = {TimestampTzGetDatum(cutoff), Int32GetDatum(PURGE_BATCH)};

	for (;;)
	{
		uint64		n;

		begin("purging notify history");
		if (SPI_execute_with_args(sql, 2, types, args, NULL, false, 0) != SPI_OK_DELETE)
			elog(ERROR, "notify purge failed: %s", sql);
		n = SPI_processed;
		finish();
		total += n;
		if (n < PURGE_BATCH)
			break;
		CHECK_FOR_INTERRUPTS();
	}
	return total;
}

static void
purge(TimestampTz now)
{
	TimestampTz cutoff;
	uint64		deliveries,
				attempts,
				notifications;

	if (notify_retention_s <= 0)
		return;
	cutoff = now - (int64) notify_retention_s * USECS_PER_SEC;

	deliveries = purge_in_batches(
		"DELETE FROM notify.deliveries WHERE id IN ("
		"  SELECT id FROM notify.deliveries WHERE finished_at < $1"
		"   ORDER BY finished_at LIMIT $2)", cutoff);
	attempts = purge_in_batches(
		"DELETE FROM notify.attempts WHERE ctid IN ("
		"  SELECT ctid FROM notify.attempts WHERE at < $1 LIMIT $2)", cutoff);

	/*
	 * A notification goes once none of its deliveries is left anywhere;
	 * looking at the oldest ids only keeps each round cheap.
	 */
	notifications = purge_in_batches(
		"DELETE FROM notify.notifications n WHERE n.id IN ("
		"  SELECT x.id FROM notify.notifications x WHERE x.created_at < $1"
		"     AND NOT EXISTS (SELECT 1 FROM notify.outbox o WHERE o.notification_id = x.id)"
		"     AND NOT EXISTS (SELECT 1 FROM notify.deliveries d WHERE d.notification_id = x.id)"
		"   ORDER BY x.id LIMIT $2)", cutoff);

	if (deliveries + attempts + notifications > 0)
		ereport(LOG,
				(errmsg("notify purged %llu deliveries, %llu attempts and %llu notifications older than notify.retention",
						(unsigned long long) deliveries, (unsigned long long) attempts,
						(unsigned long long) notifications)));
}

static void
raise_alert(const char *kind, const char *provider, const char *detail_json)
{
	Oid			types[1] = {TEXTOID};
	Datum		args[1];
	char	   *payload;

	payload = psprintf("{\"alert\": \"%s\", \"provider\": %s, %s}",
					   kind, quote_literal_cstr(provider), detail_json);
	/* quote_literal gives SQL quotes; the payload wants JSON ones */
	for (char *p = payload; *p; p++)
		if (*p == '\'')
			*p = '"';
	args[0] = CStringGetTextDatum(payload);
	if (SPI_execute_with_args("SELECT pg_notify('notify_alerts', $1)", 1, types, args,
							  NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not send notify alert");
}

/* Whether a lag alert for this provider is due now; if so, remember it. */
static bool
lag_alert_due(const char *provider, TimestampTz now)
{
	int			slot = 0;

	for (int i = 0; i < LAG_TRACKED; i++)
	{
		if (lag_alerts[i].at != 0 && strcmp(lag_alerts[i].provider, provider) == 0)
		{
			if (!TimestampDifferenceExceeds(lag_alerts[i].at, now, LAG_ALERT_REPEAT_MS))
				return false;
			lag_alerts[i].at = now;
			return true;
		}
		/* an unused entry (at 0), else the one alerted longest ago */
		if (lag_alerts[i].at < lag_alerts[slot].at)
			slot = i;
	}
	strlcpy(lag_alerts[slot].provider, provider, NOTIFY_NAME_LEN);
	lag_alerts[slot].at = now;
	return true;
}

/*
 * Where this check's count of dead deliveries ends.  A delivery's
 * finished_at is the start of the worker transaction that recorded it,
 * which commits later, possibly much later (a lock wait): a count up to
 * the time of the check would pass over a transaction still in progress,
 * and its dead deliveries would never be counted.  So the count ends where
 * the oldest notify worker transaction in progress began, read here before
 * the check takes its snapshot, and a moment before now, since a
 * transaction takes its start time just before it shows it.
 */
static TimestampTz
dead_count_end(TimestampTz now)
{
	TimestampTz end = TimestampTzPlusMilliseconds(now, -XACT_SHOW_GRACE_MS);
	Datum		oldest;
	bool		isnull;

	begin("checking notify alerts");
	if (SPI_execute("SELECT min(xact_start) FROM pg_catalog.pg_stat_activity"
					" WHERE backend_type = 'notify worker'", true, 0) != SPI_OK_SELECT ||
		SPI_processed != 1)
		elog(ERROR, "could not read the notify workers' transactions");
	oldest = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	if (!isnull && DatumGetTimestampTz(oldest) < end)
		end = DatumGetTimestampTz(oldest);
	finish();
	return end;
}

static void
check_alerts(TimestampTz now)
{
	Oid			types[2] = {TIMESTAMPTZOID, TIMESTAMPTZOID};
	Datum		args[2];
	SPITupleTable *tt;
	TimestampTz dead_until = dead_count_end(now);

	begin("checking notify alerts");

	/* dead deliveries that finished in [dead_counted_until, dead_until) */
	if (notify_alert_dead && dead_counted_until != 0 && dead_until > dead_counted_until)
	{
		args[0] = TimestampTzGetDatum(dead_counted_until);
		args[1] = TimestampTzGetDatum(dead_until);
		if (SPI_execute_with_args(
				"SELECT provider, count(*)::int8, max(last_error) FROM notify.deliveries"
				" WHERE status = 'dead' AND provider IS NOT NULL"
				"   AND finished_at >= $1 AND finished_at < $2"
				" GROUP BY provider ORDER BY provider",
				2, types, args, NULL, true, 0) != SPI_OK_SELECT)
			elog(ERROR, "could not count dead deliveries");
		tt = SPI_tuptable;
		for (uint64 i = 0; i < SPI_processed; i++)
		{
			char	   *provider = SPI_getvalue(tt->vals[i], tt->tupdesc, 1);
			char	   *count = SPI_getvalue(tt->vals[i], tt->tupdesc, 2);
			char	   *reason = SPI_getvalue(tt->vals[i], tt->tupdesc, 3);

			ereport(WARNING,
					(errmsg("notify: %s deliveries of provider \"%s\" went dead", count, provider),
					 errdetail("Last reason: %s", reason ? reason : "unknown"),
					 errhint("List them in notify.deliveries (status dead); requeue with notify_requeue('%s') once the provider works.",
							 provider)));
			raise_alert("dead", provider, psprintf("\"count\": %s", count));
		}
	}

	if (notify_alert_lag_s > 0)
	{
		args[0] = Int32GetDatum(notify_alert_lag_s);
		types[0] = INT4OID;
		if (SPI_execute_with_args(
				"SELECT o.provider, extract(epoch FROM now() - min(o.next_attempt_at))::int8"
				"  FROM notify.outbox o JOIN notify.providers p ON p.name = o.provider"
				" WHERE p.enabled AND NOT p.paused AND o.next_attempt_at <= now()"
				"   AND (o.status <> 'inflight' OR o.lease_until <= now())"
				" GROUP BY o.provider"
				" HAVING min(o.next_attempt_at) < now() - $1 * interval '1 second'"
				" ORDER BY 1",
				1, types, args, NULL, true, 0) != SPI_OK_SELECT)
			elog(ERROR, "could not measure notify lag");
		tt = SPI_tuptable;
		for (uint64 i = 0; i < SPI_processed; i++)
		{
			char	   *provider = SPI_getvalue(tt->vals[i], tt->tupdesc, 1);
			char	   *seconds = SPI_getvalue(tt->vals[i], tt->tupdesc, 2);

			if (!lag_alert_due(provider, now))
				continue;
			ereport(WARNING,
					(errmsg("notify: provider \"%s\" is %s s behind", provider, seconds),
					 errdetail("The oldest ready delivery has waited longer than notify.alert_lag."),
					 errhint("Check notify.queue_stats and notify_workers(): a slow or failing provider, or too few workers.")));
			raise_alert("lag", provider, psprintf("\"seconds\": %s", seconds));
		}
	}

	finish();
	last_alert_check = now;
	/* the first check only marks where counting starts */
	if (dead_until > dead_counted_until)
		dead_counted_until = dead_until;
}

void
notify_maintenance(void)
{
	TimestampTz now = GetCurrentTimestamp();

	if (last_alert_check == 0 ||
		TimestampDifferenceExceeds(last_alert_check, now, ALERT_CHECK_MS))
		check_alerts(now);
	if (TimestampDifferenceExceeds(last_purge, now, PURGE_CHECK_MS))
	{
		last_purge = now;
		purge(now);
	}
}

/* Forget the schedule (the extension was dropped and created again). */
void
notify_maintenance_reset(void)
{
	last_alert_check = 0;
	last_purge = 0;
	dead_counted_until = 0;
	memset(lag_alerts, 0, sizeof(lag_alerts));
}
