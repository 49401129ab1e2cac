/*-------------------------------------------------------------------------
 *
 * shmem.c
 *	  notify's shared memory: one slot per delivery worker and per launcher,
 *	  and the wake-ups that travel through them.
 *
 * A committed notify_send() sets the latches of the workers serving the
 * providers it wrote to (notify_wake_providers, called from the commit
 * callback in sqlfuncs.c), so delivery starts within milliseconds instead
 * of at the next poll.  Slots also carry each worker's counters and last
 * error for notify_workers().
 *
 * This file knows nothing about SQL, providers or HTTP.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/proc.h"
#include "storage/shmem.h"

#include "notify.h"

typedef struct NotifyShared
{
	LWLock	   *lock;
	NotifyLauncherSlot launchers[NOTIFY_MAX_DATABASES];
	NotifyWorkerSlot workers[NOTIFY_MAX_WORKERS];
} NotifyShared;

static NotifyShared *shared = NULL;

void
notify_shmem_request(void)
{
	RequestAddinShmemSpace(MAXALIGN(sizeof(NotifyShared)));
	RequestNamedLWLockTranche("notify", 1);
}

void
notify_shmem_startup(void)
{
	bool		found;

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	shared = ShmemInitStruct("notify", sizeof(NotifyShared), &found);
	if (!found)
	{
		memset(shared, 0, sizeof(NotifyShared));
		shared->lock = &(GetNamedLWLockTranche("notify"))->lock;
	}
	LWLockRelease(AddinShmemInitLock);
}

bool
notify_shmem_ready(void)
{
	return shared != NULL;
}

NotifyWorkerSlot *
notify_slot(int i)
{
	Assert(shared != NULL && i >= 0 && i < NOTIFY_MAX_WORKERS);
	return &shared->workers[i];
}

void
notify_slots_lock(bool exclusive)
{
	LWLockAcquire(shared->lock, exclusive ? LW_EXCLUSIVE : LW_SHARED);
}

void
notify_slots_unlock(void)
{
	LWLockRelease(shared->lock);
}

/*
 * Set the latch of every worker of database dboid that serves one of the
 * named providers (every worker of the database when providers is NULL).  Cheap enough for every commit that sent something:
 * a shared lock and a scan of NOTIFY_MAX_WORKERS slots.
 */
void
notify_wake_providers(Oid dboid, const char *const *providers, int n)
{
	if (shared == NULL || (providers != NULL && n <= 0))
		return;

	LWLockAcquire(shared->lock, LW_SHARED);
	for (int i = 0; i < NOTIFY_MAX_WORKERS; i++)
	{
		NotifyWorkerSlot *slot = &shared->workers[i];

		if (!slot->in_use || slot->latch == NULL || slot->dboid != dboid)
			continue;
		if (providers == NULL)
		{
			SetLatch(slot->latch);
			continue;
		}
		for (int j = 0; j < n; j++)
		{
			if (strcmp(slot->provider, providers[j]) == 0)
			{
				SetLatch(slot->latch);
				break;
			}
		}
	}
	LWLockRelease(shared->lock);
}

void
notify_wake_launcher(Oid dboid)
{
	if (shared == NULL)
		return;

	LWLockAcquire(shared->lock, LW_SHARED);
	for (int i = 0; i < NOTIFY_MAX_DATABASES; i++)
	{
		if (shared->launchers[i].dboid == dboid && shared->launchers[i].latch)
			SetLatch(shared->launchers[i].latch);
	}
	LWLockRelease(shared->lock);
}

static void
launcher_detach(int code, Datum arg)
{
	int			i = DatumGetInt32(arg);

	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	shared->launchers[i].latch = NULL;
	shared->launchers[i].pid = 0;
	shared->launchers[i].dboid = InvalidOid;
	LWLockRelease(shared->lock);
}

/* Called by a launcher once connected: makes it wakeable. */
void
notify_launcher_attach(Oid dboid)
{
	int			free_slot = -1;

	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	for (int i = 0; i < NOTIFY_MAX_DATABASES; i++)
	{
		if (shared->launchers[i].pid == 0 && free_slot < 0)
			free_slot = i;
	}
	if (free_slot >= 0)
	{
		shared->launchers[free_slot].dboid = dboid;
		shared->launchers[free_slot].pid = MyProcPid;
		shared->launchers[free_slot].latch = &MyProc->procLatch;
	}
	LWLockRelease(shared->lock);

	if (free_slot < 0)
		ereport(ERROR,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("notify serves at most %d databases", NOTIFY_MAX_DATABASES)));
	before_shmem_exit(launcher_detach, Int32GetDatum(free_slot));
}

void
notify_slot_set_state(NotifyWorkerSlot *slot, NotifyWorkerState state)
{
	/* a single aligned store; readers tolerate a stale value */
	slot->state = state;
}

const char *
notify_state_name(NotifyWorkerState state)
{
	switch (state)
	{
		case NOTIFY_WS_STARTING:
			return "starting";
		case NOTIFY_WS_IDLE:
			return "idle";
		case NOTIFY_WS_CLAIMING:
			return "claiming";
		case NOTIFY_WS_SENDING:
			return "sending";
		case NOTIFY_WS_RECORDING:
			return "recording";
		case NOTIFY_WS_PAUSED:
			return "paused";
		case NOTIFY_WS_BACKOFF:
			return "backoff";
	}
	return "unknown";
}
