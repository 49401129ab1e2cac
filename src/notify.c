/*-------------------------------------------------------------------------
 *
 * notify.c
 *	  Module entry point: every notify.* setting, and the hooks that give
 *	  notify its shared memory and its launchers when it is loaded through
 *	  shared_preload_libraries.
 *
 * Loaded any other way (CREATE EXTENSION alone), notify still renders,
 * validates and queues; it just has no workers, and says so.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <curl/curl.h>

#include "fmgr.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "utils/guc.h"

#include "notify.h"

PG_MODULE_MAGIC;

void		_PG_init(void);

char	   *notify_databases = NULL;
int			notify_workers_per_provider = 1;
int			notify_batch_size = 500;
int			notify_poll_interval_ms = 1000;
int			notify_max_attempts = 10;
int			notify_backoff_base_ms = 1000;
int			notify_backoff_max_ms = 3600 * 1000;
int			notify_request_timeout_ms = 10000;
int			notify_lease_ms = 60000;
int			notify_max_host_connections = 4;
int			notify_max_inflight = 1000;
int			notify_retention_s = 30 * 24 * 3600;
int			notify_alert_lag_s = 300;
bool		notify_alert_dead = true;
int			notify_approval_threshold = 10000;

bool		notify_preloaded = false;

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

static void
notify_shmem_request_hook(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	notify_shmem_request();
}

static void
notify_shmem_startup_hook(void)
{
	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();
	notify_shmem_startup();
}

static void
define_gucs(void)
{
	DefineCustomStringVariable("notify.database",
							   "Databases whose notify outbox is delivered (comma-separated).",
							   "One launcher runs per database; it needs a restart to change.",
							   &notify_databases,
							   "postgres",
	/* a postmaster setting can only be defined while preloading */
							   process_shared_preload_libraries_in_progress ? PGC_POSTMASTER : PGC_SIGHUP,
							   0,
							   NULL, NULL, NULL);
	DefineCustomIntVariable("notify.workers_per_provider",
							"Delivery workers started for each enabled provider.",
							NULL,
							&notify_workers_per_provider,
							1, 1, 16,
							PGC_SIGHUP, 0,
							NULL, NULL, NULL);
	DefineCustomIntVariable("notify.batch_size",
							"Outbox rows a worker claims at once.",
							NULL,
							&notify_batch_size,
							500, 1, 10000,
							PGC_SIGHUP, 0,
							NULL, NULL, NULL);
	DefineCustomIntVariable("notify.poll_interval",
							"How often an idle worker looks for scheduled rows and retries.",
							"Committed sends wake workers at once; polling is the fallback.",
							&notify_poll_interval_ms,
							1000, 10, 3600 * 1000,
							PGC_SIGHUP, GUC_UNIT_MS,
							NULL, NULL, NULL);
	DefineCustomIntVariable("notify.max_attempts",
							"Attempts before a delivery is dead.",
							NULL,
							&notify_max_attempts,
							10, 1, 1000,
							PGC_SIGHUP, 0,
							NULL, NULL, NULL);
	DefineCustomIntVariable("notify.backoff_base",
							"First retry delay; doubled on every further attempt, with jitter.",
							NULL,
							&notify_backoff_base_ms,
							1000, 1, 3600 * 1000,
							PGC_SIGHUP, GUC_UNIT_MS,
							NULL, NULL, NULL);
	DefineCustomIntVariable("notify.backoff_max",
							"Longest retry delay.",
							NULL,
							&notify_backoff_max_ms,
							3600 * 1000, 1, 24 * 3600 * 1000,
							PGC_SIGHUP, GUC_UNIT_MS,
							NULL, NULL, NULL);
	DefineCustomIntVariable("notify.request_timeout",
							"Longest time one provider request may take.",
							NULL,
							&notify_request_timeout_ms,
							10000, 100, 600000,
							PGC_SIGHUP, GUC_UNIT_MS,
							NULL, NULL, NULL);
	DefineCustomIntVariable("notify.lease",
							"How long a claimed row stays with its worker before another may claim it.",
							"Must exceed a batch's delivery time; a worker that dies releases its rows when the lease runs out.",
							&notify_lease_ms,
							60000, 1000, 3600 * 1000,
							PGC_SIGHUP, GUC_UNIT_MS,
							NULL, NULL, NULL);
	DefineCustomIntVariable("notify.max_host_connections",
							"Connections a worker keeps open to one provider host.",
							"HTTP/2 multiplexes many requests on each.",
							&notify_max_host_connections,
							4, 1, 100,
							PGC_SIGHUP, 0,
							NULL, NULL, NULL);
	DefineCustomIntVariable("notify.max_inflight",
							"Requests a worker has in flight at once.",
							NULL,
							&notify_max_inflight,
							1000, 1, 10000,
							PGC_SIGHUP, 0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("notify.retention",
							"How long finished deliveries, attempts and notifications are kept.",
							"The launcher purges older history in small batches; 0 keeps everything.",
							&notify_retention_s,
							30 * 24 * 3600, 0, INT_MAX,
							PGC_SIGHUP, GUC_UNIT_S,
							NULL, NULL, NULL);
	DefineCustomIntVariable("notify.alert_lag",
							"Raise an alert when the oldest ready delivery of a provider waited this long.",
							"0 turns the lag alert off.",
							&notify_alert_lag_s,
							300, 0, 24 * 3600,
							PGC_SIGHUP, GUC_UNIT_S,
							NULL, NULL, NULL);
	DefineCustomBoolVariable("notify.alert_dead",
							 "Raise an alert when deliveries go dead.",
							 NULL,
							 &notify_alert_dead,
							 true,
							 PGC_SIGHUP, 0,
							 NULL, NULL, NULL);

	DefineCustomIntVariable("notify.approval_threshold",
							"Group sends to more recipients than this wait for notify_approve().",
							NULL,
							&notify_approval_threshold,
							10000, 0, INT_MAX,
							PGC_SUSET, 0,
							NULL, NULL, NULL);

	MarkGUCPrefixReserved("notify");
}

void
_PG_init(void)
{
	define_gucs();

	if (!process_shared_preload_libraries_in_progress)
		return;

	notify_preloaded = true;

	/* libcurl's global state, once, before any worker forks. */
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
		ereport(ERROR,
				(errcode(ERRCODE_SYSTEM_ERROR),
				 errmsg("notify could not initialize libcurl")));

	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = notify_shmem_request_hook;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = notify_shmem_startup_hook;

	notify_register_launchers();
}
