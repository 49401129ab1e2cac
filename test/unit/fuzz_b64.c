/*-------------------------------------------------------------------------
 *
 * fuzz_b64.c
 *	  libFuzzer target for crypto.c's base64 code: whatever the decoder
 *	  accepts re-encodes to text that decodes to the same bytes, and any
 *	  bytes survive an encode/decode round trip in both alphabets.
 *
 *-------------------------------------------------------------------------
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "crypto.h"

int			LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char	   *text = malloc(size + 1);
	unsigned char *dec;
	size_t		len = 0;

	memcpy(text, data, size);
	text[size] = '\0';

	/* decode arbitrary text; if accepted, re-encoding is stable */
	dec = notify_b64url_decode(text, &len);
	if (dec != NULL)
	{
		char	   *enc = notify_b64url_encode(dec, len);
		unsigned char *again;
		size_t		len2 = 0;

		if (enc == NULL)
			abort();
		again = notify_b64url_decode(enc, &len2);
		if (again == NULL || len2 != len || memcmp(again, dec, len) != 0)
			abort();
		if (len > strlen(text))
			abort();
		free(again);
		free(enc);
		free(dec);
	}

	/* encode arbitrary bytes both ways and decode them back */
	{
		char	   *u = notify_b64url_encode(data, size);
		char	   *s = notify_b64_encode(data, size);
		unsigned char *du;
		unsigned char *ds;
		size_t		lu = 0;
		size_t		ls = 0;

		if (u == NULL || s == NULL)
			abort();
		du = notify_b64url_decode(u, &lu);
		ds = notify_b64url_decode(s, &ls);
		if (du == NULL || lu != size || (size && memcmp(du, data, size) != 0))
			abort();
		if (ds == NULL || ls != size || (size && memcmp(ds, data, size) != 0))
			abort();
		free(du);
		free(ds);
		free(u);
		free(s);
	}

	free(text);
	return 0;
}
