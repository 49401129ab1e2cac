/*-------------------------------------------------------------------------
 *
 * send.c
 *	  notify_send(): the product's hot path, one call per notification,
 *	  inside the application's own transaction; and what it keeps in
 *	  memory between calls.
 *
 * Statements per send (prepared once per backend, SPI_keepplan, generic
 * plans):
 *
 *	 1. the recipient, its opt-outs for the category and, when the template
 *		has a push variant, its active devices;
 *	 2. without an idempotency key, nothing can conflict: the notification
 *		and all its rows (outbox rows, and deliveries rows for what is
 *		suppressed or skipped) in one statement of data-modifying CTEs.
 *
 * With an idempotency key, or when a destination has no usable provider
 * instance or a push payload is over its limit (the send will fail), the
 * plpgsql version's steps instead, raising where it raised: is the key
 * taken (before 1); the notifications row, ON CONFLICT DO NOTHING (a
 * concurrent send with the same key that committed first wins, and its
 * id is read back); then the rows, in one INSERT .. SELECT FROM unnest()
 * per table.  Then the wake-up at commit (sqlfuncs.c), in C.  A frequency
 * cap on a channel of the send costs one count each; quiet hours one call
 * of notify._quiet_until().
 *
 * Templates (compiled, with render.c's C API), provider instances and
 * frequency caps change rarely and are read per backend: templates per
 * name, providers and caps whole.  A statement trigger on each of the
 * three tables (notify._config_changed) sends a relcache invalidation
 * for the table, which every session processes at its next transaction
 * start (this one at once, and again should the change roll back); the
 * callback below marks the copy stale, and the next send reads the table
 * again.  So a send sees the configuration committed when its transaction
 * began, or changed by its own transaction; a change another session
 * commits while a transaction runs is seen from its next transaction.  A
 * copy read under REPEATABLE READ or SERIALIZABLE (whose snapshot may be
 * older than the invalidations already processed) is used by that
 * transaction only.  Memory of a stale copy is released at the end of the
 * transaction, never while a send may still point into it.
 *
 * The behaviour is that of the plpgsql version this replaces: the same
 * validation order, messages, details, hints and SQLSTATEs (a NULL shows
 * as <NULL>, as plpgsql's RAISE showed it); the same rows, with the same
 * ids in the same order: outbox and deliveries rows share
 * notify.outbox_id_seq, their ids are drawn here in the order the plpgsql
 * loop drew them, and outbox rows are inserted with OVERRIDING SYSTEM
 * VALUE.
 *
 * This file knows notify's tables and the rules of a send.  It does not
 * know how templates render (render.c), what a provider accepts (the
 * provider files, through sqlfuncs.c) or how workers are woken (shmem.c).
 * Saved plans survive DDL by replanning; while a table is missing (a
 * dropped extension) the statement fails with an ERROR.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_collation.h"
#include "catalog/pg_type.h"
#include "commands/sequence.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "nodes/parsenodes.h"
#include "storage/proc.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/hsearch.h"
#include "utils/inval.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/numeric.h"
#include "utils/timestamp.h"
#include "utils/varlena.h"

#include "notify.h"
#include "render.h"

PG_FUNCTION_INFO_V1(notify_send);
PG_FUNCTION_INFO_V1(notify_config_changed);

/* How plpgsql's RAISE shows a NULL argument. */
#define RAISE_NULL "<NULL>"

/* Longest template name (notify.templates' CHECK); longer ones are not kept. */
#define TEMPLATE_NAME_MAX 128

/* Template names kept per backend before the copy starts over. */
#define TEMPLATE_NAMES_MAX 4096

/* The channels (channel_order() sorts them as the database does). */
#define NCHANNELS 4
static const char *const channel_names[NCHANNELS] = {"email", "push", "sms", "webhook"};


/* ----------------------------------------------------------------
 * Statements
 * ----------------------------------------------------------------
 */

/* Is this idempotency key taken?  (Also the re-read after a conflict.) */
static const char *const by_key_sql =
"SELECT n.id FROM notify.notifications n WHERE n.idempotency_key = $1";

/*
 * The recipient; its preference rows that matter for the category (the
 * channel's row, category NULL, and the category's row) as {channel,
 * is the channel's row, enabled}; and, when $3, its active devices as
 * {id, app, platform, destination}.
 */
static const char *const recipient_sql =
"SELECT r.id, r.email, r.phone, r.locale, r.timezone, r.attributes,"
"       ARRAY(SELECT ARRAY[p.channel, (p.category IS NULL)::text, p.enabled::text]"
"               FROM notify.preferences p"
"              WHERE p.recipient_id = r.id AND (p.category IS NULL OR p.category = $2)),"
"       CASE WHEN $3 THEN"
"         ARRAY(SELECT ARRAY[d.id::text, d.app, d.platform,"
"                            CASE WHEN d.platform = 'web' THEN d.subscription::text"
"                                 ELSE d.token END]"
"                 FROM notify.devices d WHERE d.recipient_id = r.id AND d.active)"
"       END"
"  FROM notify.recipients r WHERE r.external_id = $1";

/* Earlier notifications a frequency cap counts. */
static const char *const cap_count_sql =
"SELECT count(*) FROM notify.notifications n"
" WHERE n.recipient_id = $1 AND n.created_at > now() - $2"
"   AND n.rendered ? $3 AND ($4::text IS NULL OR n.category = $4)";

static const char *const quiet_sql =
"SELECT notify._quiet_until($1, coalesce($2, 'UTC'), now())";

/* Only when no instance was found: raises the error that says why. */
static const char *const provider_for_sql =
"SELECT notify._provider_for($1, $2)";

static const char *const notification_sql =
"INSERT INTO notify.notifications AS n (recipient_id, recipient, template, params, rendered,"
"                                       versions, category, priority, send_at, expires_at,"
"                                       idempotency_key)"
"VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
"ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING "
"RETURNING n.id";

/*
 * Without an idempotency key: the notification and its rows in one
 * statement ($1..$10 the notification, then rows as arrays, or one row).
 */
#define SEND_NOTIFICATION \
"WITH n AS (" \
"  INSERT INTO notify.notifications AS n (recipient_id, recipient, template, params, rendered," \
"                                         versions, category, priority, send_at, expires_at)" \
"  VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING n.id)"
#define SEND_OUTBOX(rows) \
", o AS (" \
"  INSERT INTO notify.outbox (id, notification_id, recipient_id, channel, provider, destination," \
"                             device_id, priority, next_attempt_at, expires_at) " \
"  OVERRIDING SYSTEM VALUE " \
"  SELECT u.id, n.id, $1, u.channel, u.provider, u.destination, u.device_id, $8, u.due, $10" \
"    FROM n, " rows " AS u (id, channel, provider, destination, device_id, due))"
#define SEND_DELIVERIES(rows) \
", d AS (" \
"  INSERT INTO notify.deliveries (id, notification_id, recipient_id, channel, destination," \
"                                 device_id, priority, status, last_error, created_at) " \
"  SELECT u.id, n.id, $1, u.channel, u.destination, u.device_id, $8, u.status, u.last_error," \
"         now()" \
"    FROM n, " rows " AS u (id, channel, destination, device_id, status, last_error))"
static const char *const send_one_sql =
SEND_NOTIFICATION
SEND_OUTBOX("(VALUES ($11::bigint, $12::text, $13::text, $14::text, $15::bigint, $16::timestamptz))")
" SELECT id FROM n";

static const char *const send_outbox_sql =
SEND_NOTIFICATION
SEND_OUTBOX("unnest($11::bigint[], $12::text[], $13::text[], $14::text[], $15::bigint[], $16::timestamptz[])")
" SELECT id FROM n";

static const char *const send_deliveries_sql =
SEND_NOTIFICATION
SEND_DELIVERIES("unnest($11::bigint[], $12::text[], $13::text[], $14::bigint[], $15::text[], $16::text[])")
" SELECT id FROM n";

static const char *const send_both_sql =
SEND_NOTIFICATION
SEND_OUTBOX("unnest($11::bigint[], $12::text[], $13::text[], $14::text[], $15::bigint[], $16::timestamptz[])")
SEND_DELIVERIES("unnest($17::bigint[], $18::text[], $19::text[], $20::bigint[], $21::text[], $22::text[])")
" SELECT id FROM n";

static const char *const outbox_sql =
"INSERT INTO notify.outbox (id, notification_id, recipient_id, channel, provider, destination,"
"                           device_id, priority, next_attempt_at, expires_at) "
"OVERRIDING SYSTEM VALUE "
"SELECT u.id, $1, $2, u.channel, u.provider, u.destination, u.device_id, $3, u.due, $4"
"  FROM unnest($5::bigint[], $6::text[], $7::text[], $8::text[], $9::bigint[],"
"              $10::timestamptz[]) AS u (id, channel, provider, destination, device_id, due)";

static const char *const deliveries_sql =
"INSERT INTO notify.deliveries (id, notification_id, recipient_id, channel, destination,"
"                               device_id, priority, status, last_error, created_at) "
"SELECT u.id, $1, $2, u.channel, u.destination, u.device_id, $3, u.status, u.last_error, now()"
"  FROM unnest($4::bigint[], $5::text[], $6::text[], $7::bigint[], $8::text[],"
"              $9::text[]) AS u (id, channel, destination, device_id, status, last_error)";

/* Reading the configuration kept in memory. */
static const char *const templates_sql =
"SELECT DISTINCT ON (t.channel, t.locale) t.channel, t.locale, t.version, t.content"
"  FROM notify.templates t WHERE t.name = $1"
" ORDER BY t.channel, t.locale, t.version DESC";

static const char *const providers_sql =
"SELECT p.name, p.kind, p.enabled FROM notify.providers p";

static const char *const caps_sql =
"SELECT c.channel, c.category, c.max_count, c.per FROM notify.frequency_caps c";

static SPIPlanPtr by_key_plan;
static SPIPlanPtr recipient_plan;
static SPIPlanPtr cap_count_plan;
static SPIPlanPtr quiet_plan;
static SPIPlanPtr provider_for_plan;
static SPIPlanPtr notification_plan;
static SPIPlanPtr send_one_plan;
static SPIPlanPtr send_outbox_plan;
static SPIPlanPtr send_deliveries_plan;
static SPIPlanPtr send_both_plan;
static SPIPlanPtr outbox_plan;
static SPIPlanPtr deliveries_plan;
static SPIPlanPtr templates_plan;
static SPIPlanPtr providers_plan;
static SPIPlanPtr caps_plan;

/* Run a statement (prepared on first use, generic plan, kept); ERROR unless rc. */
static void
run(SPIPlanPtr *plan, const char *sql, int nargs, Oid *types,
	Datum *values, const char *nulls, int expected)
{
	int			rc;

	if (*plan == NULL)
	{
		SPIPlanPtr	p = SPI_prepare_cursor(sql, nargs, types,
										   CURSOR_OPT_GENERIC_PLAN);

		if (p == NULL)
			elog(ERROR, "notify_send could not prepare a statement: %s",
				 SPI_result_code_string(SPI_result));
		if (SPI_keepplan(p) != 0)
			elog(ERROR, "SPI_keepplan failed");
		*plan = p;
	}
	rc = SPI_execute_plan(*plan, values, nulls, false, 0);
	if (rc != expected)
		elog(ERROR, "notify_send: statement failed: %s",
			 SPI_result_code_string(rc));
}

static char *
column_text(int row, int col)
{
	bool		isnull;
	Datum		d = SPI_getbinval(SPI_tuptable->vals[row], SPI_tuptable->tupdesc,
								  col, &isnull);

	return isnull ? NULL : TextDatumGetCString(d);
}

static Datum
column(int row, int col, bool *isnull)
{
	return SPI_getbinval(SPI_tuptable->vals[row], SPI_tuptable->tupdesc, col,
						 isnull);
}


/* ----------------------------------------------------------------
 * The configuration kept in memory
 * ----------------------------------------------------------------
 */

/* One table's copy. */
typedef struct ConfigCopy
{
	const char *table;			/* in schema notify */
	Oid			relid;			/* of the table read; invalidations name it */
	bool		valid;
	bool		this_xact_only; /* read under a transaction snapshot */
	LocalTransactionId lxid;	/* ... in this transaction */
	MemoryContext cxt;			/* holds the copy */
} ConfigCopy;

typedef struct ProviderRow
{
	char	   *name;
	char	   *kind;
	bool		enabled;
} ProviderRow;

typedef struct CapRow
{
	char	   *channel;
	char	   *category;		/* NULL: every category */
	int32		max_count;
	Datum		per;			/* interval */
} CapRow;

/* The newest version of one (channel, locale) of a template. */
typedef struct TemplateVariant
{
	char	   *channel;
	char	   *locale;
	int32		version;
	Jsonb	   *content;
	NotifyTemplate *compiled;	/* on first use */
} TemplateVariant;

typedef struct TemplateSet
{
	char		name[TEMPLATE_NAME_MAX + 1];	/* hash key */
	int			nvariants;
	TemplateVariant *variants;
} TemplateSet;

static ConfigCopy providers_copy = {"providers"};
static ConfigCopy caps_copy = {"frequency_caps"};
static ConfigCopy templates_copy = {"templates"};

static ProviderRow *providers;
static int	nproviders;
static CapRow *caps;
static int	ncaps;
static HTAB *template_sets;

static bool callback_registered = false;

/* Relcache invalidation: a kept table changed (or everything must go). */
static void
config_invalidate(Datum arg, Oid relid)
{
	if (relid == InvalidOid || relid == providers_copy.relid)
		providers_copy.valid = false;
	if (relid == InvalidOid || relid == caps_copy.relid)
		caps_copy.valid = false;
	if (relid == InvalidOid || relid == templates_copy.relid)
		templates_copy.valid = false;
}

/*
 * Is the copy usable?  If not, retire its memory to the transaction (a
 * send up the stack may still point into it) and start a new one; the
 * caller reads the table into copy->cxt.
 */
static bool
config_usable(ConfigCopy *copy)
{
	if (copy->valid &&
		(!copy->this_xact_only || copy->lxid == MyProc->lxid))
		return true;

	if (!callback_registered)
	{
		CacheRegisterRelcacheCallback(config_invalidate, (Datum) 0);
		callback_registered = true;
	}
	if (copy->cxt != NULL)
		MemoryContextSetParent(copy->cxt, TopTransactionContext);
	copy->cxt = AllocSetContextCreate(CacheMemoryContext, "notify_send config",
									  ALLOCSET_SMALL_SIZES);
	copy->valid = false;
	return false;
}

/*
 * The copy was read (into copy->cxt), or is about to be filled as needed
 * (templates).  A copy read under a transaction snapshot serves that
 * transaction only: the snapshot may predate invalidations this session
 * already processed.
 */
static void
config_read(ConfigCopy *copy, bool this_xact_only)
{
	copy->relid = get_relname_relid(copy->table,
									get_namespace_oid("notify", false));
	copy->this_xact_only = this_xact_only;
	copy->lxid = MyProc->lxid;
	copy->valid = true;
}

static void
need_providers(void)
{
	MemoryContext old;

	if (config_usable(&providers_copy))
		return;
	run(&providers_plan, providers_sql, 0, NULL, NULL, NULL, SPI_OK_SELECT);
	old = MemoryContextSwitchTo(providers_copy.cxt);
	nproviders = (int) SPI_processed;
	providers = palloc(sizeof(ProviderRow) * Max(nproviders, 1));
	for (int i = 0; i < nproviders; i++)
	{
		bool		isnull;

		providers[i].name = column_text(i, 1);
		providers[i].kind = column_text(i, 2);
		providers[i].enabled = DatumGetBool(column(i, 3, &isnull));
	}
	MemoryContextSwitchTo(old);
	config_read(&providers_copy, IsolationUsesXactSnapshot());
}

static void
need_caps(void)
{
	MemoryContext old;

	if (config_usable(&caps_copy))
		return;
	run(&caps_plan, caps_sql, 0, NULL, NULL, NULL, SPI_OK_SELECT);
	old = MemoryContextSwitchTo(caps_copy.cxt);
	ncaps = (int) SPI_processed;
	caps = palloc(sizeof(CapRow) * Max(ncaps, 1));
	for (int i = 0; i < ncaps; i++)
	{
		bool		isnull;

		caps[i].channel = column_text(i, 1);
		caps[i].category = column_text(i, 2);
		caps[i].max_count = DatumGetInt32(column(i, 3, &isnull));
		caps[i].per = datumCopy(column(i, 4, &isnull), false, sizeof(Interval));
	}
	MemoryContextSwitchTo(old);
	config_read(&caps_copy, IsolationUsesXactSnapshot());
}

/*
 * Read the variants of a template into a new set, in a context of its own
 * (a child of the current one: an ERROR while reading leaves nothing
 * behind).
 */
static TemplateSet *
read_template_set(text *name)
{
	Oid			types[1] = {TEXTOID};
	Datum		values[1] = {PointerGetDatum(name)};
	MemoryContext cxt;
	MemoryContext old;
	TemplateSet *set;

	run(&templates_plan, templates_sql, 1, types, values, NULL, SPI_OK_SELECT);
	cxt = AllocSetContextCreate(CurrentMemoryContext, "notify_send template set",
								ALLOCSET_SMALL_SIZES);
	old = MemoryContextSwitchTo(cxt);
	set = palloc0(sizeof(TemplateSet));
	set->nvariants = (int) SPI_processed;
	set->variants = palloc0(sizeof(TemplateVariant) * Max(set->nvariants, 1));
	for (int i = 0; i < set->nvariants; i++)
	{
		TemplateVariant *v = &set->variants[i];
		bool		isnull;

		v->channel = column_text(i, 1);
		v->locale = column_text(i, 2);
		v->version = DatumGetInt32(column(i, 3, &isnull));
		v->content = DatumGetJsonbPCopy(column(i, 4, &isnull));
	}
	MemoryContextSwitchTo(old);
	return set;
}

/*
 * The variants of a template (none: no such template).  Kept per name,
 * unless read under a transaction snapshot (or the name is too long to be
 * one): then read for this call only.
 */
static TemplateSet *
template_set(text *name)
{
	char	   *cname = text_to_cstring(name);
	TemplateSet *set;
	TemplateSet *entry;
	bool		found;

	if (!config_usable(&templates_copy) ||
		hash_get_num_entries(template_sets) >= TEMPLATE_NAMES_MAX)
	{
		HASHCTL		ctl;

		if (templates_copy.valid)
		{
			/* too many names: start over */
			templates_copy.valid = false;
			(void) config_usable(&templates_copy);
		}
		ctl.keysize = TEMPLATE_NAME_MAX + 1;
		ctl.entrysize = sizeof(TemplateSet);
		ctl.hcxt = templates_copy.cxt;
		template_sets = hash_create("notify_send templates", 64, &ctl,
									HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);
		config_read(&templates_copy, false);
	}

	if (strlen(cname) > TEMPLATE_NAME_MAX)
		return read_template_set(name);
	entry = hash_search(template_sets, cname, HASH_FIND, NULL);
	if (entry != NULL)
		return entry;

	set = read_template_set(name);
	if (IsolationUsesXactSnapshot())
		return set;
	MemoryContextSetParent(GetMemoryChunkContext(set), templates_copy.cxt);
	entry = hash_search(template_sets, cname, HASH_ENTER, &found);
	entry->nvariants = set->nvariants;
	entry->variants = set->variants;
	return entry;
}

/*
 * The compiled template of a variant, compiled on first use.  Compiling
 * happens in a context that dies with this call if it fails (a child of
 * the SPI procedure context), handed to the kept copy once it succeeded.
 */
static const NotifyTemplate *
compiled(TemplateVariant *v, const char *name)
{
	MemoryContext cxt;
	MemoryContext old;
	NotifyTemplate *tpl;

	if (v->compiled != NULL)
		return v->compiled;
	cxt = AllocSetContextCreate(CurrentMemoryContext, "notify_send template",
								ALLOCSET_SMALL_SIZES);
	old = MemoryContextSwitchTo(cxt);
	tpl = notify_template_compile(v->content, v->channel, name);
	MemoryContextSwitchTo(old);
	MemoryContextSetParent(cxt, GetMemoryChunkContext(v));
	v->compiled = tpl;
	return tpl;
}

/*
 * The provider instance for a destination of this kind: the one the
 * device names (app) if it is of this kind, else the instance named after
 * the kind, else the only enabled instance of the kind; NULL if none.
 * (The plpgsql version's coalesce() of three subqueries, as written: the
 * second does not look at the kind of the instance named after it.)
 */
static const char *
resolve_provider(const char *kind, const char *app)
{
	const char *only = NULL;
	int			enabled = 0;

	if (app != NULL)
	{
		for (int i = 0; i < nproviders; i++)
			if (strcmp(providers[i].name, app) == 0 &&
				strcmp(providers[i].kind, kind) == 0)
				return providers[i].name;
	}
	for (int i = 0; i < nproviders; i++)
		if (strcmp(providers[i].name, kind) == 0)
			return providers[i].name;
	for (int i = 0; i < nproviders; i++)
	{
		if (providers[i].enabled && strcmp(providers[i].kind, kind) == 0)
		{
			only = providers[i].name;
			enabled++;
		}
	}
	return enabled == 1 ? only : NULL;
}

/*
 * No instance found: notify._provider_for() raises the error that says
 * why (or names an instance that appeared meanwhile).
 */
static char *
provider_for(const char *kind, const char *app)
{
	Oid			types[2] = {TEXTOID, TEXTOID};
	Datum		values[2];
	char		nulls[2] = {' ', ' '};
	char	   *provider;

	values[0] = CStringGetTextDatum(kind);
	if (app != NULL)
		values[1] = CStringGetTextDatum(app);
	else
		nulls[1] = 'n';
	run(&provider_for_plan, provider_for_sql, 2, types, values, nulls,
		SPI_OK_SELECT);
	provider = column_text(0, 1);
	if (provider == NULL)
		elog(ERROR, "notify._provider_for(%s) returned NULL", kind);
	return provider;
}

/*
 * notify._config_changed(): statement trigger on the tables kept in
 * memory; tells every session (this one at the next command) to read the
 * table again.
 */
Datum
notify_config_changed(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;

	if (!CALLED_AS_TRIGGER(fcinfo))
		elog(ERROR, "notify._config_changed() must be called as a trigger");
	CacheInvalidateRelcache(trigdata->tg_relation);
	return PointerGetDatum(NULL);
}


/* ----------------------------------------------------------------
 * Small helpers
 * ----------------------------------------------------------------
 */

/*
 * The channels in the order "ORDER BY channel" gives them under the
 * database's collation (the order the plpgsql loop handled them in).
 */
static const char *const *
channel_order(void)
{
	static const char *order[NCHANNELS];
	static bool done = false;

	if (!done)
	{
		for (int i = 0; i < NCHANNELS; i++)
			order[i] = channel_names[i];
		for (int i = 1; i < NCHANNELS; i++)
			for (int j = i; j > 0 &&
				 varstr_cmp(order[j], strlen(order[j]), order[j - 1],
							strlen(order[j - 1]), DEFAULT_COLLATION_OID) < 0; j--)
			{
				const char *t = order[j];

				order[j] = order[j - 1];
				order[j - 1] = t;
			}
		done = true;
	}
	return order;
}

/* attributes ->> key */
static char *
attribute_text(Jsonb *attributes, const char *key)
{
	JsonbValue	vbuf;
	JsonbValue *v;

	if (!JB_ROOT_IS_OBJECT(attributes))
		return NULL;
	v = getKeyJsonValueFromContainer(&attributes->root, key, strlen(key), &vbuf);
	if (v == NULL)
		return NULL;
	switch (v->type)
	{
		case jbvNull:
			return NULL;
		case jbvBool:
			return pstrdup(v->val.boolean ? "true" : "false");
		case jbvString:
			return pnstrdup(v->val.string.val, v->val.string.len);
		case jbvNumeric:
			return DatumGetCString(DirectFunctionCall1(numeric_out,
													   NumericGetDatum(v->val.numeric)));
		case jbvBinary:
			return JsonbToCString(NULL, v->val.binary.data, v->val.binary.len);
		default:
			elog(ERROR, "unrecognized jsonb type: %d", (int) v->type);
	}
	return NULL;
}

static const char *
or_raise_null(const char *s)
{
	return s ? s : RAISE_NULL;
}

/* The text output of a datum, as RAISE and format() show it. */
static char *
datum_text(Datum value, Oid type)
{
	Oid			typoutput;
	bool		typisvarlena;

	getTypeOutputInfo(type, &typoutput, &typisvarlena);
	return OidOutputFunctionCall(typoutput, value);
}

/* The id stored under an idempotency key, if any. */
static bool
id_for_key(text *key, int64 *id)
{
	Oid			types[1] = {TEXTOID};
	Datum		values[1] = {PointerGetDatum(key)};
	bool		isnull;

	run(&by_key_plan, by_key_sql, 1, types, values, NULL, SPI_OK_SELECT);
	if (SPI_processed == 0)
		return false;
	*id = DatumGetInt64(column(0, 1, &isnull));
	return !isnull;
}


/* ----------------------------------------------------------------
 * The rows a send writes
 * ----------------------------------------------------------------
 */

/* Rows of one INSERT .. SELECT FROM unnest(): six columns of equal length. */
#define ROW_COLUMNS 6

typedef struct RowBuf
{
	int			n;
	int			cap;
	Datum	   *values[ROW_COLUMNS];
	bool	   *nulls[ROW_COLUMNS];
} RowBuf;

static void
rowbuf_add(RowBuf *rb, const Datum *values, const bool *nulls)
{
	if (rb->n == rb->cap)
	{
		int			cap = rb->cap == 0 ? 4 : rb->cap * 2;

		for (int c = 0; c < ROW_COLUMNS; c++)
		{
			if (rb->cap == 0)
			{
				rb->values[c] = palloc(sizeof(Datum) * cap);
				rb->nulls[c] = palloc(sizeof(bool) * cap);
			}
			else
			{
				rb->values[c] = repalloc(rb->values[c], sizeof(Datum) * cap);
				rb->nulls[c] = repalloc(rb->nulls[c], sizeof(bool) * cap);
			}
		}
		rb->cap = cap;
	}
	for (int c = 0; c < ROW_COLUMNS; c++)
	{
		rb->values[c][rb->n] = values[c];
		rb->nulls[c][rb->n] = nulls[c];
	}
	rb->n++;
}

/* Column c as an array of elemtype. */
static Datum
rowbuf_array(const RowBuf *rb, int c, Oid elemtype)
{
	int16		typlen;
	bool		typbyval;
	char		typalign;
	int			dims[1] = {rb->n};
	int			lbs[1] = {1};

	get_typlenbyvalalign(elemtype, &typlen, &typbyval, &typalign);
	return PointerGetDatum(construct_md_array(rb->values[c], rb->nulls[c],
											  1, dims, lbs, elemtype,
											  typlen, typbyval, typalign));
}

/*
 * Ids of outbox and deliveries rows, drawn from notify.outbox_id_seq in
 * the order the rows are made: at once, or, when the rows are made before
 * it is known that they will be written, all together afterwards.
 */
typedef struct RowIds
{
	Oid			seq;
	bool		deferred;
	int			n;
	int			cap;
	RowBuf	  **buf;			/* deferred: row idx[i] of buf[i] */
	int		   *idx;
} RowIds;

static Datum
row_id(RowIds *ids, RowBuf *rb)
{
	if (!ids->deferred)
		return Int64GetDatum(nextval_internal(ids->seq, true));
	if (ids->n == ids->cap)
	{
		ids->cap = ids->cap == 0 ? 8 : ids->cap * 2;
		ids->buf = ids->buf ? repalloc(ids->buf, sizeof(RowBuf *) * ids->cap) :
			palloc(sizeof(RowBuf *) * ids->cap);
		ids->idx = ids->idx ? repalloc(ids->idx, sizeof(int) * ids->cap) :
			palloc(sizeof(int) * ids->cap);
	}
	ids->buf[ids->n] = rb;
	ids->idx[ids->n] = rb->n;
	ids->n++;
	return (Datum) 0;
}

static void
draw_deferred_ids(RowIds *ids)
{
	for (int i = 0; i < ids->n; i++)
		ids->buf[i]->values[0][ids->idx[i]] =
			Int64GetDatum(nextval_internal(ids->seq, true));
	ids->n = 0;
}

/* A queued outbox row (device_id 0: none; destination NULL fails the insert). */
static void
add_outbox_row(RowBuf *rb, RowIds *ids, const char *channel,
			   const char *provider, const char *destination, int64 device_id,
			   TimestampTz due)
{
	Datum		values[ROW_COLUMNS];
	bool		nulls[ROW_COLUMNS] = {false};

	values[0] = row_id(ids, rb);
	values[1] = CStringGetTextDatum(channel);
	values[2] = CStringGetTextDatum(provider);
	if (destination != NULL)
		values[3] = CStringGetTextDatum(destination);
	else
		nulls[3] = true;
	values[4] = Int64GetDatum(device_id);
	nulls[4] = device_id == 0;
	values[5] = TimestampTzGetDatum(due);
	rowbuf_add(rb, values, nulls);
}

/* A suppressed or skipped deliveries row (device_id 0: none). */
static void
add_delivery_row(RowBuf *rb, RowIds *ids, const char *channel,
				 const char *destination, int64 device_id, const char *status,
				 const char *last_error)
{
	Datum		values[ROW_COLUMNS];
	bool		nulls[ROW_COLUMNS] = {false};

	values[0] = row_id(ids, rb);
	values[1] = CStringGetTextDatum(channel);
	if (destination != NULL)
		values[2] = CStringGetTextDatum(destination);
	else
		nulls[2] = true;
	values[3] = Int64GetDatum(device_id);
	nulls[3] = device_id == 0;
	values[4] = CStringGetTextDatum(status);
	values[5] = CStringGetTextDatum(last_error);
	rowbuf_add(rb, values, nulls);
}


/* ----------------------------------------------------------------
 * notify_send
 * ----------------------------------------------------------------
 */

/* One channel of the template that the send uses. */
typedef struct SendChannel
{
	const char *name;
	TemplateVariant *variant;
	Jsonb	   *rendered;
	char	   *held;			/* why it is not delivered, or NULL */
} SendChannel;

/* One active device of the recipient. */
typedef struct SendDevice
{
	int64		id;
	char	   *app;
	const char *kind;
	char	   *dest;
} SendDevice;

/* One call of notify_send(). */
typedef struct Send
{
	/* the arguments (NULL or _null: SQL NULL) */
	text	   *recipient;
	text	   *template;
	Jsonb	   *params;
	ArrayType  *channels;
	text	   *category;
	int32		priority;
	bool		priority_null;
	TimestampTz send_at;
	bool		send_at_null;
	TimestampTz expires_at;
	bool		expires_null;
	text	   *key;

	TimestampTz now;
	TimestampTz due;			/* send_at, else now */
	char	  **wanted;			/* channels, as C strings */
	int			nwanted;
	char	   *template_name;
	char	   *category_name;

	/* what was read */
	TemplateSet *set;
	int64		recipient_id;
	char	   *email;
	char	   *phone;
	char	   *locale;
	char	   *timezone;
	Jsonb	   *attributes;
	Datum	   *prefs;			/* {channel, is the channel's row, enabled}... */
	int			nprefs;
	SendDevice *devices;
	int			ndevices;

	/* what it sends */
	SendChannel found[NCHANNELS];
	int			nfound;
	TimestampTz quiet;			/* end of the quiet hours, if now in them */
	bool		quiet_null;
	Jsonb	   *rendered;
	Jsonb	   *versions;

	/* what it writes */
	int64		id;
	RowBuf		outbox;
	RowBuf		deliveries;
	const char **wake;
	int			nwake;
} Send;

static void
validate(Send *s)
{
	if (s->params == NULL)
		s->params = DatumGetJsonbP(DirectFunctionCall1(jsonb_in,
													   CStringGetDatum("{}")));
	if (!JB_ROOT_IS_OBJECT(s->params))
		ereport(ERROR,
				errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("params must be a JSON object"),
				errdetail("Got a JSON %s.",
						  TextDatumGetCString(DirectFunctionCall1(jsonb_typeof,
																  JsonbPGetDatum(s->params)))),
				errhint("Pass something like '{\"order_id\": 42}'::jsonb."));
	if (s->priority_null || s->priority < -10 || s->priority > 10)
		ereport(ERROR,
				errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
				errmsg("priority %s is out of range",
					   s->priority_null ? RAISE_NULL : psprintf("%d", s->priority)),
				errhint("Use -10 (lowest) to 10 (highest); 0 is normal."));
	if (!s->expires_null && s->expires_at <= s->due)
		ereport(ERROR,
				errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("expires_at is not after send_at"),
				errdetail("send_at %s, expires_at %s.",
						  datum_text(TimestampTzGetDatum(s->due), TIMESTAMPTZOID),
						  datum_text(TimestampTzGetDatum(s->expires_at), TIMESTAMPTZOID)),
				errhint("Give the notification time to be delivered: expires_at must be later than send_at (or now)."));
	if (s->channels != NULL)
	{
		Datum	   *elems;
		bool	   *nulls;

		deconstruct_array(s->channels, TEXTOID, -1, false, TYPALIGN_INT,
						  &elems, &nulls, &s->nwanted);
		if (s->nwanted == 0)
			ereport(ERROR,
					errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					errmsg("channels is empty"),
					errhint("Pass NULL to use every channel the template has, or name some."));
		s->wanted = palloc(sizeof(char *) * s->nwanted);
		for (int i = 0; i < s->nwanted; i++)
		{
			char	   *c = nulls[i] ? NULL : TextDatumGetCString(elems[i]);

			if (c == NULL ||
				(strcmp(c, "push") != 0 && strcmp(c, "sms") != 0 &&
				 strcmp(c, "email") != 0 && strcmp(c, "webhook") != 0))
				ereport(ERROR,
						errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						errmsg("unknown channel \"%s\"", or_raise_null(c)),
						errhint("Channels are push, sms, email and webhook."));
			s->wanted[i] = c;
		}
	}
}

static bool
is_wanted(Send *s, const char *channel)
{
	if (s->wanted == NULL)
		return true;
	for (int i = 0; i < s->nwanted; i++)
		if (strcmp(s->wanted[i], channel) == 0)
			return true;
	return false;
}

/* Devices in the order of their ids. */
static int
device_cmp(const void *a, const void *b)
{
	int64		x = ((const SendDevice *) a)->id;
	int64		y = ((const SendDevice *) b)->id;

	return x < y ? -1 : x > y ? 1 : 0;
}

/*
 * The template's variants (kept in memory); then the recipient, its
 * preferences and, when the template has a push variant in any locale,
 * its devices.
 */
static void
read_recipient(Send *s)
{
	bool		read_devices = false;
	bool		isnull;
	Datum		d;

	if (s->template != NULL)
	{
		s->template_name = text_to_cstring(s->template);
		s->set = template_set(s->template);
		for (int i = 0; i < s->set->nvariants && !read_devices; i++)
			read_devices = strcmp(s->set->variants[i].channel, "push") == 0;
		read_devices = read_devices && is_wanted(s, "push");
	}

	{
		Oid			types[3] = {TEXTOID, TEXTOID, BOOLOID};
		Datum		values[3];
		char		nulls[3];

		values[0] = PointerGetDatum(s->recipient);
		nulls[0] = s->recipient ? ' ' : 'n';
		values[1] = PointerGetDatum(s->category);
		nulls[1] = s->category ? ' ' : 'n';
		values[2] = BoolGetDatum(read_devices);
		nulls[2] = ' ';
		run(&recipient_plan, recipient_sql, 3, types, values, nulls, SPI_OK_SELECT);
	}
	if (SPI_processed == 0)
		ereport(ERROR,
				errcode(ERRCODE_NO_DATA_FOUND),
				errmsg("unknown recipient \"%s\"",
					   s->recipient ? text_to_cstring(s->recipient) : RAISE_NULL),
				errhint("Create it first with notify_upsert_recipient()."));
	s->recipient_id = DatumGetInt64(column(0, 1, &isnull));
	s->email = column_text(0, 2);
	s->phone = column_text(0, 3);
	s->locale = column_text(0, 4);
	s->timezone = column_text(0, 5);
	s->attributes = DatumGetJsonbP(column(0, 6, &isnull));
	deconstruct_array(DatumGetArrayTypeP(column(0, 7, &isnull)), TEXTOID, -1,
					  false, TYPALIGN_INT, &s->prefs, NULL, &s->nprefs);
	s->nprefs /= 3;

	d = column(0, 8, &isnull);
	if (!isnull)
	{
		Datum	   *elems;
		bool	   *nulls;
		int			n;

		deconstruct_array(DatumGetArrayTypeP(d), TEXTOID, -1, false,
						  TYPALIGN_INT, &elems, &nulls, &n);
		s->ndevices = n / 4;
		s->devices = palloc(sizeof(SendDevice) * Max(s->ndevices, 1));
		for (int j = 0; j < s->ndevices; j++)
		{
			SendDevice *dev = &s->devices[j];
			char	   *platform = TextDatumGetCString(elems[4 * j + 2]);

			dev->id = pg_strtoint64(TextDatumGetCString(elems[4 * j]));
			dev->app = nulls[4 * j + 1] ? NULL : TextDatumGetCString(elems[4 * j + 1]);
			dev->kind = strcmp(platform, "ios") == 0 ? "apns" :
				strcmp(platform, "android") == 0 ? "fcm" : "webpush";
			/* NULL for a web device without a subscription: the insert says so */
			dev->dest = nulls[4 * j + 3] ? NULL : TextDatumGetCString(elems[4 * j + 3]);
		}
		qsort(s->devices, s->ndevices, sizeof(SendDevice), device_cmp);
	}
}

/*
 * The newest version of each wanted channel, for the most specific locale
 * of the recipient's chain (exact, then language, then the default '')
 * that has one; rendered in channel order.  ERROR when there is none, or
 * none for a wanted channel.
 */
static void
render(Send *s)
{
	const char *locales[3];
	int			nlocales;

	if (s->locale == NULL || s->locale[0] == '\0')
	{
		locales[0] = "";
		nlocales = 1;
	}
	else
	{
		/* split_part(replace(locale, '_', '-'), '-', 1) */
		char	   *lang = pnstrdup(s->locale, strcspn(s->locale, "_-"));

		locales[0] = s->locale;
		if (strcmp(lang, s->locale) != 0)
		{
			locales[1] = lang;
			locales[2] = "";
			nlocales = 3;
		}
		else
		{
			locales[1] = "";
			nlocales = 2;
		}
	}

	if (s->set != NULL)
	{
		const char *const *order = channel_order();

		for (int c = 0; c < NCHANNELS; c++)
		{
			TemplateVariant *best = NULL;
			int			best_pos = 0;
			SendChannel *ch;

			if (!is_wanted(s, order[c]))
				continue;
			for (int i = 0; i < s->set->nvariants; i++)
			{
				TemplateVariant *v = &s->set->variants[i];

				if (strcmp(v->channel, order[c]) != 0)
					continue;
				for (int l = 0; l < nlocales; l++)
				{
					if (strcmp(v->locale, locales[l]) == 0)
					{
						if (best == NULL || l < best_pos)
						{
							best = v;
							best_pos = l;
						}
						break;
					}
				}
			}
			if (best == NULL)
				continue;
			ch = &s->found[s->nfound++];
			ch->name = order[c];
			ch->variant = best;
			ch->rendered = notify_template_render(compiled(best, s->template_name),
												  s->params, s->attributes);
			ch->held = NULL;
		}
	}

	if (s->nfound == 0)
	{
		if (s->set != NULL && s->set->nvariants > 0)
			ereport(ERROR,
					errcode(ERRCODE_UNDEFINED_OBJECT),
					errmsg("template \"%s\" has no variant for channels %s",
						   s->template_name,
						   s->channels ? datum_text(PointerGetDatum(s->channels), TEXTARRAYOID) : RAISE_NULL),
					errhint("Add one with notify_put_template(), or send on the channels it has."));
		ereport(ERROR,
				errcode(ERRCODE_UNDEFINED_OBJECT),
				errmsg("unknown template \"%s\"", or_raise_null(s->template_name)),
				errhint("Create it with notify_put_template()."));
	}
	if (s->wanted != NULL && s->nfound < s->nwanted)
	{
		const char *missing = NULL;

		/* min(c) FROM unnest(channels) c WHERE c <> ALL (found) */
		for (int i = 0; i < s->nwanted; i++)
		{
			bool		in_found = false;

			for (int j = 0; j < s->nfound && !in_found; j++)
				in_found = strcmp(s->found[j].name, s->wanted[i]) == 0;
			if (!in_found &&
				(missing == NULL ||
				 varstr_cmp(s->wanted[i], strlen(s->wanted[i]), missing,
							strlen(missing), DEFAULT_COLLATION_OID) < 0))
				missing = s->wanted[i];
		}
		ereport(ERROR,
				errcode(ERRCODE_UNDEFINED_OBJECT),
				errmsg("template \"%s\" has no variant for channel %s",
					   s->template_name, or_raise_null(missing)),
				errhint("Add one with notify_put_template(), or leave that channel out."));
	}
}

/*
 * What is held back, per channel, and why: an opt-out (a category row
 * beats the channel row; no row means enabled), or a frequency cap the
 * recipient already reached on that channel (and category), counting
 * earlier notifications whose content has the channel.  Where several
 * apply, the last gives the reason (opt-outs first, then caps in table
 * order), as jsonb_object_agg() kept the last.
 */
static void
hold(Send *s)
{
	bool		isnull;

	for (int j = 0; j < s->nfound; j++)
	{
		int			row = -1;	/* the preference that decides */

		for (int i = 0; i < s->nprefs; i++)
		{
			bool		channel_row;

			if (strcmp(TextDatumGetCString(s->prefs[3 * i]), s->found[j].name) != 0)
				continue;
			channel_row = strcmp(TextDatumGetCString(s->prefs[3 * i + 1]), "true") == 0;
			if (row < 0 || !channel_row)
				row = i;
		}
		if (row >= 0 && strcmp(TextDatumGetCString(s->prefs[3 * row + 2]), "false") == 0)
			s->found[j].held = psprintf("recipient opted out of %s", s->found[j].name);
	}

	need_caps();
	for (int i = 0; i < ncaps; i++)
	{
		CapRow	   *cap = &caps[i];
		SendChannel *ch = NULL;
		Oid			types[4] = {INT8OID, INTERVALOID, TEXTOID, TEXTOID};
		Datum		values[4];
		char		nulls[4] = {' ', ' ', ' ', ' '};

		for (int j = 0; j < s->nfound && ch == NULL; j++)
			if (strcmp(s->found[j].name, cap->channel) == 0)
				ch = &s->found[j];
		if (ch == NULL ||
			(cap->category != NULL &&
			 (s->category_name == NULL || strcmp(cap->category, s->category_name) != 0)))
			continue;

		values[0] = Int64GetDatum(s->recipient_id);
		values[1] = cap->per;
		values[2] = CStringGetTextDatum(cap->channel);
		if (cap->category != NULL)
			values[3] = CStringGetTextDatum(cap->category);
		else
			nulls[3] = 'n';
		run(&cap_count_plan, cap_count_sql, 4, types, values, nulls, SPI_OK_SELECT);
		if (DatumGetInt64(column(0, 1, &isnull)) >= cap->max_count)
			ch->held = psprintf("frequency cap reached: %d per %s", cap->max_count,
								datum_text(cap->per, INTERVALOID));
	}

	/*
	 * Quiet hours (attribute quiet_hours "22:00-07:00", in the recipient's
	 * time zone) hold push and sms that are not urgent until they end.
	 */
	s->quiet_null = true;
	if (s->priority < 5 && s->send_at_null &&
		DatumGetBool(DirectFunctionCall2(jsonb_exists, JsonbPGetDatum(s->attributes),
										 CStringGetTextDatum("quiet_hours"))))
	{
		Oid			types[2] = {TEXTOID, TEXTOID};
		Datum		values[2];
		char		nulls[2] = {' ', ' '};
		char	   *spec = attribute_text(s->attributes, "quiet_hours");
		Datum		d;

		if (spec != NULL)
			values[0] = CStringGetTextDatum(spec);
		else
			nulls[0] = 'n';
		if (s->timezone != NULL)
			values[1] = CStringGetTextDatum(s->timezone);
		else
			nulls[1] = 'n';
		run(&quiet_plan, quiet_sql, 2, types, values, nulls, SPI_OK_SELECT);
		d = column(0, 1, &s->quiet_null);
		if (!s->quiet_null)
			s->quiet = DatumGetTimestampTz(d);
	}
}

/*
 * What the notification records: the rendered content of what is
 * delivered only (frequency caps count it), and every channel's version.
 */
static void
record(Send *s)
{
	JsonbParseState *rstate = NULL;
	JsonbParseState *vstate = NULL;
	JsonbValue *rres;
	JsonbValue *vres;

	pushJsonbValue(&rstate, WJB_BEGIN_OBJECT, NULL);
	pushJsonbValue(&vstate, WJB_BEGIN_OBJECT, NULL);
	for (int i = 0; i < s->nfound; i++)
	{
		SendChannel *ch = &s->found[i];
		JsonbValue	k;
		JsonbValue	v;

		k.type = jbvString;
		k.val.string.val = (char *) ch->name;
		k.val.string.len = strlen(ch->name);

		pushJsonbValue(&vstate, WJB_KEY, &k);
		v.type = jbvNumeric;
		v.val.numeric = int64_to_numeric(ch->variant->version);
		pushJsonbValue(&vstate, WJB_VALUE, &v);

		if (ch->held != NULL)
			continue;
		pushJsonbValue(&rstate, WJB_KEY, &k);
		v.type = jbvBinary;
		v.val.binary.data = &ch->rendered->root;
		v.val.binary.len = VARSIZE(ch->rendered) - VARHDRSZ;
		pushJsonbValue(&rstate, WJB_VALUE, &v);
	}
	rres = pushJsonbValue(&rstate, WJB_END_OBJECT, NULL);
	vres = pushJsonbValue(&vstate, WJB_END_OBJECT, NULL);
	s->rendered = JsonbValueToJsonb(rres);
	s->versions = JsonbValueToJsonb(vres);
}

static void insert_rows(Send *s);

/*
 * One row per destination, in order: every active device for push, the
 * phone for sms, the address for email, the recipient's webhook_url (else
 * the provider's endpoint, '') for webhook; 'suppressed' when held,
 * 'skipped' when there is no destination.
 *
 * With raise, as the plpgsql loop did: ids drawn as rows are made, and a
 * destination without a usable provider instance, or a push payload over
 * its instance's limit, is an ERROR there; so is a device without a
 * destination (a web device without a subscription): the rows so far are
 * inserted there, and the insert of its row fails as it did.  Without
 * raise: ids deferred (ids->deferred), and false, with nothing drawn, at
 * the first such problem.
 */
static bool
make_rows(Send *s, RowIds *ids, bool raise)
{
	const char **checked = palloc(sizeof(char *) * (s->nfound + s->ndevices));
	int			nchecked = 0;

	s->outbox.n = 0;
	s->deliveries.n = 0;
	s->nwake = 0;
	s->wake = palloc(sizeof(char *) * (s->nfound + s->ndevices));
	need_providers();

	for (int i = 0; i < s->nfound; i++)
	{
		SendChannel *ch = &s->found[i];
		TimestampTz due = s->due;
		const char *kind;
		const char *dest;
		const char *provider;

		if ((strcmp(ch->name, "push") == 0 || strcmp(ch->name, "sms") == 0) &&
			!s->quiet_null && s->quiet > s->due)
			due = s->quiet;

		if (strcmp(ch->name, "push") == 0)
		{
			for (int j = 0; j < s->ndevices; j++)
			{
				SendDevice *dev = &s->devices[j];
				bool		seen = false;

				if (ch->held != NULL)
				{
					add_delivery_row(&s->deliveries, ids, "push", dev->dest, dev->id,
									 "suppressed", ch->held);
					continue;
				}
				provider = resolve_provider(dev->kind, dev->app);
				if (provider == NULL && !raise)
					return false;
				/* no usable instance: this raises the error that says why */
				if (provider == NULL)
					provider = provider_for(dev->kind, dev->app);
				for (int k = 0; k < nchecked && !seen; k++)
					seen = strcmp(checked[k], provider) == 0;
				if (!seen)
				{
					if (raise)
						notify_check_push_payload(dev->kind, provider, ch->rendered);
					else if (!notify_push_payload_fits(dev->kind, ch->rendered))
						return false;
					checked[nchecked++] = provider;
				}
				if (dev->dest == NULL && !raise)
					return false;
				add_outbox_row(&s->outbox, ids, "push", provider, dev->dest, dev->id, due);
				s->wake[s->nwake++] = provider;
				if (dev->dest == NULL)
					insert_rows(s);
			}
			if (s->ndevices == 0)
				add_delivery_row(&s->deliveries, ids, "push", NULL, 0, "skipped",
								 "recipient has no active device");
			continue;
		}

		/* sms, email, webhook: one destination each */
		if (strcmp(ch->name, "sms") == 0)
		{
			kind = "twilio";
			dest = s->phone;
		}
		else if (strcmp(ch->name, "email") == 0)
		{
			kind = "smtp";
			dest = s->email;
		}
		else
		{
			char	   *url = attribute_text(s->attributes, "webhook_url");

			kind = "webhook";
			dest = "";
			if (url != NULL &&
				(strncmp(url, "http://", 7) == 0 || strncmp(url, "https://", 8) == 0))
				dest = url;
		}

		if (dest == NULL)
			add_delivery_row(&s->deliveries, ids, ch->name, NULL, 0, "skipped",
							 strcmp(ch->name, "sms") == 0 ?
							 "recipient has no phone number" :
							 "recipient has no email address");
		else if (ch->held != NULL)
			add_delivery_row(&s->deliveries, ids, ch->name, dest, 0, "suppressed",
							 ch->held);
		else
		{
			provider = resolve_provider(kind, NULL);
			if (provider == NULL && !raise)
				return false;
			if (provider == NULL)
				provider = provider_for(kind, NULL);
			add_outbox_row(&s->outbox, ids, ch->name, provider, dest, 0, due);
			s->wake[s->nwake++] = provider;
		}
	}
	return true;
}

/* Parameters of the notifications row, from $1 (11 with the key). */
static int
notification_params(Send *s, Oid *types, Datum *values, char *nulls, bool with_key)
{
	static const Oid t[11] = {INT8OID, TEXTOID, TEXTOID, JSONBOID, JSONBOID,
	JSONBOID, TEXTOID, INT4OID, TIMESTAMPTZOID, TIMESTAMPTZOID, TEXTOID};

	memcpy(types, t, sizeof(t));
	memset(nulls, ' ', 11);
	values[0] = Int64GetDatum(s->recipient_id);
	values[1] = PointerGetDatum(s->recipient);
	values[2] = PointerGetDatum(s->template);
	values[3] = JsonbPGetDatum(s->params);
	values[4] = JsonbPGetDatum(s->rendered);
	values[5] = JsonbPGetDatum(s->versions);
	values[6] = PointerGetDatum(s->category);
	nulls[6] = s->category ? ' ' : 'n';
	values[7] = Int32GetDatum(s->priority);
	values[8] = TimestampTzGetDatum(s->send_at);
	nulls[8] = s->send_at_null ? 'n' : ' ';
	values[9] = TimestampTzGetDatum(s->expires_at);
	nulls[9] = s->expires_null ? 'n' : ' ';
	values[10] = PointerGetDatum(s->key);
	nulls[10] = s->key ? ' ' : 'n';
	return with_key ? 11 : 10;
}

/* The six columns of a RowBuf as array parameters, from types[at]. */
static void
rows_params(RowBuf *rb, const Oid *elemtypes, Oid *types, Datum *values,
			char *nulls, int at)
{
	for (int c = 0; c < ROW_COLUMNS; c++)
	{
		types[at + c] = get_array_type(elemtypes[c]);
		values[at + c] = rowbuf_array(rb, c, elemtypes[c]);
		nulls[at + c] = ' ';
	}
}

static const Oid outbox_elemtypes[ROW_COLUMNS] =
{INT8OID, TEXTOID, TEXTOID, TEXTOID, INT8OID, TIMESTAMPTZOID};
static const Oid deliveries_elemtypes[ROW_COLUMNS] =
{INT8OID, TEXTOID, TEXTOID, INT8OID, TEXTOID, TEXTOID};

/*
 * Without an idempotency key (nothing can conflict): the notification and
 * all its rows in one statement.  The ids were drawn already.
 */
static void
write_at_once(Send *s)
{
	Oid			types[11 + 2 * ROW_COLUMNS];
	Datum		values[11 + 2 * ROW_COLUMNS];
	char		nulls[11 + 2 * ROW_COLUMNS];
	int			n = notification_params(s, types, values, nulls, false);
	bool		isnull;

	if (s->outbox.n == 1 && s->deliveries.n == 0)
	{
		/* the usual send: one destination */
		for (int c = 0; c < ROW_COLUMNS; c++)
		{
			types[n + c] = outbox_elemtypes[c];
			values[n + c] = s->outbox.values[c][0];
			nulls[n + c] = s->outbox.nulls[c][0] ? 'n' : ' ';
		}
		run(&send_one_plan, send_one_sql, n + ROW_COLUMNS, types, values, nulls,
			SPI_OK_SELECT);
	}
	else if (s->deliveries.n == 0)
	{
		rows_params(&s->outbox, outbox_elemtypes, types, values, nulls, n);
		run(&send_outbox_plan, send_outbox_sql, n + ROW_COLUMNS, types, values,
			nulls, SPI_OK_SELECT);
	}
	else if (s->outbox.n == 0)
	{
		rows_params(&s->deliveries, deliveries_elemtypes, types, values, nulls, n);
		run(&send_deliveries_plan, send_deliveries_sql, n + ROW_COLUMNS, types,
			values, nulls, SPI_OK_SELECT);
	}
	else
	{
		rows_params(&s->outbox, outbox_elemtypes, types, values, nulls, n);
		rows_params(&s->deliveries, deliveries_elemtypes, types, values, nulls,
					n + ROW_COLUMNS);
		run(&send_both_plan, send_both_sql, n + 2 * ROW_COLUMNS, types, values,
			nulls, SPI_OK_SELECT);
	}
	s->id = DatumGetInt64(column(0, 1, &isnull));
}

/* Insert the rows made so far (after the notification), and forget them. */
static void
insert_rows(Send *s)
{
	Oid			types[4 + ROW_COLUMNS];
	Datum		values[4 + ROW_COLUMNS];
	char		nulls[4 + ROW_COLUMNS];

	/* $1 notification, $2 recipient, $3 priority, ($4 expires_at,) rows */
	types[0] = INT8OID;
	values[0] = Int64GetDatum(s->id);
	types[1] = INT8OID;
	values[1] = Int64GetDatum(s->recipient_id);
	types[2] = INT4OID;
	values[2] = Int32GetDatum(s->priority);
	memset(nulls, ' ', sizeof(nulls));
	if (s->outbox.n > 0)
	{
		types[3] = TIMESTAMPTZOID;
		values[3] = TimestampTzGetDatum(s->expires_at);
		nulls[3] = s->expires_null ? 'n' : ' ';
		rows_params(&s->outbox, outbox_elemtypes, types, values, nulls, 4);
		run(&outbox_plan, outbox_sql, 4 + ROW_COLUMNS, types, values, nulls,
			SPI_OK_INSERT);
		s->outbox.n = 0;
	}
	if (s->deliveries.n > 0)
	{
		rows_params(&s->deliveries, deliveries_elemtypes, types, values, nulls, 3);
		run(&deliveries_plan, deliveries_sql, 3 + ROW_COLUMNS, types, values,
			nulls, SPI_OK_INSERT);
		s->deliveries.n = 0;
	}
}

/*
 * Statement by statement, as the plpgsql version: the notification (on a
 * conflicting idempotency key, false: s->id is the stored one, or 0 when
 * it cannot be read), then its rows, whose making raises where it did.
 */
static bool
write_in_steps(Send *s, RowIds *ids)
{
	Oid			types[11];
	Datum		values[11];
	char		nulls[11];
	int			n = notification_params(s, types, values, nulls, true);
	bool		isnull;

	run(&notification_plan, notification_sql, n, types, values, nulls,
		SPI_OK_INSERT_RETURNING);
	if (SPI_processed == 0)
	{
		/* a concurrent transaction committed the same key first */
		if (s->key == NULL || !id_for_key(s->key, &s->id))
			s->id = 0;
		return false;
	}
	s->id = DatumGetInt64(column(0, 1, &isnull));

	ids->deferred = false;
	ids->n = 0;
	make_rows(s, ids, true);
	insert_rows(s);
	return true;
}

/*
 * notify_send(recipient text, template text, params jsonb DEFAULT '{}',
 *			   channels text[] DEFAULT NULL, category text DEFAULT NULL,
 *			   priority int DEFAULT 0, send_at timestamptz DEFAULT NULL,
 *			   expires_at timestamptz DEFAULT NULL,
 *			   idempotency_key text DEFAULT NULL) RETURNS bigint
 */
Datum
notify_send(PG_FUNCTION_ARGS)
{
	Send	   *s;
	RowIds		ids = {0};
	int64		existing;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "notify_send: SPI_connect failed");

	s = palloc0(sizeof(Send));
	s->recipient = PG_ARGISNULL(0) ? NULL : PG_GETARG_TEXT_PP(0);
	s->template = PG_ARGISNULL(1) ? NULL : PG_GETARG_TEXT_PP(1);
	s->params = PG_ARGISNULL(2) ? NULL : PG_GETARG_JSONB_P(2);
	s->channels = PG_ARGISNULL(3) ? NULL : PG_GETARG_ARRAYTYPE_P(3);
	s->category = PG_ARGISNULL(4) ? NULL : PG_GETARG_TEXT_PP(4);
	s->priority_null = PG_ARGISNULL(5);
	s->priority = s->priority_null ? 0 : PG_GETARG_INT32(5);
	s->send_at_null = PG_ARGISNULL(6);
	s->send_at = s->send_at_null ? 0 : PG_GETARG_TIMESTAMPTZ(6);
	s->expires_null = PG_ARGISNULL(7);
	s->expires_at = s->expires_null ? 0 : PG_GETARG_TIMESTAMPTZ(7);
	s->key = PG_ARGISNULL(8) ? NULL : PG_GETARG_TEXT_PP(8);
	s->now = GetCurrentTransactionStartTimestamp();
	s->due = s->send_at_null ? s->now : s->send_at;
	s->category_name = s->category ? text_to_cstring(s->category) : NULL;

	/* --- validate everything before writing anything --- */
	if (s->key != NULL &&
		(VARSIZE_ANY_EXHDR(s->key) == 0 ||
		 pg_mbstrlen_with_len(VARDATA_ANY(s->key), VARSIZE_ANY_EXHDR(s->key)) > 255))
		ereport(ERROR,
				errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("idempotency key must be between 1 and 255 characters"),
				errhint("Use the id of the business event that causes the notification."));
	if (s->key != NULL && id_for_key(s->key, &existing))
	{
		SPI_finish();
		PG_RETURN_INT64(existing);
	}
	validate(s);

	/* --- read and render --- */
	read_recipient(s);
	render(s);
	hold(s);
	record(s);

	/* --- write: the request, then one row per destination --- */
	ids.seq = RangeVarGetRelid(makeRangeVar("notify", "outbox_id_seq", -1),
							   NoLock, false);
	ids.deferred = true;
	if (s->key == NULL && make_rows(s, &ids, false))
	{
		draw_deferred_ids(&ids);
		write_at_once(s);
	}
	else if (!write_in_steps(s, &ids))
	{
		SPI_finish();
		if (s->id == 0)
			PG_RETURN_NULL();
		PG_RETURN_INT64(s->id);
	}

	if (s->nwake > 0 && s->due <= s->now)
		notify_wake_at_commit(s->wake, s->nwake);

	SPI_finish();
	PG_RETURN_INT64(s->id);
}
