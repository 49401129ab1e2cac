/*-------------------------------------------------------------------------
 *
 * render.c
 *	  Template rendering: a Mustache subset over jsonb template content.
 *
 * This file owns the template language (parsing, validation, rendering;
 * the rules are in render.h), the per-channel shape of template content
 * (which fields a push, sms, email or webhook template may have, of which
 * type, which are required), the conversion of typed push fields after
 * rendering, and click-tracking link rewriting in email html.  It owns the
 * SQL functions notify._render, notify._check_template and
 * notify._template_vars.
 *
 * It deliberately knows nothing about providers, HTTP, the outbox or any
 * table: jsonb in, jsonb out.  It runs no SQL and keeps no state except a
 * small cache of compiled templates per call site (fn_extra).
 *
 * Design, for speed (one render per delivery):
 *	 - Compiling walks the content once: it checks the channel's shape,
 *	   parses every string that contains "{{" into a flat array of nodes
 *	   (a section node records where its body ends), and marks subtrees
 *	   without tags so they are copied through as they are.
 *	 - Rendering walks the compiled tree.  Names are looked up directly in
 *	   the params and attributes Jsonb containers (binary search on keys,
 *	   nothing deserialized); the section contexts are a chain of structs
 *	   on the C stack.  Each rendered string is built in one StringInfo.
 *	 - notify._render keeps the last few compiled templates in fn_extra,
 *	   keyed by the content's bytes, channel and name, so a query that
 *	   renders one template for many recipients parses it once.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "fmgr.h"
#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/numeric.h"

#include "render.h"

PG_FUNCTION_INFO_V1(notify_render_sql);
PG_FUNCTION_INFO_V1(notify_check_template_sql);
PG_FUNCTION_INFO_V1(notify_template_vars_sql);

/* Longest piece of a template or value quoted in an error message. */
#define EXCERPT_LEN 40

/* Compiled templates kept per call site of notify._render. */
#define RENDER_CACHE_SIZE 8


/* ----------------------------------------------------------------
 * Channels and the fields their templates may have
 * ----------------------------------------------------------------
 */

typedef enum FieldType
{
	FIELD_STRING,				/* a string */
	FIELD_OBJECT,				/* an object */
	FIELD_HEADERS,				/* an object whose values are strings */
	FIELD_INTEGER,				/* renders to a non-negative integer */
	FIELD_BOOLEAN,				/* renders to true or false */
	FIELD_ANY					/* any JSON value */
} FieldType;

typedef struct FieldSpec
{
	const char *name;
	FieldType	type;
} FieldSpec;

typedef enum NotifyChannel
{
	CHANNEL_PUSH,
	CHANNEL_SMS,
	CHANNEL_EMAIL,
	CHANNEL_WEBHOOK
} NotifyChannel;

typedef struct ChannelSpec
{
	const char *name;
	NotifyChannel channel;
	const FieldSpec *fields;
	int			nfields;
} ChannelSpec;

static const FieldSpec push_fields[] = {
	{"title", FIELD_STRING},
	{"body", FIELD_STRING},
	{"subtitle", FIELD_STRING},
	{"sound", FIELD_STRING},
	{"badge", FIELD_INTEGER},
	{"category", FIELD_STRING},
	{"thread_id", FIELD_STRING},
	{"collapse_id", FIELD_STRING},
	{"mutable_content", FIELD_BOOLEAN},
	{"content_available", FIELD_BOOLEAN},
	{"image", FIELD_STRING},
	{"url", FIELD_STRING},
	{"data", FIELD_OBJECT},
	{"ttl", FIELD_INTEGER},
	{"apns", FIELD_OBJECT},
	{"android", FIELD_OBJECT},
	{"webpush", FIELD_OBJECT}
};

static const FieldSpec sms_fields[] = {
	{"body", FIELD_STRING}
};

static const FieldSpec email_fields[] = {
	{"subject", FIELD_STRING},
	{"text", FIELD_STRING},
	{"html", FIELD_STRING},
	{"from", FIELD_STRING},
	{"from_name", FIELD_STRING},
	{"reply_to", FIELD_STRING}
};

static const FieldSpec webhook_fields[] = {
	{"body", FIELD_ANY},
	{"headers", FIELD_HEADERS}
};

static const ChannelSpec channel_specs[] = {
	{"push", CHANNEL_PUSH, push_fields, lengthof(push_fields)},
	{"sms", CHANNEL_SMS, sms_fields, lengthof(sms_fields)},
	{"email", CHANNEL_EMAIL, email_fields, lengthof(email_fields)},
	{"webhook", CHANNEL_WEBHOOK, webhook_fields, lengthof(webhook_fields)}
};


/* ----------------------------------------------------------------
 * Compiled form
 * ----------------------------------------------------------------
 */

typedef enum TplNodeKind
{
	NODE_TEXT,					/* literal text */
	NODE_VAR,					/* {{name}}: HTML-escaped in email html */
	NODE_RAW,					/* {{{name}}} or {{& name}} */
	NODE_SECTION,				/* {{#name}} */
	NODE_INVERTED				/* {{^name}} */
} TplNodeKind;

/* One part of a dotted name. */
typedef struct TplSeg
{
	const char *str;
	int			len;
} TplSeg;

/*
 * One node of a parsed string.  The nodes of a section's body follow the
 * section node; "end" is the index of the first node after the body.
 */
typedef struct TplNode
{
	TplNodeKind kind;
	const char *str;			/* text, or the name as written (trimmed) */
	int			len;
	int			nsegs;			/* parts of the name; 0 means "." */
	TplSeg	   *segs;
	int			end;			/* sections only */
} TplNode;

typedef enum TplValueKind
{
	VALUE_LITERAL,				/* copied through as it is */
	VALUE_OMIT,					/* typed field whose constant is "" */
	VALUE_TEMPLATE,				/* a string with tags */
	VALUE_OBJECT,
	VALUE_ARRAY
} TplValueKind;

/* One JSON value of the content, compiled. */
typedef struct TplValue
{
	TplValueKind kind;
	bool		typed;			/* a typed push field: see ftype */
	FieldType	ftype;			/* FIELD_INTEGER or FIELD_BOOLEAN */
	bool		html;			/* the email html field */
	const char *path;			/* JSON path, for messages */
	JsonbValue	literal;		/* VALUE_LITERAL (jbvBinary for a subtree) */
	TplNode    *nodes;			/* VALUE_TEMPLATE */
	int			nnodes;
	int			nitems;			/* VALUE_OBJECT and VALUE_ARRAY */
	JsonbValue *keys;			/* VALUE_OBJECT */
	struct TplValue *items;
} TplValue;

struct NotifyTemplate
{
	Jsonb	   *content;		/* our copy; compiled strings point into it */
	const char *channel;		/* canonical channel name */
	char	   *name;			/* template name, for messages */
	TplValue	root;			/* always VALUE_OBJECT */
	bool		is_static;		/* rendering returns the content unchanged */
	bool		has_html;		/* email with an html field */
	bool		check_silent;	/* push without title/body whose
								 * content_available is a template */
};

/* Who is being compiled, for messages; name is NULL for _template_vars. */
typedef struct CompileState
{
	const char *name;
	const char *channel;
} CompileState;

/* One level of lookup context: an item, params or attributes. */
typedef struct RenderCtx
{
	JsonbValue	val;			/* jbvNull when there is nothing here */
	struct RenderCtx *parent;
} RenderCtx;

typedef struct RenderState
{
	const NotifyTemplate *tpl;
	const TplValue *field;		/* the string being rendered */
	RenderCtx	attrs;			/* outermost */
	RenderCtx	params;			/* its child; sections chain below */
	StringInfoData scratch;		/* JSON text of objects and arrays */
	const char *tracking;		/* link prefix, or NULL */
	int			tracking_len;
	bool		silent;			/* content_available rendered true */
} RenderState;


static void report_malformed(const CompileState *cs, const char *path,
							 const char *s, int len, const char *at,
							 const char *what, const char *hint)
			pg_attribute_noreturn();
static bool compile_value(const CompileState *cs, JsonbValue *v,
						  const char *path, TplValue *out);
static void render_nodes(RenderState *rs, const TplNode *nodes, int start,
						 int end, RenderCtx *ctx, StringInfo out);


/* ----------------------------------------------------------------
 * Small helpers
 * ----------------------------------------------------------------
 */

/* A NUL-terminated copy of at most EXCERPT_LEN bytes, "..." if cut. */
static char *
excerpt(const char *s, int len)
{
	int			cut = pg_mbcliplen(s, len, EXCERPT_LEN);
	char	   *res = palloc(cut + 4);

	memcpy(res, s, cut);
	if (cut < len)
		memcpy(res + cut, "...", 4);
	else
		res[cut] = '\0';
	return res;
}

static inline bool
is_space(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f';
}

/* Does s (len bytes) start with the lower-case ASCII literal, any case? */
static bool
starts_with_ci(const char *s, const char *end, const char *lit)
{
	for (; *lit; lit++, s++)
	{
		if (s >= end || pg_ascii_tolower((unsigned char) *s) != *lit)
			return false;
	}
	return true;
}

/* The first "{{" (or "}}", with c = '}') in [s, end), or NULL. */
static const char *
find_pair(const char *s, const char *end, char c)
{
	while (end - s >= 2)
	{
		const char *p = memchr(s, c, end - s - 1);

		if (p == NULL)
			return NULL;
		if (p[1] == c)
			return p;
		s = p + 1;
	}
	return NULL;
}

static inline bool
has_tag(const char *s, int len)
{
	return find_pair(s, s + len, '{') != NULL;
}

/* A child's JSON path: "key", "parent.key" or "parent[3]". */
static char *
child_path(const char *parent, const JsonbValue *key, int index)
{
	if (key == NULL)
		return psprintf("%s[%d]", parent, index);
	if (parent[0] == '\0')
		return pnstrdup(key->val.string.val, key->val.string.len);
	return psprintf("%s.%.*s", parent, key->val.string.len,
					key->val.string.val);
}

static void
append_html_escaped(StringInfo out, const char *s, int len)
{
	const char *end = s + len;
	const char *run = s;

	for (; s < end; s++)
	{
		const char *rep;

		switch (*s)
		{
			case '&':
				rep = "&amp;";
				break;
			case '<':
				rep = "&lt;";
				break;
			case '>':
				rep = "&gt;";
				break;
			case '"':
				rep = "&quot;";
				break;
			case '\'':
				rep = "&#39;";
				break;
			default:
				continue;
		}
		appendBinaryStringInfo(out, run, s - run);
		appendStringInfoString(out, rep);
		run = s + 1;
	}
	appendBinaryStringInfo(out, run, end - run);
}

/* A JSON string literal, escaped the way PostgreSQL's escape_json does. */
static void
append_json_string(StringInfo out, const char *s, int len)
{
	const char *end = s + len;
	const char *run = s;

	appendStringInfoChar(out, '"');
	for (; s < end; s++)
	{
		unsigned char c = (unsigned char) *s;

		if (c >= 0x20 && c != '"' && c != '\\')
			continue;
		appendBinaryStringInfo(out, run, s - run);
		switch (c)
		{
			case '"':
				appendStringInfoString(out, "\\\"");
				break;
			case '\\':
				appendStringInfoString(out, "\\\\");
				break;
			case '\b':
				appendStringInfoString(out, "\\b");
				break;
			case '\f':
				appendStringInfoString(out, "\\f");
				break;
			case '\n':
				appendStringInfoString(out, "\\n");
				break;
			case '\r':
				appendStringInfoString(out, "\\r");
				break;
			case '\t':
				appendStringInfoString(out, "\\t");
				break;
			default:
				appendStringInfo(out, "\\u%04x", c);
				break;
		}
		run = s + 1;
	}
	appendBinaryStringInfo(out, run, end - run);
	appendStringInfoChar(out, '"');
}

static char *
numeric_text(Numeric num)
{
	return DatumGetCString(DirectFunctionCall1(numeric_out,
											   NumericGetDatum(num)));
}

/* A scalar as JSON text (strings quoted). */
static void
append_json_scalar(StringInfo out, const JsonbValue *v)
{
	switch (v->type)
	{
		case jbvNull:
			appendStringInfoString(out, "null");
			break;
		case jbvString:
			append_json_string(out, v->val.string.val, v->val.string.len);
			break;
		case jbvNumeric:
			appendStringInfoString(out, numeric_text(v->val.numeric));
			break;
		case jbvBool:
			appendStringInfoString(out, v->val.boolean ? "true" : "false");
			break;
		default:
			elog(ERROR, "unexpected jsonb value type: %d", (int) v->type);
	}
}

/* Compact JSON text of a container: no spaces, {"a":1,"b":[true]}. */
static void
append_json_container(StringInfo out, JsonbContainer *jc)
{
	JsonbIterator *it = JsonbIteratorInit(jc);
	JsonbIteratorToken tok;
	JsonbValue	v;
	int			start = out->len;
	bool		raw_scalar = false;

	while ((tok = JsonbIteratorNext(&it, &v, false)) != WJB_DONE)
	{
		/*
		 * A comma goes before every key and element except the first of its
		 * container: exactly when the last byte written is not '{', '[' or
		 * ':' (every JSON value ends with some other byte).
		 */
		if ((tok == WJB_KEY || tok == WJB_ELEM || tok == WJB_BEGIN_OBJECT ||
			 tok == WJB_BEGIN_ARRAY) &&
			out->len > start &&
			strchr("{[:", out->data[out->len - 1]) == NULL)
			appendStringInfoChar(out, ',');

		switch (tok)
		{
			case WJB_BEGIN_OBJECT:
				appendStringInfoChar(out, '{');
				break;
			case WJB_END_OBJECT:
				appendStringInfoChar(out, '}');
				break;
			case WJB_BEGIN_ARRAY:
				if (v.val.array.rawScalar)
					raw_scalar = true;
				else
					appendStringInfoChar(out, '[');
				break;
			case WJB_END_ARRAY:
				if (!raw_scalar || out->len == start)
					appendStringInfoChar(out, ']');
				break;
			case WJB_KEY:
				append_json_string(out, v.val.string.val, v.val.string.len);
				appendStringInfoChar(out, ':');
				break;
			case WJB_VALUE:
			case WJB_ELEM:
				append_json_scalar(out, &v);
				break;
			default:
				elog(ERROR, "unexpected jsonb iterator token: %d", (int) tok);
		}
	}
}


/* ----------------------------------------------------------------
 * Channel lookup and shape errors
 * ----------------------------------------------------------------
 */

static const ChannelSpec *
lookup_channel(const char *channel)
{
	int			i;

	if (channel == NULL)
		ereport(ERROR,
				errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				errmsg("template channel must not be null"));
	for (i = 0; i < (int) lengthof(channel_specs); i++)
	{
		if (strcmp(channel_specs[i].name, channel) == 0)
			return &channel_specs[i];
	}
	ereport(ERROR,
			errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			errmsg("unknown channel \"%s\"", channel),
			errhint("The channels are push, sms, email and webhook."));
	return NULL;				/* keep compiler quiet */
}

static const FieldSpec *
lookup_field(const ChannelSpec *spec, const char *key, int keylen)
{
	int			i;

	for (i = 0; i < spec->nfields; i++)
	{
		const char *name = spec->fields[i].name;

		if (strlen(name) == (size_t) keylen && memcmp(name, key, keylen) == 0)
			return &spec->fields[i];
	}
	return NULL;
}

/* Was the named field among the "present" bits (one per spec field)? */
static bool
has_field(const ChannelSpec *spec, uint32 present, const char *name)
{
	const FieldSpec *field = lookup_field(spec, name, strlen(name));

	Assert(field != NULL);
	return (present & ((uint32) 1 << (field - spec->fields))) != 0;
}

static void
report_unknown_field(const CompileState *cs, const ChannelSpec *spec,
					 const char *key, int keylen)
{
	StringInfoData allowed;
	int			i;

	initStringInfo(&allowed);
	for (i = 0; i < spec->nfields; i++)
		appendStringInfo(&allowed, "%s%s", i > 0 ? ", " : "",
						 spec->fields[i].name);
	ereport(ERROR,
			errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			errmsg("template \"%s\" (%s) has unknown field \"%.*s\"",
				   cs->name, cs->channel, keylen, key),
			errhint("The fields of %s templates are: %s.",
					spec->name, allowed.data));
}

static void
report_wrong_type(const CompileState *cs, const char *path, const char *what)
{
	ereport(ERROR,
			errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			errmsg("template \"%s\" (%s) field \"%s\" must be %s",
				   cs->name, cs->channel, path, what));
}

static void
report_missing_field(const CompileState *cs, const char *what,
					 const char *hint)
{
	ereport(ERROR,
			errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			errmsg("template \"%s\" (%s) needs %s",
				   cs->name, cs->channel, what),
			hint ? errhint("%s", hint) : 0);
}


/* ----------------------------------------------------------------
 * Parsing one string
 * ----------------------------------------------------------------
 */

static void
report_malformed(const CompileState *cs, const char *path,
				 const char *s, int len, const char *at,
				 const char *what, const char *hint)
{
	int			offset = at - s;

	if (cs->name != NULL)
		ereport(ERROR,
				errcode(ERRCODE_SYNTAX_ERROR),
				errmsg("template \"%s\" (%s) is malformed: %s at \"%s\"",
					   cs->name, cs->channel, what, path),
				errdetail("At byte %d of the field: \"%s\".",
						  offset, excerpt(at, len - offset)),
				errhint("%s", hint));
	else
		ereport(ERROR,
				errcode(ERRCODE_SYNTAX_ERROR),
				errmsg("template is malformed: %s at \"%s\"", what, path),
				errdetail("At byte %d of the field: \"%s\".",
						  offset, excerpt(at, len - offset)),
				errhint("%s", hint));
	pg_unreachable();
}

#define HINT_NAME "Names are letters, digits, \"_\" and \"-\", with \".\" between the parts of a nested name."

/*
 * Check and split the name of a tag (the text between the sigil and the
 * closing braces).  Returns NULL, or what is wrong.
 */
static const char *
parse_name(const char *s, int len, TplNode *node)
{
	const char *end = s + len;
	const char *p;
	int			nsegs = 1;
	int			i;

	while (s < end && is_space(*s))
		s++;
	while (end > s && is_space(end[-1]))
		end--;
	node->str = s;
	node->len = end - s;
	if (s == end)
		return "empty name";
	if (end - s == 1 && *s == '.')
	{
		node->nsegs = 0;
		node->segs = NULL;
		return NULL;
	}

	for (p = s; p < end; p++)
	{
		if (*p == '.')
		{
			if (p == s || p + 1 == end || p[1] == '.')
				return psprintf("invalid name \"%.*s\"", (int) (end - s), s);
			nsegs++;
		}
		else if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
				   (*p >= '0' && *p <= '9') || *p == '_' || *p == '-'))
			return psprintf("invalid name \"%.*s\"", (int) (end - s), s);
	}

	node->nsegs = nsegs;
	node->segs = palloc(sizeof(TplSeg) * nsegs);
	p = s;
	for (i = 0; i < nsegs; i++)
	{
		const char *dot = memchr(p, '.', end - p);
		const char *segend = dot ? dot : end;

		node->segs[i].str = p;
		node->segs[i].len = segend - p;
		p = segend + 1;
	}
	return NULL;
}

/* The parser's state while it works through one string. */
typedef struct ParseState
{
	const CompileState *cs;
	const char *path;			/* the field, for messages */
	const char *s;				/* the string and its length */
	int			len;
	TplNode    *nodes;			/* nodes so far */
	int			n;
	int			cap;
	int		   *open;			/* node indexes of the open sections */
	const char **open_at;		/* where each open section's tag starts */
	int			depth;
	int			opencap;
	int			pushing;		/* open {{#...}} sections (not {{^...}}) */
} ParseState;

static void malformed(ParseState *ps, const char *at, const char *what,
					  const char *hint) pg_attribute_noreturn();

static void
malformed(ParseState *ps, const char *at, const char *what, const char *hint)
{
	report_malformed(ps->cs, ps->path, ps->s, ps->len, at, what, hint);
}

static TplNode *
add_node(ParseState *ps)
{
	if (ps->n == ps->cap)
	{
		ps->cap *= 2;
		ps->nodes = repalloc(ps->nodes, sizeof(TplNode) * ps->cap);
	}
	memset(&ps->nodes[ps->n], 0, sizeof(TplNode));
	return &ps->nodes[ps->n++];
}

static void
add_text(ParseState *ps, const char *text, const char *text_end)
{
	TplNode    *node;

	if (text_end == text)
		return;
	node = add_node(ps);
	node->kind = NODE_TEXT;
	node->str = text;
	node->len = text_end - text;
}

/* A variable or an opening section tag; inner is the name. */
static void
add_tag(ParseState *ps, TplNodeKind kind, const char *tag,
		const char *inner, const char *inner_end)
{
	TplNode		parsed;
	const char *err;

	memset(&parsed, 0, sizeof(parsed));
	err = parse_name(inner, inner_end - inner, &parsed);
	if (err)
		malformed(ps, tag, err, HINT_NAME);
	if (parsed.nsegs == 0 && ps->pushing == 0)
		malformed(ps, tag, "\"{{.}}\" outside a section",
				  "{{.}} is the current item inside a {{#name}} section.");

	if (kind == NODE_SECTION || kind == NODE_INVERTED)
	{
		if (ps->depth == ps->opencap)
		{
			ps->opencap *= 2;
			ps->open = repalloc(ps->open, sizeof(int) * ps->opencap);
			ps->open_at = repalloc(ps->open_at,
								   sizeof(char *) * ps->opencap);
		}
		ps->open[ps->depth] = ps->n;
		ps->open_at[ps->depth] = tag;
		ps->depth++;
		if (kind == NODE_SECTION)
			ps->pushing++;
	}

	parsed.kind = kind;
	*add_node(ps) = parsed;
}

/* A closing tag {{/name}}; inner is the name. */
static void
close_section(ParseState *ps, const char *tag, const char *inner,
			  const char *inner_end)
{
	TplNode		closing;
	TplNode    *section;
	const char *err;

	err = parse_name(inner, inner_end - inner, &closing);
	if (err)
		malformed(ps, tag, err, HINT_NAME);
	if (ps->depth == 0)
		malformed(ps, tag,
				  psprintf("close \"{{/%.*s}}\" without open section",
						   closing.len, closing.str),
				  "Open the section with {{#name}} or {{^name}}, or remove the close tag.");

	section = &ps->nodes[ps->open[ps->depth - 1]];
	if (section->len != closing.len ||
		memcmp(section->str, closing.str, closing.len) != 0)
		malformed(ps, tag,
				  psprintf("mismatched close \"{{/%.*s}}\" for section \"%.*s\"",
						   closing.len, closing.str,
						   section->len, section->str),
				  "Close sections in the reverse order they were opened.");

	if (section->kind == NODE_SECTION)
		ps->pushing--;
	section->end = ps->n;
	ps->depth--;
}

/*
 * Parse one string into nodes.  Refuses anything malformed, with the
 * field's path and the byte offset of the offending tag.
 */
static TplNode *
parse_template(const CompileState *cs, const char *path,
			   const char *s, int len, int *nnodes)
{
	ParseState	ps;
	const char *end = s + len;
	const char *pos = s;
	const char *tag;

	memset(&ps, 0, sizeof(ps));
	ps.cs = cs;
	ps.path = path;
	ps.s = s;
	ps.len = len;
	ps.cap = 8;
	ps.nodes = palloc(sizeof(TplNode) * ps.cap);
	ps.opencap = 4;
	ps.open = palloc(sizeof(int) * ps.opencap);
	ps.open_at = palloc(sizeof(char *) * ps.opencap);

	while ((tag = find_pair(pos, end, '{')) != NULL)
	{
		const char *close;
		const char *inner;

		add_text(&ps, pos, tag);

		if (tag + 2 < end && tag[2] == '{')
		{
			/* {{{name}}} */
			close = find_pair(tag + 3, end, '}');
			if (close == NULL)
				malformed(&ps, tag, "unclosed tag",
						  "Close every tag with \"}}\".");
			if (close + 2 >= end || close[2] != '}')
				malformed(&ps, tag, "triple mustache not closed by \"}}}\"",
						  "Write a raw value as {{{name}}} or {{& name}}.");
			add_tag(&ps, NODE_RAW, tag, tag + 3, close);
			pos = close + 3;
			continue;
		}

		close = find_pair(tag + 2, end, '}');
		if (close == NULL)
			malformed(&ps, tag, "unclosed tag",
					  "Close every tag with \"}}\".");
		pos = close + 2;

		inner = tag + 2;
		while (inner < close && is_space(*inner))
			inner++;
		switch (inner < close ? *inner : '\0')
		{
			case '!':
				/* a comment renders nothing */
				break;
			case '#':
				add_tag(&ps, NODE_SECTION, tag, inner + 1, close);
				break;
			case '^':
				add_tag(&ps, NODE_INVERTED, tag, inner + 1, close);
				break;
			case '&':
				add_tag(&ps, NODE_RAW, tag, inner + 1, close);
				break;
			case '/':
				close_section(&ps, tag, inner + 1, close);
				break;
			case '>':
				malformed(&ps, tag, "partials are not supported",
						  "Write the text in place.");
				break;
			case '=':
				malformed(&ps, tag, "delimiter changes are not supported",
						  "Tags are always written with {{ and }}.");
				break;
			default:
				add_tag(&ps, NODE_VAR, tag, inner, close);
				break;
		}
	}
	add_text(&ps, pos, end);

	if (ps.depth > 0)
	{
		TplNode    *section = &ps.nodes[ps.open[ps.depth - 1]];

		malformed(&ps, ps.open_at[ps.depth - 1],
				  psprintf("unclosed section \"%.*s\"",
						   section->len, section->str),
				  "Close the section with {{/name}}.");
	}

	pfree(ps.open);
	pfree(ps.open_at);
	*nnodes = ps.n;
	return ps.nodes;
}


/* ----------------------------------------------------------------
 * Compiling content
 * ----------------------------------------------------------------
 */

/*
 * Compile an object or array.  Returns true when nothing in it has tags;
 * it then becomes one literal, copied through whole.
 */
static bool
compile_container(const CompileState *cs, JsonbContainer *jc,
				  const char *path, TplValue *out)
{
	JsonbIterator *it;
	JsonbIteratorToken tok;
	JsonbValue	v;
	bool		is_object = JsonContainerIsObject(jc);
	int			n = JsonContainerSize(jc);
	int			i = 0;
	bool		unchanged = true;

	check_stack_depth();

	out->kind = is_object ? VALUE_OBJECT : VALUE_ARRAY;
	out->nitems = n;
	out->items = palloc0(sizeof(TplValue) * Max(n, 1));
	if (is_object)
		out->keys = palloc(sizeof(JsonbValue) * Max(n, 1));

	it = JsonbIteratorInit(jc);
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		if (tok == WJB_KEY)
			out->keys[i] = v;
		else if (tok == WJB_VALUE || tok == WJB_ELEM)
		{
			const char *cpath = child_path(path,
										   is_object ? &out->keys[i] : NULL,
										   i);

			if (!compile_value(cs, &v, cpath, &out->items[i]))
				unchanged = false;
			i++;
		}
	}

	if (unchanged)
	{
		out->kind = VALUE_LITERAL;
		out->literal.type = jbvBinary;
		out->literal.val.binary.data = jc;
		out->literal.val.binary.len = 0;	/* not needed to push it */
		out->nitems = 0;
	}
	return unchanged;
}

/* Compile one value.  Returns true when it renders unchanged. */
static bool
compile_value(const CompileState *cs, JsonbValue *v, const char *path,
			  TplValue *out)
{
	out->path = path;
	if (v->type == jbvString && has_tag(v->val.string.val, v->val.string.len))
	{
		out->kind = VALUE_TEMPLATE;
		out->nodes = parse_template(cs, path, v->val.string.val,
									v->val.string.len, &out->nnodes);
		return false;
	}
	if (v->type == jbvBinary)
		return compile_container(cs, v->val.binary.data, path, out);
	out->kind = VALUE_LITERAL;
	out->literal = *v;
	return true;
}

/*
 * Convert the text of a typed field.  Returns false when it is empty (the
 * field is then left out), else sets *out; ERROR when it does not convert.
 */
static bool
convert_typed(const char *name, const char *channel, const char *field,
			  FieldType type, const char *s, int len, bool rendered,
			  JsonbValue *out)
{
	const char *p = s;
	const char *e = s + len;
	const char *what;

	while (p < e && is_space(*p))
		p++;
	while (e > p && is_space(e[-1]))
		e--;
	if (p == e)
		return false;

	if (type == FIELD_INTEGER)
	{
		int64		val = 0;
		const char *q;

		for (q = p; q < e && *q >= '0' && *q <= '9'; q++)
		{
			val = val * 10 + (*q - '0');
			if (val > PG_INT32_MAX)
				break;
		}
		if (q == e)
		{
			out->type = jbvNumeric;
			out->val.numeric = int64_to_numeric(val);
			return true;
		}
		what = "a non-negative integer";
	}
	else
	{
		Assert(type == FIELD_BOOLEAN);
		if (e - p == 4 && memcmp(p, "true", 4) == 0)
		{
			out->type = jbvBool;
			out->val.boolean = true;
			return true;
		}
		if (e - p == 5 && memcmp(p, "false", 5) == 0)
		{
			out->type = jbvBool;
			out->val.boolean = false;
			return true;
		}
		what = "true or false";
	}

	if (rendered)
		ereport(ERROR,
				errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("template \"%s\" (%s) field \"%s\" must render to %s",
					   name, channel, field, what),
				errdetail("It rendered to \"%s\".", excerpt(s, len)));
	else
		ereport(ERROR,
				errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("template \"%s\" (%s) field \"%s\" must be %s",
					   name, channel, field, what),
				errdetail("It is \"%s\".", excerpt(s, len)));
	return false;				/* keep compiler quiet */
}

/*
 * Check and compile one top-level field.  Returns true when it renders
 * unchanged.
 */
static bool
compile_field(const CompileState *cs, NotifyTemplate *tpl,
			  const FieldSpec *field, JsonbValue *v, TplValue *out)
{
	const char *path = field->name;
	bool		unchanged;

	switch (field->type)
	{
		case FIELD_STRING:
			if (v->type != jbvString)
				report_wrong_type(cs, path, "a string");
			break;
		case FIELD_OBJECT:
		case FIELD_HEADERS:
			if (v->type != jbvBinary ||
				!JsonContainerIsObject(v->val.binary.data))
				report_wrong_type(cs, path, "a JSON object");
			if (field->type == FIELD_HEADERS)
			{
				JsonbIterator *it = JsonbIteratorInit(v->val.binary.data);
				JsonbIteratorToken tok;
				JsonbValue	hv;
				JsonbValue	key = {0};

				while ((tok = JsonbIteratorNext(&it, &hv, true)) != WJB_DONE)
				{
					if (tok == WJB_KEY)
						key = hv;
					else if (tok == WJB_VALUE && hv.type != jbvString)
						report_wrong_type(cs, child_path(path, &key, 0),
										  "a string");
				}
			}
			break;
		case FIELD_INTEGER:
			if (v->type != jbvString && v->type != jbvNumeric)
				report_wrong_type(cs, path, "a non-negative integer");
			break;
		case FIELD_BOOLEAN:
			if (v->type != jbvString && v->type != jbvBool)
				report_wrong_type(cs, path, "true or false");
			break;
		case FIELD_ANY:
			break;
	}

	/*
	 * The email html is always a template, even without tags: its links
	 * may need rewriting.
	 */
	if (tpl->has_html && strcmp(path, "html") == 0)
	{
		out->path = path;
		out->kind = VALUE_TEMPLATE;
		out->html = true;
		out->nodes = parse_template(cs, path, v->val.string.val,
									v->val.string.len, &out->nnodes);
		return false;
	}

	unchanged = compile_value(cs, v, path, out);

	if (field->type == FIELD_INTEGER || field->type == FIELD_BOOLEAN)
	{
		out->typed = true;
		out->ftype = field->type;
		if (out->kind == VALUE_LITERAL)
		{
			JsonbValue	conv;
			bool		present;

			/* Convert a constant now, so its errors come at store time. */
			if (v->type == jbvString)
				present = convert_typed(cs->name, cs->channel, path,
										field->type, v->val.string.val,
										v->val.string.len, false, &conv);
			else if (v->type == jbvNumeric)
			{
				char	   *num = numeric_text(v->val.numeric);

				present = convert_typed(cs->name, cs->channel, path,
										field->type, num, strlen(num),
										false, &conv);
			}
			else
			{
				present = true;
				conv = *v;
			}

			if (!present)
				out->kind = VALUE_OMIT;
			else
				out->literal = conv;
			if (v->type == jbvString)
				unchanged = false;
		}
	}
	return unchanged;
}

NotifyTemplate *
notify_template_compile(Jsonb *content, const char *channel,
						const char *template_name)
{
	NotifyTemplate *tpl = palloc0(sizeof(NotifyTemplate));
	const ChannelSpec *spec;
	CompileState cs;
	TplValue   *root = &tpl->root;
	JsonbIterator *it;
	JsonbIteratorToken tok;
	JsonbValue	v;
	const FieldSpec *field = NULL;
	uint32		present = 0;
	bool		unchanged = true;
	int			i = 0;
	int			n;

	StaticAssertStmt(lengthof(push_fields) <= 32, "too many fields");

	tpl->name = pstrdup(template_name ? template_name : "?");
	spec = lookup_channel(channel);
	tpl->channel = spec->name;
	cs.name = tpl->name;
	cs.channel = spec->name;

	if (content == NULL || !JB_ROOT_IS_OBJECT(content))
		ereport(ERROR,
				errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("template \"%s\" (%s) content must be a JSON object",
					   cs.name, cs.channel));

	tpl->content = palloc(VARSIZE(content));
	memcpy(tpl->content, content, VARSIZE(content));

	n = JsonContainerSize(&tpl->content->root);
	root->kind = VALUE_OBJECT;
	root->path = "";
	root->nitems = n;
	root->items = palloc0(sizeof(TplValue) * Max(n, 1));
	root->keys = palloc(sizeof(JsonbValue) * Max(n, 1));

	if (spec->channel == CHANNEL_EMAIL)
		tpl->has_html = getKeyJsonValueFromContainer(&tpl->content->root,
													 "html", 4, &v) != NULL;

	it = JsonbIteratorInit(&tpl->content->root);
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		if (tok == WJB_KEY)
		{
			field = lookup_field(spec, v.val.string.val, v.val.string.len);
			if (field == NULL)
				report_unknown_field(&cs, spec, v.val.string.val,
									 v.val.string.len);
			present |= (uint32) 1 << (field - spec->fields);
			root->keys[i] = v;
		}
		else if (tok == WJB_VALUE)
		{
			if (!compile_field(&cs, tpl, field, &v, &root->items[i]))
				unchanged = false;
			i++;
		}
	}

	switch (spec->channel)
	{
		case CHANNEL_PUSH:
			if (!has_field(spec, present, "title") &&
				!has_field(spec, present, "body"))
			{
				const TplValue *ca = NULL;

				for (i = 0; i < n; i++)
				{
					if (strcmp(root->items[i].path, "content_available") == 0)
						ca = &root->items[i];
				}
				if (ca && ca->kind == VALUE_TEMPLATE)
					tpl->check_silent = true;
				else if (!ca || ca->kind != VALUE_LITERAL ||
						 !ca->literal.val.boolean)
					report_missing_field(&cs, "a \"title\" or \"body\" field",
										 "Only a silent push (\"content_available\": true) may have neither.");
			}
			break;
		case CHANNEL_SMS:
			if (!has_field(spec, present, "body"))
				report_missing_field(&cs, "a \"body\" field", NULL);
			break;
		case CHANNEL_EMAIL:
			if (!has_field(spec, present, "subject"))
				report_missing_field(&cs, "a \"subject\" field", NULL);
			if (!has_field(spec, present, "text") &&
				!has_field(spec, present, "html"))
				report_missing_field(&cs, "a \"text\" or \"html\" field", NULL);
			break;
		case CHANNEL_WEBHOOK:
			if (!has_field(spec, present, "body"))
				report_missing_field(&cs, "a \"body\" field", NULL);
			break;
	}

	tpl->is_static = unchanged;
	return tpl;
}

void
notify_check_template(Jsonb *content, const char *channel,
					  const char *template_name)
{
	MemoryContext cxt = AllocSetContextCreate(CurrentMemoryContext,
											  "notify template check",
											  ALLOCSET_SMALL_SIZES);
	MemoryContext old = MemoryContextSwitchTo(cxt);

	notify_template_compile(content, channel, template_name);
	MemoryContextSwitchTo(old);
	MemoryContextDelete(cxt);
}


/* ----------------------------------------------------------------
 * Rendering
 * ----------------------------------------------------------------
 */

/* Find a name in the contexts, innermost first.  False when missing. */
static bool
lookup_name(RenderCtx *ctx, const TplNode *node, JsonbValue *out)
{
	RenderCtx  *c;
	int			i;

	if (node->nsegs == 0)
	{
		*out = ctx->val;
		return true;
	}

	for (c = ctx; c != NULL; c = c->parent)
	{
		if (c->val.type == jbvBinary &&
			JsonContainerIsObject(c->val.val.binary.data) &&
			getKeyJsonValueFromContainer(c->val.val.binary.data,
										 node->segs[0].str, node->segs[0].len,
										 out) != NULL)
			break;
	}
	if (c == NULL)
		return false;

	for (i = 1; i < node->nsegs; i++)
	{
		JsonbContainer *jc;

		if (out->type != jbvBinary ||
			!JsonContainerIsObject(out->val.binary.data))
			return false;
		jc = out->val.binary.data;
		if (getKeyJsonValueFromContainer(jc, node->segs[i].str,
										 node->segs[i].len, out) == NULL)
			return false;
	}
	return true;
}

static bool
value_is_truthy(const JsonbValue *v)
{
	switch (v->type)
	{
		case jbvNull:
			return false;
		case jbvBool:
			return v->val.boolean;
		case jbvString:
			return v->val.string.len > 0;
		case jbvNumeric:
			{
				/* numeric_out never uses exponents: zero has no 1-9 digit */
				char	   *s = numeric_text(v->val.numeric);
				bool		nonzero = strpbrk(s, "123456789") != NULL;

				pfree(s);
				return nonzero;
			}
		case jbvBinary:
			return JsonContainerSize(v->val.binary.data) > 0;
		default:
			return true;
	}
}

static void
report_missing_param(RenderState *rs, const TplNode *node)
{
	ereport(ERROR,
			errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			errmsg("template \"%s\" (%s) needs parameter \"%.*s\"",
				   rs->tpl->name, rs->tpl->channel, node->len, node->str),
			errdetail("Field \"%s\" uses it.", rs->field->path),
			errhint("Pass it in params, or set it as a recipient attribute."));
}

static void
append_value(RenderState *rs, StringInfo out, const JsonbValue *v,
			 bool escape)
{
	switch (v->type)
	{
		case jbvNull:
			break;
		case jbvString:
			if (escape)
				append_html_escaped(out, v->val.string.val, v->val.string.len);
			else
				appendBinaryStringInfo(out, v->val.string.val,
									   v->val.string.len);
			break;
		case jbvBool:
			appendStringInfoString(out, v->val.boolean ? "true" : "false");
			break;
		case jbvNumeric:
			{
				char	   *s = numeric_text(v->val.numeric);

				appendStringInfoString(out, s);
				pfree(s);
			}
			break;
		case jbvBinary:
			if (rs->scratch.data == NULL)
				initStringInfo(&rs->scratch);
			else
				resetStringInfo(&rs->scratch);
			append_json_container(&rs->scratch, v->val.binary.data);
			if (escape)
				append_html_escaped(out, rs->scratch.data, rs->scratch.len);
			else
				appendBinaryStringInfo(out, rs->scratch.data,
									   rs->scratch.len);
			break;
		default:
			elog(ERROR, "unexpected jsonb value type: %d", (int) v->type);
	}
}

/* Render a section's body for a truthy value. */
static void
render_section(RenderState *rs, const TplNode *nodes, int index,
			   const JsonbValue *v, RenderCtx *ctx, StringInfo out)
{
	RenderCtx	child;

	child.parent = ctx;
	if (v->type == jbvBinary && JsonContainerIsArray(v->val.binary.data))
	{
		JsonbIterator *it = JsonbIteratorInit(v->val.binary.data);
		JsonbIteratorToken tok;

		while ((tok = JsonbIteratorNext(&it, &child.val, true)) != WJB_DONE)
		{
			if (tok != WJB_ELEM)
				continue;
			CHECK_FOR_INTERRUPTS();
			render_nodes(rs, nodes, index + 1, nodes[index].end, &child, out);
		}
	}
	else
	{
		child.val = *v;
		render_nodes(rs, nodes, index + 1, nodes[index].end, &child, out);
	}
}

static void
render_nodes(RenderState *rs, const TplNode *nodes, int start, int end,
			 RenderCtx *ctx, StringInfo out)
{
	int			i;

	check_stack_depth();

	for (i = start; i < end; i++)
	{
		const TplNode *node = &nodes[i];
		JsonbValue	v;

		switch (node->kind)
		{
			case NODE_TEXT:
				appendBinaryStringInfo(out, node->str, node->len);
				break;
			case NODE_VAR:
			case NODE_RAW:
				if (!lookup_name(ctx, node, &v))
					report_missing_param(rs, node);
				append_value(rs, out, &v,
							 node->kind == NODE_VAR && rs->field->html);
				break;
			case NODE_SECTION:
				if (lookup_name(ctx, node, &v) && value_is_truthy(&v))
					render_section(rs, nodes, i, &v, ctx, out);
				i = node->end - 1;
				break;
			case NODE_INVERTED:
				if (!lookup_name(ctx, node, &v) || !value_is_truthy(&v))
					render_nodes(rs, nodes, i + 1, node->end, ctx, out);
				i = node->end - 1;
				break;
		}
	}
}

/*
 * If p (at a whitespace byte inside a start tag) begins  href="http..."
 * with a closing quote, write the tracked version and advance *pp past the
 * closing quote.
 */
static bool
rewrite_href(RenderState *rs, StringInfo out, const char **pp,
			 const char *end)
{
	static const struct
	{
		const char *entity;
		char		c;
	}			entities[] = {
		{"&amp;", '&'},
		{"&lt;", '<'},
		{"&gt;", '>'},
		{"&quot;", '"'},
		{"&apos;", '\''},
		{"&#39;", '\''},
		{"&#x27;", '\''}
	};
	static const char hex[] = "0123456789ABCDEF";
	const char *p = *pp;
	const char *q = p;
	const char *val;
	const char *val_end;
	char		quote;

	while (q < end && is_space(*q))
		q++;
	if (!starts_with_ci(q, end, "href"))
		return false;
	q += 4;
	while (q < end && is_space(*q))
		q++;
	if (q >= end || *q != '=')
		return false;
	q++;
	while (q < end && is_space(*q))
		q++;
	if (q >= end || (*q != '"' && *q != '\''))
		return false;
	quote = *q;
	val = q + 1;
	val_end = memchr(val, quote, end - val);
	if (val_end == NULL)
		return false;
	if (!starts_with_ci(val, val_end, "http://") &&
		!starts_with_ci(val, val_end, "https://"))
		return false;

	appendBinaryStringInfo(out, p, val - p);
	append_html_escaped(out, rs->tracking, rs->tracking_len);
	for (q = val; q < val_end;)
	{
		unsigned char c = (unsigned char) *q;
		int			used = 1;

		if (c == '&')
		{
			int			i;

			for (i = 0; i < (int) lengthof(entities); i++)
			{
				int			elen = strlen(entities[i].entity);

				if (val_end - q >= elen &&
					memcmp(q, entities[i].entity, elen) == 0)
				{
					c = (unsigned char) entities[i].c;
					used = elen;
					break;
				}
			}
		}
		if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
			(c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_' ||
			c == '~')
			appendStringInfoChar(out, (char) c);
		else
		{
			appendStringInfoChar(out, '%');
			appendStringInfoChar(out, hex[c >> 4]);
			appendStringInfoChar(out, hex[c & 15]);
		}
		q += used;
	}
	appendStringInfoChar(out, quote);
	*pp = val_end + 1;
	return true;
}

/* Copy rendered html to out, rewriting links for click tracking. */
static void
rewrite_links(RenderState *rs, StringInfo out, const char *s, int len)
{
	const char *p = s;
	const char *end = s + len;

	while (p < end)
	{
		const char *lt = memchr(p, '<', end - p);

		if (lt == NULL)
		{
			appendBinaryStringInfo(out, p, end - p);
			break;
		}
		appendBinaryStringInfo(out, p, lt - p);
		p = lt;

		if (starts_with_ci(p, end, "<!--"))
		{
			/* a comment: copy through "-->" */
			const char *q = p + 4;

			while (q < end && !(end - q >= 3 && memcmp(q, "-->", 3) == 0))
				q++;
			q = Min(q + 3, end);
			appendBinaryStringInfo(out, p, q - p);
			p = q;
		}
		else if (p + 1 < end &&
				 ((p[1] >= 'a' && p[1] <= 'z') || (p[1] >= 'A' && p[1] <= 'Z')))
		{
			/* a start tag: copy it up to '>', rewriting href attributes */
			appendStringInfoChar(out, '<');
			p++;
			while (p < end && *p != '>')
			{
				if (*p == '"' || *p == '\'')
				{
					/* another attribute's quoted value */
					const char *q = memchr(p + 1, *p, end - p - 1);
					const char *qend = q ? q + 1 : end;

					appendBinaryStringInfo(out, p, qend - p);
					p = qend;
				}
				else if (is_space(*p) && rewrite_href(rs, out, &p, end))
					continue;
				else
					appendStringInfoChar(out, *p++);
			}
		}
		else
			appendStringInfoChar(out, *p++);
	}
}

/* Render one string field into *res (a jbvString). */
static void
render_string(RenderState *rs, const TplValue *tv, JsonbValue *res)
{
	StringInfoData buf;

	initStringInfo(&buf);
	rs->field = tv;
	render_nodes(rs, tv->nodes, 0, tv->nnodes, &rs->params, &buf);

	if (tv->html && rs->tracking != NULL)
	{
		StringInfoData tracked;

		initStringInfo(&tracked);
		rewrite_links(rs, &tracked, buf.data, buf.len);
		pfree(buf.data);
		buf = tracked;
	}

	res->type = jbvString;
	res->val.string.val = buf.data;
	res->val.string.len = buf.len;
}

/* A typed field's value; false when it is left out. */
static bool
resolve_typed(RenderState *rs, const TplValue *tv, JsonbValue *res)
{
	bool		present;

	switch (tv->kind)
	{
		case VALUE_OMIT:
			present = false;
			break;
		case VALUE_LITERAL:
			*res = tv->literal;
			present = true;
			break;
		case VALUE_TEMPLATE:
			{
				JsonbValue	text;

				render_string(rs, tv, &text);
				present = convert_typed(rs->tpl->name, rs->tpl->channel,
										tv->path, tv->ftype,
										text.val.string.val,
										text.val.string.len, true, res);
			}
			break;
		default:
			elog(ERROR, "unexpected typed field kind: %d", (int) tv->kind);
			present = false;	/* keep compiler quiet */
	}

	if (present && tv->ftype == FIELD_BOOLEAN &&
		strcmp(tv->path, "content_available") == 0)
		rs->silent = res->val.boolean;
	return present;
}

static JsonbValue *
render_value(RenderState *rs, const TplValue *tv, JsonbParseState **ps,
			 JsonbIteratorToken tok)
{
	JsonbValue	v;
	JsonbValue *res = NULL;
	int			i;

	switch (tv->kind)
	{
		case VALUE_LITERAL:
			v = tv->literal;
			res = pushJsonbValue(ps, tok, &v);
			break;
		case VALUE_TEMPLATE:
			render_string(rs, tv, &v);
			res = pushJsonbValue(ps, tok, &v);
			break;
		case VALUE_OBJECT:
			pushJsonbValue(ps, WJB_BEGIN_OBJECT, NULL);
			for (i = 0; i < tv->nitems; i++)
			{
				const TplValue *item = &tv->items[i];
				JsonbValue	key = tv->keys[i];

				if (item->typed)
				{
					if (!resolve_typed(rs, item, &v))
						continue;
					pushJsonbValue(ps, WJB_KEY, &key);
					pushJsonbValue(ps, WJB_VALUE, &v);
				}
				else
				{
					pushJsonbValue(ps, WJB_KEY, &key);
					render_value(rs, item, ps, WJB_VALUE);
				}
			}
			res = pushJsonbValue(ps, WJB_END_OBJECT, NULL);
			break;
		case VALUE_ARRAY:
			pushJsonbValue(ps, WJB_BEGIN_ARRAY, NULL);
			for (i = 0; i < tv->nitems; i++)
				render_value(rs, &tv->items[i], ps, WJB_ELEM);
			res = pushJsonbValue(ps, WJB_END_ARRAY, NULL);
			break;
		case VALUE_OMIT:
			elog(ERROR, "omitted value outside a typed field");
			break;
	}
	return res;
}

/* Set up a root lookup context from params or attributes. */
static void
set_root(RenderCtx *ctx, Jsonb *jb, const char *what)
{
	memset(ctx, 0, sizeof(RenderCtx));
	ctx->val.type = jbvNull;
	if (jb == NULL)
		return;
	if (!JB_ROOT_IS_OBJECT(jb))
		ereport(ERROR,
				errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("%s must be a JSON object", what),
				errhint("Pass a jsonb object such as '{\"name\": \"Ada\"}', or NULL for none."));
	ctx->val.type = jbvBinary;
	ctx->val.val.binary.data = &jb->root;
	ctx->val.val.binary.len = VARSIZE(jb) - VARHDRSZ;
}

/* Render; NULL when the result is the template's content unchanged. */
static Jsonb *
render_template(const NotifyTemplate *tpl, Jsonb *params, Jsonb *attrs)
{
	RenderState rs;
	JsonbParseState *ps = NULL;
	JsonbValue *res;

	memset(&rs, 0, sizeof(rs));
	rs.tpl = tpl;
	set_root(&rs.attrs, attrs, "attributes");
	set_root(&rs.params, params, "params");
	rs.params.parent = &rs.attrs;

	if (tpl->is_static)
		return NULL;

	if (tpl->has_html && params != NULL)
	{
		JsonbValue	prefix;

		if (getKeyJsonValueFromContainer(&params->root, NOTIFY_TRACKING_PARAM,
										 strlen(NOTIFY_TRACKING_PARAM),
										 &prefix) != NULL &&
			prefix.type != jbvNull)
		{
			if (prefix.type != jbvString)
				ereport(ERROR,
						errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						errmsg("parameter \"%s\" must be a string",
							   NOTIFY_TRACKING_PARAM),
						errhint("Set it to the URL prefix of the click tracker, or leave it out."));
			if (prefix.val.string.len > 0)
			{
				rs.tracking = prefix.val.string.val;
				rs.tracking_len = prefix.val.string.len;
			}
		}
	}

	res = render_value(&rs, &tpl->root, &ps, WJB_VALUE);

	if (tpl->check_silent && !rs.silent)
		ereport(ERROR,
				errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("template \"%s\" (%s) rendered without \"title\" or \"body\"",
					   tpl->name, tpl->channel),
				errdetail("\"content_available\" did not render to true."),
				errhint("Only a silent push (\"content_available\": true) may have neither."));

	return JsonbValueToJsonb(res);
}

Jsonb *
notify_template_render(const NotifyTemplate *tpl, Jsonb *params, Jsonb *attrs)
{
	Jsonb	   *res = render_template(tpl, params, attrs);

	if (res == NULL)
	{
		res = palloc(VARSIZE(tpl->content));
		memcpy(res, tpl->content, VARSIZE(tpl->content));
	}
	return res;
}

Jsonb *
notify_render_content(Jsonb *content, const char *channel, Jsonb *params,
					  Jsonb *attrs, const char *template_name)
{
	NotifyTemplate *tpl = notify_template_compile(content, channel,
												  template_name);
	Jsonb	   *res = render_template(tpl, params, attrs);

	return res ? res : content;
}


/* ----------------------------------------------------------------
 * Variable names
 * ----------------------------------------------------------------
 */

static void
collect_vars(const TplValue *tv, List **names)
{
	int			i;

	if (tv->kind == VALUE_TEMPLATE)
	{
		for (i = 0; i < tv->nnodes; i++)
		{
			const TplNode *node = &tv->nodes[i];

			if (node->kind != NODE_TEXT && node->nsegs > 0)
				*names = lappend(*names, pnstrdup(node->segs[0].str,
												  node->segs[0].len));
		}
	}
	else if (tv->kind == VALUE_OBJECT || tv->kind == VALUE_ARRAY)
	{
		for (i = 0; i < tv->nitems; i++)
			collect_vars(&tv->items[i], names);
	}
}

static int
compare_names(const ListCell *a, const ListCell *b)
{
	return strcmp((const char *) lfirst(a), (const char *) lfirst(b));
}

List *
notify_template_vars(Jsonb *content)
{
	CompileState cs = {NULL, NULL};
	JsonbValue	root;
	TplValue	tv;
	List	   *names = NIL;
	List	   *result = NIL;
	ListCell   *lc;
	const char *prev = NULL;

	memset(&tv, 0, sizeof(tv));
	root.type = jbvBinary;
	root.val.binary.data = &content->root;
	root.val.binary.len = VARSIZE(content) - VARHDRSZ;
	compile_value(&cs, &root, "", &tv);
	collect_vars(&tv, &names);

	list_sort(names, compare_names);
	foreach(lc, names)
	{
		const char *name = lfirst(lc);

		if (prev == NULL || strcmp(prev, name) != 0)
			result = lappend(result, (void *) name);
		prev = name;
	}
	list_free(names);
	return result;
}


/* ----------------------------------------------------------------
 * SQL-callable functions
 * ----------------------------------------------------------------
 */

typedef struct RenderCache
{
	int			nentries;
	int			next;			/* the entry to replace next */
	MemoryContext cxt[RENDER_CACHE_SIZE];
	NotifyTemplate *tpl[RENDER_CACHE_SIZE];
} RenderCache;

/* The compiled template for this content, from the call site's cache. */
static const NotifyTemplate *
cached_template(FunctionCallInfo fcinfo, Jsonb *content, const char *channel,
				const char *name)
{
	RenderCache *cache = (RenderCache *) fcinfo->flinfo->fn_extra;
	MemoryContext cxt;
	MemoryContext old;
	NotifyTemplate *tpl;
	int			slot;
	int			i;

	if (cache == NULL)
	{
		cache = MemoryContextAllocZero(fcinfo->flinfo->fn_mcxt,
									   sizeof(RenderCache));
		fcinfo->flinfo->fn_extra = cache;
	}

	for (i = 0; i < cache->nentries; i++)
	{
		tpl = cache->tpl[i];
		if (VARSIZE(tpl->content) == VARSIZE(content) &&
			strcmp(tpl->channel, channel) == 0 &&
			strcmp(tpl->name, name) == 0 &&
			memcmp(tpl->content, content, VARSIZE(content)) == 0)
			return tpl;
	}

	/*
	 * Compile in a context that dies with this call if compiling fails, and
	 * hand it to the cache only once it succeeded.
	 */
	cxt = AllocSetContextCreate(CurrentMemoryContext, "notify template",
								ALLOCSET_SMALL_SIZES);
	old = MemoryContextSwitchTo(cxt);
	tpl = notify_template_compile(content, channel, name);
	MemoryContextSwitchTo(old);
	MemoryContextSetParent(cxt, fcinfo->flinfo->fn_mcxt);

	if (cache->nentries < RENDER_CACHE_SIZE)
		slot = cache->nentries++;
	else
	{
		slot = cache->next;
		cache->next = (cache->next + 1) % RENDER_CACHE_SIZE;
		MemoryContextDelete(cache->cxt[slot]);
	}
	cache->cxt[slot] = cxt;
	cache->tpl[slot] = tpl;
	return tpl;
}

/*
 * notify._render(content jsonb, channel text, params jsonb,
 *				  attributes jsonb, template_name text) RETURNS jsonb
 */
Datum
notify_render_sql(PG_FUNCTION_ARGS)
{
	Jsonb	   *content;
	char	   *channel;
	Jsonb	   *params;
	Jsonb	   *attrs;
	char	   *name;
	const NotifyTemplate *tpl;
	Jsonb	   *res;

	if (PG_ARGISNULL(0))
		PG_RETURN_NULL();
	if (PG_ARGISNULL(1))
		ereport(ERROR,
				errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				errmsg("template channel must not be null"));

	content = PG_GETARG_JSONB_P(0);
	channel = text_to_cstring(PG_GETARG_TEXT_PP(1));
	params = PG_ARGISNULL(2) ? NULL : PG_GETARG_JSONB_P(2);
	attrs = PG_ARGISNULL(3) ? NULL : PG_GETARG_JSONB_P(3);
	name = PG_ARGISNULL(4) ? "?" : text_to_cstring(PG_GETARG_TEXT_PP(4));

	tpl = cached_template(fcinfo, content, channel, name);
	res = render_template(tpl, params, attrs);
	PG_RETURN_JSONB_P(res ? res : content);
}

/*
 * notify._check_template(content jsonb, channel text, template_name text)
 * RETURNS void
 */
Datum
notify_check_template_sql(PG_FUNCTION_ARGS)
{
	Jsonb	   *content = PG_ARGISNULL(0) ? NULL : PG_GETARG_JSONB_P(0);
	char	   *channel = PG_ARGISNULL(1) ? NULL :
		text_to_cstring(PG_GETARG_TEXT_PP(1));
	char	   *name = PG_ARGISNULL(2) ? NULL :
		text_to_cstring(PG_GETARG_TEXT_PP(2));

	notify_check_template(content, channel, name);
	PG_RETURN_VOID();
}

/* notify._template_vars(content jsonb) RETURNS text[] */
Datum
notify_template_vars_sql(PG_FUNCTION_ARGS)
{
	Jsonb	   *content = PG_GETARG_JSONB_P(0);
	List	   *names = notify_template_vars(content);
	Datum	   *elems = palloc(sizeof(Datum) * Max(list_length(names), 1));
	ListCell   *lc;
	int			n = 0;

	foreach(lc, names)
		elems[n++] = CStringGetTextDatum((const char *) lfirst(lc));

	PG_RETURN_ARRAYTYPE_P(construct_array(elems, n, TEXTOID, -1, false,
										  TYPALIGN_INT));
}
