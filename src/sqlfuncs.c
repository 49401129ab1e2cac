/*-------------------------------------------------------------------------
 *
 * sqlfuncs.c
 *	  SQL-callable internals that notify--1.0.sql builds its API on:
 *	  provider configuration checks and secret masking, the send-time
 *	  payload size check, and wake-up at commit.
 *
 * notify_check_push_payload() and notify_wake_at_commit() are also called
 * directly from C by notify_send() (send.c); see notify.h.
 *
 * The provider-specific knowledge (which keys are secret, how big a
 * payload gets) stays in the provider files; this file only adapts it to
 * SQL: Jsonb in, ereport out, and no jansson object alive when an ERROR
 * is raised.
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

#include "access/xact.h"
#include "commands/dbcommands.h"
#include "funcapi.h"
#include "catalog/pg_type.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/numeric.h"
#include "utils/timestamp.h"

#undef json_object

#include "notify.h"
#include "provider.h"

PG_FUNCTION_INFO_V1(notify_check_provider_config);
PG_FUNCTION_INFO_V1(notify_mask_secrets);
PG_FUNCTION_INFO_V1(notify_check_payload);
PG_FUNCTION_INFO_V1(notify_wake_on_commit);
PG_FUNCTION_INFO_V1(notify_providers_changed);
PG_FUNCTION_INFO_V1(notify_workers_loaded);
PG_FUNCTION_INFO_V1(notify_workers);

static const NotifyProviderOps *
lookup_kind(const char *kind)
{
	const NotifyProviderOps *ops = notify_provider_lookup(kind);

	if (ops == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("unknown provider kind \"%s\"", kind),
				 errhint("Kinds are apns, fcm, webpush, twilio, smtp and webhook.")));
	return ops;
}

/* Jsonb -> jansson; the caller must json_decref() the result. */
static json_t *
jsonb_to_jansson(Jsonb *jb)
{
	char	   *text = JsonbToCString(NULL, &jb->root, VARSIZE(jb));
	json_error_t jerr;
	json_t	   *result = json_loads(text, JSON_DECODE_ANY, &jerr);

	pfree(text);
	if (result == NULL)
		elog(ERROR, "could not convert jsonb for the provider: %s", jerr.text);
	return result;
}

static const char *const common_config_keys[] = {
	"endpoint", "ca_file", "h2c", "rate_limit", NULL
};

static bool
key_in(const char *key, int len, const char *const *list)
{
	for (; list && *list; list++)
		if ((int) strlen(*list) == len && strncmp(*list, key, len) == 0)
			return true;
	return false;
}

/*
 * Refuse keys the kind does not know (a misspelt "sandbox" must not be
 * silently ignored) and malformed common settings.
 */
static void
check_common_keys(const char *kind, const NotifyProviderOps *ops, Jsonb *config)
{
	JsonbIterator *it;
	JsonbValue	v;
	JsonbIteratorToken tok;
	int			depth = 0;

	if (!JB_ROOT_IS_OBJECT(config) || JB_ROOT_IS_SCALAR(config))
		return;					/* the provider's own check says what is wrong */

	it = JsonbIteratorInit(&config->root);
	while ((tok = JsonbIteratorNext(&it, &v, false)) != WJB_DONE)
	{
		if (tok == WJB_BEGIN_OBJECT || tok == WJB_BEGIN_ARRAY)
			depth++;
		else if (tok == WJB_END_OBJECT || tok == WJB_END_ARRAY)
			depth--;
		else if (tok == WJB_KEY && depth == 1)
		{
			const char *key = v.val.string.val;
			int			len = v.val.string.len;
			StringInfoData known;

			if (key_in(key, len, common_config_keys) || key_in(key, len, ops->config_keys))
				continue;

			initStringInfo(&known);
			for (const char *const *k = ops->config_keys; k && *k; k++)
				appendStringInfo(&known, "%s, ", *k);
			for (const char *const *k = common_config_keys; *k; k++)
				appendStringInfo(&known, "%s%s", *k, k[1] ? ", " : "");
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("unknown key \"%.*s\" in %s provider config", len, key, kind),
					 errhint("A %s provider takes: %s.", kind, known.data)));
		}
	}

	{
		JsonbValue *rate = getKeyJsonValueFromContainer(&config->root, "rate_limit", 10, NULL);
		JsonbValue *h2c = getKeyJsonValueFromContainer(&config->root, "h2c", 3, NULL);

		if (rate != NULL &&
			(rate->type != jbvNumeric ||
			 DatumGetFloat8(DirectFunctionCall1(numeric_float8, NumericGetDatum(rate->val.numeric))) <= 0))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("%s provider \"rate_limit\" must be a positive number", kind),
					 errhint("It is the most deliveries per second the provider gets, shared by its workers.")));
		if (h2c != NULL && h2c->type != jbvBool)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("%s provider \"h2c\" must be true or false", kind),
					 errhint("true speaks HTTP/2 with prior knowledge to a plain http:// endpoint.")));
	}
}

Datum
notify_check_provider_config(PG_FUNCTION_ARGS)
{
	char	   *kind = text_to_cstring(PG_GETARG_TEXT_PP(0));
	Jsonb	   *config = PG_GETARG_JSONB_P(1);
	const NotifyProviderOps *ops = lookup_kind(kind);
	json_t	   *json;
	char	   *problem;
	char	   *message = NULL;

	check_common_keys(kind, ops, config);
	json = jsonb_to_jansson(config);
	problem = ops->check_config(json);

	json_decref(json);
	if (problem)
	{
		message = pstrdup(problem);
		free(problem);
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid %s provider config: %s", kind, message),
				 errhint("The README's \"Providers\" section lists the keys the %s kind takes.", kind)));
	}
	PG_RETURN_VOID();
}

/*
 * Replace the value at a dotted path with a mask, if present.  A nested
 * object may also arrive as JSON text (a service account pasted as a
 * string): it is parsed so that only the secret inside is masked, or
 * masked whole when it does not parse.
 */
static void
mask_path(json_t *root, const char *path)
{
	char		buf[256];
	char	   *key = buf;
	char	   *dot;
	json_t	   *node = root;

	strlcpy(buf, path, sizeof(buf));
	while ((dot = strchr(key, '.')) != NULL)
	{
		json_t	   *child;

		*dot = '\0';
		child = json_object_get(node, key);
		if (child == NULL)
			return;
		if (json_is_string(child))
		{
			json_t	   *parsed = json_loads(json_string_value(child), 0, NULL);

			if (parsed == NULL || !json_is_object(parsed))
			{
				json_decref(parsed);
				json_object_set_new(node, key, json_string("********"));
				return;
			}
			json_object_set_new(node, key, parsed);
			child = parsed;
		}
		if (!json_is_object(child))
			return;
		node = child;
		key = dot + 1;
	}
	if (json_object_get(node, key) != NULL)
		json_object_set_new(node, key, json_string("********"));
}

Datum
notify_mask_secrets(PG_FUNCTION_ARGS)
{
	char	   *kind = text_to_cstring(PG_GETARG_TEXT_PP(0));
	Jsonb	   *config = PG_GETARG_JSONB_P(1);
	const NotifyProviderOps *ops = notify_provider_lookup(kind);
	json_t	   *json;
	char	   *dumped;
	char	   *copy;

	if (ops == NULL)
		PG_RETURN_NULL();		/* unknown kind: show nothing */

	json = jsonb_to_jansson(config);
	if (json_is_object(json))
	{
		for (const char *const *k = ops->secret_keys; k && *k; k++)
			mask_path(json, *k);
	}
	dumped = json_dumps(json, JSON_COMPACT | JSON_ENCODE_ANY);
	json_decref(json);
	if (dumped == NULL)
		PG_RETURN_NULL();
	copy = pstrdup(dumped);
	free(dumped);
	PG_RETURN_DATUM(DirectFunctionCall1(jsonb_in, CStringGetDatum(copy)));
}

/*
 * Refuse a rendered push message that the provider could not encode or
 * that is over its payload limit.  Called by notify_send() (send.c) for
 * every provider instance a send reaches, and from SQL below.
 */
void
notify_check_push_payload(const char *kind, const char *provider,
						  Jsonb *message)
{
	const NotifyProviderOps *ops = lookup_kind(kind);
	json_t	   *json;
	long		limit = 0;
	long		size;
	char	   *err = NULL;
	char	   *message_text = NULL;

	if (ops->payload_size == NULL)
		return;

	json = jsonb_to_jansson(message);
	size = ops->payload_size(json, &limit, &err);
	json_decref(json);

	if (size < 0)
	{
		message_text = pstrdup(err ? err : "unknown error");
		free(err);
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("rendered push message cannot be encoded for %s provider \"%s\": %s",
						kind, provider, message_text),
				 errhint("Check the template's push content.")));
	}
	free(err);
	if (limit > 0 && size > limit)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("rendered push payload for provider \"%s\" is %ld bytes, over the %s limit of %ld bytes",
						provider, size, kind, limit),
				 errhint("Shorten the text or the data; send large content by reference (a URL or an id) instead.")));
}

/*
 * Would notify_check_push_payload() pass?  (No ERROR: notify_send() asks
 * first and calls the raising check only on the path that raises.)
 */
bool
notify_push_payload_fits(const char *kind, Jsonb *message)
{
	const NotifyProviderOps *ops = notify_provider_lookup(kind);
	json_t	   *json;
	long		limit = 0;
	long		size;
	char	   *err = NULL;

	if (ops == NULL)
		return false;
	if (ops->payload_size == NULL)
		return true;
	json = jsonb_to_jansson(message);
	size = ops->payload_size(json, &limit, &err);
	json_decref(json);
	free(err);
	return size >= 0 && !(limit > 0 && size > limit);
}

Datum
notify_check_payload(PG_FUNCTION_ARGS)
{
	notify_check_push_payload(text_to_cstring(PG_GETARG_TEXT_PP(0)),
							  text_to_cstring(PG_GETARG_TEXT_PP(1)),
							  PG_GETARG_JSONB_P(2));
	PG_RETURN_VOID();
}

/*
 * Wake-up at commit.  notify_send() names the providers it wrote to; the
 * names are kept in the transaction's memory, and only a commit wakes
 * their workers.  A rollback drops them.
 */
#define WAKE_MAX 16

static char *wake_names[WAKE_MAX];
static int	wake_count = 0;
static bool wake_all = false;
static bool wake_launcher = false;
static bool callback_registered = false;

static void
wake_xact_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
			if (wake_launcher)
				notify_wake_launcher(MyDatabaseId);
			if (wake_all)
				notify_wake_providers(MyDatabaseId, NULL, -1);
			else if (wake_count > 0)
				notify_wake_providers(MyDatabaseId, (const char *const *) wake_names, wake_count);
			wake_count = 0;
			wake_all = false;
			wake_launcher = false;
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
		case XACT_EVENT_PREPARE:
			/* prepared transactions are picked up by polling */
			wake_count = 0;
			wake_all = false;
			wake_launcher = false;
			break;
		default:
			break;
	}
}

/*
 * Wake the workers of these providers when the current transaction
 * commits (duplicates and NULLs are ignored).  Nothing to do when notify
 * is not preloaded: there are no workers.
 */
void
notify_wake_at_commit(const char *const *providers, int n)
{
	if (!notify_shmem_ready())
		return;

	if (!callback_registered)
	{
		RegisterXactCallback(wake_xact_callback, NULL);
		callback_registered = true;
	}

	for (int i = 0; i < n && !wake_all; i++)
	{
		const char *name = providers[i];
		bool		seen = false;

		if (name == NULL)
			continue;
		for (int j = 0; j < wake_count; j++)
			if (strcmp(wake_names[j], name) == 0)
				seen = true;
		if (seen)
			continue;
		if (wake_count == WAKE_MAX)
		{
			wake_all = true;
			break;
		}
		wake_names[wake_count++] = MemoryContextStrdup(TopTransactionContext, name);
	}
}

Datum
notify_wake_on_commit(PG_FUNCTION_ARGS)
{
	ArrayType  *arr = PG_GETARG_ARRAYTYPE_P(0);
	Datum	   *elems;
	bool	   *nulls;
	const char **names;
	int			n;

	if (!notify_shmem_ready())
		PG_RETURN_VOID();

	deconstruct_array(arr, TEXTOID, -1, false, TYPALIGN_INT, &elems, &nulls, &n);
	names = palloc(sizeof(char *) * Max(n, 1));
	for (int i = 0; i < n; i++)
		names[i] = nulls[i] ? NULL : TextDatumGetCString(elems[i]);
	notify_wake_at_commit(names, n);
	PG_RETURN_VOID();
}

Datum
notify_providers_changed(PG_FUNCTION_ARGS)
{
	/* at commit: woken now, the launcher would not see the change yet */
	if (!notify_shmem_ready())
		PG_RETURN_VOID();
	if (!callback_registered)
	{
		RegisterXactCallback(wake_xact_callback, NULL);
		callback_registered = true;
	}
	wake_launcher = true;
	PG_RETURN_VOID();
}

Datum
notify_workers_loaded(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(notify_shmem_ready());
}

/*
 * notify_workers(): one row per delivery worker of the cluster, from
 * shared memory.  Empty when notify is not preloaded.
 */
Datum
notify_workers(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	NotifyWorkerSlot copy[NOTIFY_MAX_WORKERS];
	int			n = 0;

	InitMaterializedSRF(fcinfo, 0);
	if (!notify_shmem_ready())
		return (Datum) 0;

	/* copy under the lock, build tuples after releasing it */
	notify_slots_lock(false);
	for (int i = 0; i < NOTIFY_MAX_WORKERS; i++)
	{
		if (notify_slot(i)->in_use)
			copy[n++] = *notify_slot(i);
	}
	notify_slots_unlock();

	for (int i = 0; i < n; i++)
	{
		NotifyWorkerSlot *w = &copy[i];
		Datum		values[12];
		bool		nulls[12] = {false};
		char	   *dbname = get_database_name(w->dboid);

		values[0] = Int32GetDatum(w->pid);
		nulls[0] = w->pid == 0;
		if (dbname)
			values[1] = DirectFunctionCall1(namein, CStringGetDatum(dbname));
		else
			nulls[1] = true;
		values[2] = CStringGetTextDatum(w->provider);
		values[3] = Int32GetDatum(w->number);
		values[4] = CStringGetTextDatum(notify_state_name(w->state));
		values[5] = TimestampTzGetDatum(w->started_at);
		nulls[5] = w->started_at == 0;
		values[6] = TimestampTzGetDatum(w->last_batch_at);
		nulls[6] = w->last_batch_at == 0;
		values[7] = Int64GetDatum((int64) w->batches);
		values[8] = Int64GetDatum((int64) w->delivered);
		values[9] = Int64GetDatum((int64) w->failed);
		values[10] = Int64GetDatum((int64) w->retried);
		values[11] = CStringGetTextDatum(w->last_error);
		nulls[11] = w->last_error[0] == '\0';
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}
