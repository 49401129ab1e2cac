/*-------------------------------------------------------------------------
 *
 * notify.h
 *	  Declarations shared by the PostgreSQL side of notify: GUCs (notify.c),
 *	  shared memory and wake-ups (shmem.c), the launcher (launcher.c) and
 *	  the delivery workers (worker.c), and what sqlfuncs.c lends to
 *	  notify_send() (send.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef NOTIFY_H
#define NOTIFY_H

#include "postgres.h"

#include "datatype/timestamp.h"
#include "storage/latch.h"
#include "utils/jsonb.h"

/* Limits of the shared state. */
#define NOTIFY_MAX_DATABASES	8
#define NOTIFY_MAX_WORKERS		64
#define NOTIFY_NAME_LEN			64
#define NOTIFY_SLOT_ERROR_LEN	256

/* GUCs (notify.c) */
extern char *notify_databases;
extern int	notify_workers_per_provider;
extern int	notify_batch_size;
extern int	notify_poll_interval_ms;
extern int	notify_max_attempts;
extern int	notify_backoff_base_ms;
extern int	notify_backoff_max_ms;
extern int	notify_request_timeout_ms;
extern int	notify_lease_ms;
extern int	notify_max_host_connections;
extern int	notify_max_inflight;
extern int	notify_retention_s;
extern int	notify_alert_lag_s;
extern bool notify_alert_dead;
extern int	notify_approval_threshold;

/* Whether _PG_init ran from shared_preload_libraries. */
extern bool notify_preloaded;

/* What a worker is doing, shown by notify_workers(). */
typedef enum NotifyWorkerState
{
	NOTIFY_WS_STARTING = 0,
	NOTIFY_WS_IDLE,
	NOTIFY_WS_CLAIMING,
	NOTIFY_WS_SENDING,
	NOTIFY_WS_RECORDING,
	NOTIFY_WS_PAUSED,
	NOTIFY_WS_BACKOFF			/* after an error */
} NotifyWorkerState;

/* One delivery worker, in shared memory. */
typedef struct NotifyWorkerSlot
{
	bool		in_use;
	Oid			dboid;
	char		provider[NOTIFY_NAME_LEN];
	int			number;			/* 0 .. workers_per_provider - 1 */
	pid_t		pid;			/* 0 until the worker attached */
	Latch	   *latch;
	NotifyWorkerState state;
	TimestampTz started_at;
	TimestampTz last_batch_at;
	uint64		batches;
	uint64		delivered;
	uint64		failed;
	uint64		retried;
	char		last_error[NOTIFY_SLOT_ERROR_LEN];
} NotifyWorkerSlot;

/* One launcher per served database. */
typedef struct NotifyLauncherSlot
{
	Oid			dboid;
	pid_t		pid;
	Latch	   *latch;
} NotifyLauncherSlot;

/* shmem.c */
extern void notify_shmem_request(void);
extern void notify_shmem_startup(void);
extern bool notify_shmem_ready(void);
extern NotifyWorkerSlot *notify_slot(int i);
extern void notify_slots_lock(bool exclusive);
extern void notify_slots_unlock(void);
extern void notify_wake_providers(Oid dboid, const char *const *providers, int n);
extern void notify_wake_launcher(Oid dboid);
extern void notify_launcher_attach(Oid dboid);
extern void notify_slot_set_state(NotifyWorkerSlot *slot, NotifyWorkerState state);
extern const char *notify_state_name(NotifyWorkerState state);

/* launcher.c */
extern void notify_register_launchers(void);
extern bool notify_lock_extension(void);
PGDLLEXPORT void notify_launcher_main(Datum arg);

/* maintenance.c */
extern void notify_maintenance(void);
extern void notify_maintenance_reset(void);

/* sqlfuncs.c */
extern void notify_check_push_payload(const char *kind, const char *provider,
									  Jsonb *message);
extern bool notify_push_payload_fits(const char *kind, Jsonb *message);
extern void notify_wake_at_commit(const char *const *providers, int n);

/* worker.c */
PGDLLEXPORT void notify_worker_main(Datum arg);

#endif							/* NOTIFY_H */
