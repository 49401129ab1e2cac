/*-------------------------------------------------------------------------
 *
 * launcher.c
 *	  One launcher per database named in notify.database.  It waits until
 *	  the database is writable and has the extension, returns rows that a
 *	  crashed worker left in flight, and keeps notify.workers_per_provider
 *	  delivery workers running for every enabled provider.
 *
 * The launcher starts workers and nothing else: a worker stops itself when
 * its provider is disabled, dropped, or no longer needs that many workers,
 * and the launcher simply starts what is missing.  It is woken by
 * notify_set_provider() (through its latch) and by the postmaster when one
 * of its workers starts or stops (bgw_notify_pid).
 *
 * Launchers are registered with BgWorkerStart_RecoveryFinished, so on a
 * hot standby nothing runs until promotion.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_extension.h"
#include "commands/extension.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lmgr.h"
#include "storage/proc.h"
#include "tcop/utility.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/varlena.h"

#include "notify.h"

/* How often a launcher rechecks when nothing woke it. */
#define LAUNCHER_NAP_MS 5000

/* Handles of the workers this launcher started, by slot. */
static BackgroundWorkerHandle *handles[NOTIFY_MAX_WORKERS];

/* Whether running out of worker slots was already reported. */
static bool warned_no_slots = false;

void
notify_register_launchers(void)
{
	char	   *list;
	List	   *names;
	ListCell   *lc;

	list = pstrdup(notify_databases);
	if (!SplitIdentifierString(list, ',', &names))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid list syntax in notify.database"),
				 errhint("Give database names separated by commas, e.g. 'app,postgres'.")));

	if (list_length(names) > NOTIFY_MAX_DATABASES)
		ereport(ERROR,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("notify.database names %d databases, at most %d are served",
						list_length(names), NOTIFY_MAX_DATABASES)));

	foreach(lc, names)
	{
		const char *dbname = lfirst(lc);
		BackgroundWorker bgw;

		memset(&bgw, 0, sizeof(bgw));
		bgw.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
		bgw.bgw_start_time = BgWorkerStart_RecoveryFinished;
		bgw.bgw_restart_time = 10;
		snprintf(bgw.bgw_library_name, BGW_MAXLEN, "notify");
		snprintf(bgw.bgw_function_name, BGW_MAXLEN, "notify_launcher_main");
		snprintf(bgw.bgw_name, BGW_MAXLEN, "notify launcher for %s", dbname);
		snprintf(bgw.bgw_type, BGW_MAXLEN, "notify launcher");
		strlcpy(bgw.bgw_extra, dbname, BGW_EXTRALEN);
		bgw.bgw_main_arg = (Datum) 0;
		RegisterBackgroundWorker(&bgw);
	}
}

/*
 * Whether the extension is installed, keeping it installed until the end of
 * the current transaction.  DROP EXTENSION holds an AccessExclusiveLock on
 * the extension object until it commits: with AccessShareLock held, the
 * extension's tables cannot vanish under the queries that follow.  Without
 * it, a DROP that commits while a query waits for its table lock turns the
 * query into an ERROR ("relation notify.providers does not exist"), which
 * ends the launcher.
 */
bool
notify_lock_extension(void)
{
	Oid			extoid = get_extension_oid("notify", true);

	if (!OidIsValid(extoid))
		return false;
	LockDatabaseObject(ExtensionRelationId, extoid, 0, AccessShareLock);
	/* a DROP may have committed while we waited for the lock */
	return get_extension_oid("notify", true) == extoid;
}

/*
 * The enabled providers of this database, or NIL when the extension is not
 * installed here.  Runs in its own short transaction.
 */
static List *
enabled_providers(bool *installed)
{
	List	   *result = NIL;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	pgstat_report_activity(STATE_RUNNING, "reading notify.providers");

	*installed = notify_lock_extension();
	if (*installed)
	{
		if (SPI_connect() != SPI_OK_CONNECT)
			elog(ERROR, "SPI_connect failed");
		if (SPI_execute("SELECT name FROM notify.providers WHERE enabled ORDER BY name",
						true, 0) != SPI_OK_SELECT)
			elog(ERROR, "could not read notify.providers");
		for (uint64 i = 0; i < SPI_processed; i++)
		{
			char	   *name = SPI_getvalue(SPI_tuptable->vals[i],
											SPI_tuptable->tupdesc, 1);
			MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);

			result = lappend(result, pstrdup(name));
			MemoryContextSwitchTo(old);
		}
		SPI_finish();
	}

	PopActiveSnapshot();
	CommitTransactionCommand();
	pgstat_report_stat(false);
	pgstat_report_activity(STATE_IDLE, NULL);
	return result;
}

/*
 * Rows marked in flight whose worker is gone: after a crash restart no
 * worker of this database is alive, so every in-flight row is an orphan and
 * can be queued again at once rather than when its lease runs out.
 */
static void
release_orphans(void)
{
	bool		workers_alive = false;

	notify_slots_lock(false);
	for (int i = 0; i < NOTIFY_MAX_WORKERS; i++)
	{
		NotifyWorkerSlot *slot = notify_slot(i);

		if (slot->in_use && slot->dboid == MyDatabaseId)
			workers_alive = true;
	}
	notify_slots_unlock();
	if (workers_alive)
		return;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	if (!notify_lock_extension())
	{
		/* dropped since enabled_providers(): nothing to release */
		PopActiveSnapshot();
		CommitTransactionCommand();
		return;
	}
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (SPI_execute("UPDATE notify.outbox SET status = 'queued', lease_until = NULL "
					"WHERE status = 'inflight'", false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "could not release in-flight outbox rows");
	if (SPI_processed > 0)
		ereport(LOG,
				(errmsg("notify returned %llu in-flight deliveries left by stopped workers to the queue",
						(unsigned long long) SPI_processed),
				 errdetail("They are delivered again; a provider may see a notification twice.")));
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
}

static bool
start_worker(const char *provider, int number)
{
	BackgroundWorker bgw;
	int			slotno = -1;

	notify_slots_lock(true);
	for (int i = 0; i < NOTIFY_MAX_WORKERS; i++)
	{
		NotifyWorkerSlot *slot = notify_slot(i);

		if (!slot->in_use)
		{
			memset(slot, 0, sizeof(*slot));
			slot->in_use = true;
			slot->dboid = MyDatabaseId;
			strlcpy(slot->provider, provider, NOTIFY_NAME_LEN);
			slot->number = number;
			slot->state = NOTIFY_WS_STARTING;
			slot->started_at = GetCurrentTimestamp();
			slotno = i;
			break;
		}
	}
	notify_slots_unlock();

	if (slotno < 0)
	{
		ereport(WARNING,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("notify cannot start a worker for provider \"%s\": all %d worker slots are in use",
						provider, NOTIFY_MAX_WORKERS),
				 errhint("Lower notify.workers_per_provider or disable unused providers.")));
		return false;
	}

	memset(&bgw, 0, sizeof(bgw));
	bgw.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	bgw.bgw_start_time = BgWorkerStart_RecoveryFinished;
	bgw.bgw_restart_time = BGW_NEVER_RESTART;
	snprintf(bgw.bgw_library_name, BGW_MAXLEN, "notify");
	snprintf(bgw.bgw_function_name, BGW_MAXLEN, "notify_worker_main");
	snprintf(bgw.bgw_name, BGW_MAXLEN, "notify worker %s #%d", provider, number);
	snprintf(bgw.bgw_type, BGW_MAXLEN, "notify worker");
	bgw.bgw_main_arg = Int32GetDatum(slotno);
	bgw.bgw_notify_pid = MyProcPid;

	if (handles[slotno])
	{
		pfree(handles[slotno]);
		handles[slotno] = NULL;
	}
	if (!RegisterDynamicBackgroundWorker(&bgw, &handles[slotno]))
	{
		notify_slots_lock(true);
		notify_slot(slotno)->in_use = false;
		notify_slots_unlock();
		/* said once until a registration succeeds again, not at every wake-up */
		if (!warned_no_slots)
			ereport(WARNING,
					(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
					 errmsg("notify could not start a worker for provider \"%s\": no background worker slot is free",
							provider),
					 errhint("Raise max_worker_processes: notify needs one per database plus notify.workers_per_provider per enabled provider.")));
		warned_no_slots = true;
		return false;
	}
	warned_no_slots = false;
	return true;
}

/*
 * Free slots whose worker never attached and has stopped (it failed to
 * start); a worker that ran frees its own slot on exit.
 */
static void
reap_slots(void)
{
	for (int i = 0; i < NOTIFY_MAX_WORKERS; i++)
	{
		pid_t		pid;

		if (handles[i] == NULL)
			continue;
		if (GetBackgroundWorkerPid(handles[i], &pid) != BGWH_STOPPED)
			continue;

		notify_slots_lock(true);
		if (notify_slot(i)->in_use && notify_slot(i)->pid == 0 &&
			notify_slot(i)->dboid == MyDatabaseId)
			notify_slot(i)->in_use = false;
		notify_slots_unlock();
		pfree(handles[i]);
		handles[i] = NULL;
	}
}

static void
reconcile(List *providers)
{
	ListCell   *lc;

	reap_slots();
	foreach(lc, providers)
	{
		const char *name = lfirst(lc);
		bool		running[16] = {false};

		notify_slots_lock(false);
		for (int i = 0; i < NOTIFY_MAX_WORKERS; i++)
		{
			NotifyWorkerSlot *slot = notify_slot(i);

			if (slot->in_use && slot->dboid == MyDatabaseId &&
				strcmp(slot->provider, name) == 0 &&
				slot->number >= 0 && slot->number < 16)
				running[slot->number] = true;
		}
		notify_slots_unlock();

		for (int n = 0; n < notify_workers_per_provider; n++)
		{
			if (!running[n] && !start_worker(name, n))
				return;
		}
	}
}

/*
 * Purges and alerts; an ERROR there is logged and retried at the next
 * round rather than taking the launcher down.
 */
static void
run_maintenance(void)
{
	MemoryContext oldcxt = CurrentMemoryContext;

	PG_TRY();
	{
		notify_maintenance();
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(oldcxt);
		edata = CopyErrorData();
		FlushErrorState();
		AbortOutOfAnyTransaction();
		ereport(LOG,
				(errmsg("notify launcher: maintenance failed and will be retried: %s", edata->message)));
		FreeErrorData(edata);
	}
	PG_END_TRY();
}

void
notify_launcher_main(Datum arg)
{
	const char *dbname = MyBgworkerEntry->bgw_extra;
	bool		released = false;
	bool		warned_missing = false;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, SignalHandlerForShutdownRequest);
	BackgroundWorkerUnblockSignals();

	BackgroundWorkerInitializeConnection(dbname, NULL, 0);
	pgstat_report_appname("notify launcher");
	notify_launcher_attach(MyDatabaseId);

	ereport(LOG, (errmsg("notify launcher started for database \"%s\"", dbname)));

	while (!ShutdownRequestPending)
	{
		bool		installed;
		List	   *providers;

		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}

		providers = enabled_providers(&installed);
		if (!installed)
		{
			if (!warned_missing)
				ereport(LOG,
						(errmsg("notify launcher: extension \"notify\" is not installed in database \"%s\"; waiting",
								dbname)));
			warned_missing = true;
			released = false;
		}
		else
		{
			warned_missing = false;
			if (!released)
			{
				release_orphans();
				notify_maintenance_reset();
				released = true;
			}
			reconcile(providers);
			run_maintenance();
		}
		list_free_deep(providers);

		(void) WaitLatch(MyLatch,
						 WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 LAUNCHER_NAP_MS,
						 PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}

	proc_exit(0);
}
