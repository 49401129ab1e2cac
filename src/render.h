/*-------------------------------------------------------------------------
 *
 * render.h
 *	  Template rendering: a Mustache subset over jsonb template content.
 *
 * A template's content is a jsonb object shaped for its channel (see
 * MESSAGES.md); every string value in it, at any depth, is a template.
 * Keys are never templates.
 *
 * The language:
 *	 {{name}}		the value of name: looked up in the enclosing sections'
 *					items (innermost first), then params, then the
 *					recipient's attributes.  A dotted name {{order.id}}
 *					finds its first part that way and walks objects for the
 *					rest.  Strings render as is, numbers as their JSON text,
 *					booleans as true/false, null as nothing, objects and
 *					arrays as compact JSON.  A name that cannot be found is
 *					an ERROR at render time.
 *	 {{{name}}}		the same, never HTML-escaped; also written {{& name}}.
 *	 {{.}}			the current item of the innermost section.
 *	 {{#name}}..{{/name}}	rendered when name is truthy: present and not
 *					null, false, "", 0, [] or {}.  An array renders the body
 *					once per item with the item as innermost context; any
 *					other value renders it once with the value as context.
 *					A missing name is simply falsy.
 *	 {{^name}}..{{/name}}	rendered when name is falsy or missing.
 *	 {{! comment}}	renders nothing.
 * Names are made of [A-Za-z0-9_-] separated by single dots; whitespace
 * inside the braces is ignored.  Partials and delimiter changes are not
 * supported, and lines holding only a section tag are not stripped.
 *
 * Only in the email "html" field is {{name}} HTML-escaped (& < > " ' become
 * &amp; &lt; &gt; &quot; &#39;); everywhere else every tag inserts raw text.
 *
 * Typed push fields: "badge" and "ttl" render to a non-negative integer
 * (int4 range) and "mutable_content" and "content_available" to a boolean;
 * a string template such as "{{count}}" that renders to "3" becomes the
 * number 3, and "true"/"false" become booleans.  A typed field that
 * renders to "" (or only whitespace) is left out of the message; anything
 * else that does not convert is an ERROR.  A push without "title" and
 * "body" must render "content_available" to true.
 *
 * Click tracking (email html only): when params hold a non-empty string
 * NOTIFY_TRACKING_PARAM ("_tracking_url_prefix"), every quoted href
 * attribute whose value starts with http:// or https:// (any case), inside
 * a start tag of the rendered html, is rewritten to the prefix followed by
 * the original URL percent-encoded (RFC 3986: everything but A-Z a-z 0-9
 * - . _ ~ is encoded).  The original is first HTML-unescaped for &amp;
 * &lt; &gt; &quot; &apos; &#39; and &#x27;, so a URL that went through
 * {{name}} escaping is recovered exactly; the prefix is HTML-escaped into
 * the attribute.  Unquoted values, other schemes (mailto:, #anchors) and
 * HTML comments are left alone.  Example, with prefix
 * "https://t.example.com/c?u=":
 *	 <a href="https://shop.example/?a=1&amp;b=2">
 *	 <a href="https://t.example.com/c?u=https%3A%2F%2Fshop.example%2F%3Fa%3D1%26b%3D2">
 *
 * Errors: unknown channel, wrong shape, unknown field, malformed template
 * (42601, naming the field's JSON path and the byte offset) are raised by
 * compiling; a missing parameter or a typed field that does not convert by
 * rendering.  All allocations are in CurrentMemoryContext.
 *
 *-------------------------------------------------------------------------
 */
#ifndef NOTIFY_RENDER_H
#define NOTIFY_RENDER_H

#include "nodes/pg_list.h"
#include "utils/jsonb.h"

/* The params key that turns on click tracking in email html. */
#define NOTIFY_TRACKING_PARAM "_tracking_url_prefix"

/* A compiled template: checked, parsed, ready to render many times. */
typedef struct NotifyTemplate NotifyTemplate;

/*
 * Check a template's shape and syntax and parse it.  channel is "push",
 * "sms", "email" or "webhook"; template_name is only used in messages (NULL
 * shows as "?").  The result keeps its own copy of content, so the caller
 * may free content; free the result by resetting or deleting the memory
 * context it was compiled in.
 */
extern NotifyTemplate *notify_template_compile(Jsonb *content,
											   const char *channel,
											   const char *template_name);

/*
 * Render a compiled template for one recipient.  params and attrs are jsonb
 * objects or NULL (empty).  Returns a new jsonb with the same structure as
 * the content.
 */
extern Jsonb *notify_template_render(const NotifyTemplate *tpl,
									 Jsonb *params, Jsonb *attrs);

/*
 * Compile and render in one go (parses the content every time).  Returns
 * content itself when the template has nothing to render.
 */
extern Jsonb *notify_render_content(Jsonb *content, const char *channel,
									Jsonb *params, Jsonb *attrs,
									const char *template_name);

/* Shape and syntax validation only; ERROR when the template is not usable. */
extern void notify_check_template(Jsonb *content, const char *channel,
								  const char *template_name);

/*
 * The distinct first parts of all names the template's tags use (sections
 * included, at any nesting, "." excluded), sorted bytewise: a List of
 * palloc'd C strings.  Checks syntax but not shape.
 */
extern List *notify_template_vars(Jsonb *content);

#endif							/* NOTIFY_RENDER_H */
