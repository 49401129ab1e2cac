/*-------------------------------------------------------------------------
 *
 * fuzz_webpush_sub.c
 *	  libFuzzer target for webpush.c's PushSubscription parser and URL
 *	  origin code, which read text that browsers (and so, in the end,
 *	  anyone) supply.  webpush.c is #included to reach its static
 *	  functions; the Makefile links the rest of the layer without it.
 *
 *-------------------------------------------------------------------------
 */
#include "../../src/webpush.c"

int			LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char	   *text = malloc(size + 1);
	WebPushSubscription sub;
	char		err[NOTIFY_ERRBUF];
	char		origin[WEBPUSH_ORIGIN_MAX + 1];

	memcpy(text, data, size);
	text[size] = '\0';

	if (webpush_parse_subscription(text, &sub, err, sizeof(err)))
	{
		/* a parsed subscription has a sane origin and a P-256 key shape */
		if (strncmp(sub.origin, "http://", 7) != 0 &&
			strncmp(sub.origin, "https://", 8) != 0)
			abort();
		if (sub.p256dh[0] != 0x04 || sub.endpoint == NULL)
			abort();
		free(sub.endpoint);
	}
	else if (strlen(err) == 0)
		abort();

	/* the input as a URL */
	if (url_origin(text, origin, sizeof(origin)))
	{
		if (strlen(origin) > WEBPUSH_ORIGIN_MAX || strchr(origin, '/') ==
			NULL || strchr(origin + 8, '/') != NULL)
			abort();
	}

	free(text);
	return 0;
}
