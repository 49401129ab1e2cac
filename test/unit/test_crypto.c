/*-------------------------------------------------------------------------
 *
 * test_crypto.c
 *	  Unit tests for crypto.c: base64url/base64, HMAC-SHA256 (RFC 4231),
 *	  UUIDs, PEM key loading, ES256/RS256 JWTs verified by OpenSSL, P-256
 *	  public keys, and RFC 8291 Web Push encryption against the RFC's own
 *	  example (section 5 / appendix A) byte for byte plus round trips
 *	  through an independent decryptor.
 *
 *-------------------------------------------------------------------------
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "crypto.h"
#include "testutil.h"

/* ---- RFC 8291 section 5 (appendix A of the draft) example values ---- */
static const char *rfc_plaintext = "When I grow up, I want to be a watermelon";
static const char *rfc_as_private = "yfWPiYE-n46HLnH0KqZOF1fJJU3MYrct3AELtAQ-oRw";
static const char *rfc_as_public =
"BP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A8";
static const char *rfc_ua_private = "q1dXpw3UpT5VOmu_cf_v6ih07Aems3njxI-JWgLcM94";
static const char *rfc_ua_public =
"BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4";
static const char *rfc_auth = "BTBZMqHH6r4Tts7J_aSIgg";
static const char *rfc_salt = "DGv6ra1nlYgDCS1FRnbzlw";
static const char *rfc_ecdh = "kyrL1jIIOHEzg3sM2ZWRHDRB62YACZhhSlknJ672kSs";
static const char *rfc_body =
"DGv6ra1nlYgDCS1FRnbzlwAAEABBBP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27ml"
"mlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A_yl95bQpu6cVPT"
"pK4Mqgkf1CXztLVBSt2Ks3oZwbuwXPXLWyouBWLVWGNWQexSgSxsj_Qulcy4a-fN";

static unsigned char *
dec(const char *s, size_t *len)
{
	unsigned char *r = tu_b64url_decode(s, len);

	if (r == NULL)
	{
		fprintf(stderr, "bad test constant %s\n", s);
		exit(2);
	}
	return r;
}

static void
test_b64(void)
{
	static const struct
	{
		const char *in;
		const char *url;
		const char *std;
	}			vec[] = {
		/* RFC 4648 section 10 */
		{"", "", ""},
		{"f", "Zg", "Zg=="},
		{"fo", "Zm8", "Zm8="},
		{"foo", "Zm9v", "Zm9v"},
		{"foob", "Zm9vYg", "Zm9vYg=="},
		{"fooba", "Zm9vYmE", "Zm9vYmE="},
		{"foobar", "Zm9vYmFy", "Zm9vYmFy"},
	};
	static const unsigned char hi[] = {0xfb, 0xff, 0xbf};
	static const char *const bad[] = {
		"Z", "Zm9vY", "Zm9v!", "Zm 9v", "Zm9v\n", "Zm9v\t", "Zm=9", "Zg=", "Zg===",
		"Zm8==", "=", "==", "Zm9v=", "-+", "a_b/", NULL
	};
	size_t		i;
	char	   *s;
	unsigned char *b;
	size_t		len;
	int			n;
	bool		round_ok = true;

	for (i = 0; i < sizeof(vec) / sizeof(vec[0]); i++)
	{
		s = notify_b64url_encode((const unsigned char *) vec[i].in,
								 strlen(vec[i].in));
		CHECK(s && strcmp(s, vec[i].url) == 0, "b64url(\"%s\") = \"%s\"",
			  vec[i].in, vec[i].url);
		free(s);
		s = notify_b64_encode((const unsigned char *) vec[i].in,
							  strlen(vec[i].in));
		CHECK(s && strcmp(s, vec[i].std) == 0, "b64(\"%s\") = \"%s\"",
			  vec[i].in, vec[i].std);
		free(s);

		b = notify_b64url_decode(vec[i].url, &len);
		CHECK(b && len == strlen(vec[i].in) &&
			  memcmp(b, vec[i].in, len) == 0,
			  "decode unpadded \"%s\"", vec[i].url);
		free(b);
		b = notify_b64url_decode(vec[i].std, &len);
		CHECK(b && len == strlen(vec[i].in) &&
			  memcmp(b, vec[i].in, len) == 0,
			  "decode padded \"%s\"", vec[i].std);
		free(b);
	}

	s = notify_b64url_encode(hi, sizeof(hi));
	CHECK(s && strcmp(s, "-_-_") == 0, "b64url uses - and _ (%s)", s);
	free(s);
	s = notify_b64_encode(hi, sizeof(hi));
	CHECK(s && strcmp(s, "+/+/") == 0, "b64 uses + and / (%s)", s);
	free(s);
	b = notify_b64url_decode("+/+/", &len);
	CHECK(b && len == 3 && memcmp(b, hi, 3) == 0,
		  "decoder accepts the standard alphabet");
	free(b);

	for (i = 0; bad[i]; i++)
	{
		b = notify_b64url_decode(bad[i], &len);
		CHECK(b == NULL, "rejects malformed input #%zu", i);
		free(b);
	}
	CHECK(notify_b64url_decode(NULL, &len) == NULL, "rejects NULL");

	/* round trips of random data, every length 0..300 */
	for (n = 0; n <= 300; n++)
	{
		unsigned char data[300];
		char	   *e;
		unsigned char *d;
		size_t		dl = 0;

		RAND_bytes(data, sizeof(data));
		e = notify_b64url_encode(data, (size_t) n);
		d = e ? notify_b64url_decode(e, &dl) : NULL;
		if (e == NULL || d == NULL || dl != (size_t) n ||
			memcmp(d, data, (size_t) n) != 0 ||
			strlen(e) != ((size_t) n * 4 + 2) / 3 ||
			strpbrk(e, "+/=") != NULL)
			round_ok = false;
		free(e);
		free(d);
		e = notify_b64_encode(data, (size_t) n);
		d = e ? notify_b64url_decode(e, &dl) : NULL;
		if (e == NULL || d == NULL || dl != (size_t) n ||
			memcmp(d, data, (size_t) n) != 0 || strlen(e) % 4 != 0)
			round_ok = false;
		free(e);
		free(d);
	}
	CHECK(round_ok, "b64url and b64 round trips, lengths 0..300");
}

static void
test_hmac(void)
{
	char		out[65];
	const char *data = "what do ya want for nothing?";

	/* RFC 4231 test case 2 */
	notify_hmac_sha256_hex((const unsigned char *) "Jefe", 4,
						   (const unsigned char *) data, strlen(data), out);
	CHECK(strcmp(out, "5bdcc146bf60754e6a042426089575c7"
				 "5a003f089d2739839dec58b964ec3843") == 0,
		  "HMAC-SHA256 RFC 4231 case 2");

	/* empty key and message (a well-known value) */
	notify_hmac_sha256_hex(NULL, 0, NULL, 0, out);
	CHECK(strcmp(out, "b613679a0814d9ec772f95d778c35fc5"
				 "ff1697c493715653c6c712144292c5ad") == 0,
		  "HMAC-SHA256 of empty key and message");
}

static bool
uuid_shape(const char *u, char version)
{
	int			i;

	if (strlen(u) != 36)
		return false;
	for (i = 0; i < 36; i++)
	{
		if (i == 8 || i == 13 || i == 18 || i == 23)
		{
			if (u[i] != '-')
				return false;
		}
		else if (!isxdigit((unsigned char) u[i]) ||
				 isupper((unsigned char) u[i]))
			return false;
	}
	return u[14] == version && strchr("89ab", u[19]) != NULL;
}

static void
test_uuid(void)
{
	char		a[37];
	char		b[37];
	char		c[37];

	notify_uuid_random(a);
	notify_uuid_random(b);
	CHECK(uuid_shape(a, '4') && uuid_shape(b, '4'),
		  "random UUIDs are lowercase v4 (%s)", a);
	CHECK(strcmp(a, b) != 0, "two random UUIDs differ");

	notify_uuid_for_id(42, a);
	notify_uuid_for_id(42, b);
	notify_uuid_for_id(43, c);
	CHECK(uuid_shape(a, '8'), "uuid_for_id is a lowercase v8 UUID (%s)", a);
	CHECK(strcmp(a, b) == 0, "uuid_for_id is deterministic");
	CHECK(strcmp(a, c) != 0, "uuid_for_id differs between ids");
	notify_uuid_for_id(-1, c);
	CHECK(uuid_shape(c, '8') && strcmp(a, c) != 0, "uuid_for_id(-1) works");
}

static void
test_keys_and_jwt(void)
{
	EVP_PKEY   *ec = tu_keygen("EC");
	EVP_PKEY   *rsa = tu_keygen("RSA");
	EVP_PKEY   *k;
	char		errbuf[NOTIFY_ERRBUF];
	char	   *pem;
	char	   *jwt;
	char	   *h = NULL;
	char	   *c = NULL;
	unsigned char pub1[65];
	unsigned char pub2[65];
	const char *hdr = "{\"alg\":\"ES256\",\"kid\":\"ABC123DEFG\"}";
	const char *claims = "{\"iss\":\"DEF123GHIJ\",\"iat\":1700000000}";

	/* PKCS#8 and traditional EC PEM */
	pem = tu_pem(ec, false);
	k = notify_load_private_key(pem, errbuf);
	CHECK(k != NULL && EVP_PKEY_eq(k, ec) == 1, "loads a PKCS#8 EC key");
	CHECK(k && notify_ec_public_raw(k, pub1, errbuf) && tu_ec_public(ec, pub2) &&
		  memcmp(pub1, pub2, 65) == 0 && pub1[0] == 0x04,
		  "ec_public_raw gives the uncompressed point");
	EVP_PKEY_free(k);

	/* the same PEM with literal \n sequences, as pasted into JSON */
	{
		char	   *esc = malloc(strlen(pem) * 2 + 1);
		char	   *o = esc;
		const char *p;

		for (p = pem; *p; p++)
		{
			if (*p == '\n')
			{
				*o++ = '\\';
				*o++ = 'n';
			}
			else
				*o++ = *p;
		}
		*o = '\0';
		k = notify_load_private_key(esc, errbuf);
		CHECK(k != NULL && EVP_PKEY_eq(k, ec) == 1,
			  "loads a PEM whose line breaks are literal \\n");
		EVP_PKEY_free(k);
		free(esc);
	}
	free(pem);

	pem = tu_pem(ec, true);
	k = notify_load_private_key(pem, errbuf);
	CHECK(k != NULL && strstr(pem, "BEGIN EC PRIVATE KEY") &&
		  EVP_PKEY_eq(k, ec) == 1, "loads a traditional EC key");
	EVP_PKEY_free(k);
	free(pem);

	pem = tu_pem(rsa, true);
	k = notify_load_private_key(pem, errbuf);
	CHECK(k != NULL && strstr(pem, "BEGIN RSA PRIVATE KEY") &&
		  EVP_PKEY_eq(k, rsa) == 1, "loads a traditional RSA key");
	CHECK(k && !notify_ec_public_raw(k, pub1, errbuf),
		  "ec_public_raw refuses an RSA key (%s)", errbuf);
	EVP_PKEY_free(k);
	free(pem);

	k = notify_load_private_key("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
								errbuf);
	CHECK(k == NULL && errbuf[0] != '\0', "garbage PEM fails: %s", errbuf);
	k = notify_load_private_key("not a key", errbuf);
	CHECK(k == NULL, "non-PEM text fails: %s", errbuf);
	k = notify_load_private_key(NULL, errbuf);
	CHECK(k == NULL, "NULL fails");

	/* ES256 */
	jwt = notify_jwt_sign(ec, "ES256", hdr, claims, errbuf);
	CHECK(jwt != NULL, "signs ES256");
	CHECK(jwt && tu_jwt_verify(jwt, ec, "ES256", &h, &c),
		  "ES256 JWT verifies with OpenSSL (r||s -> DER)");
	CHECK(h && strcmp(h, hdr) == 0, "ES256 header round trips");
	CHECK(c && strcmp(c, claims) == 0, "ES256 claims round trip");
	free(h);
	free(c);
	h = c = NULL;
	if (jwt)
	{
		/* flip a bit of the signature */
		size_t		n = strlen(jwt);

		jwt[n - 3] = jwt[n - 3] == 'A' ? 'B' : 'A';
		CHECK(!tu_jwt_verify(jwt, ec, "ES256", NULL, NULL),
			  "tampered ES256 JWT does not verify");
	}
	free(jwt);

	/* many signatures: r or s with leading zero bytes must still be 32 */
	{
		int			i;
		bool		all = true;

		for (i = 0; i < 200; i++)
		{
			jwt = notify_jwt_sign(ec, "ES256", hdr, claims, errbuf);
			if (jwt == NULL || !tu_jwt_verify(jwt, ec, "ES256", NULL, NULL))
				all = false;
			free(jwt);
		}
		CHECK(all, "200 ES256 signatures all verify (padding of r and s)");
	}

	/* RS256 */
	jwt = notify_jwt_sign(rsa, "RS256", "{\"alg\":\"RS256\",\"typ\":\"JWT\"}",
						  claims, errbuf);
	CHECK(jwt && tu_jwt_verify(jwt, rsa, "RS256", &h, &c),
		  "RS256 JWT verifies with OpenSSL");
	CHECK(c && strcmp(c, claims) == 0, "RS256 claims round trip");
	free(h);
	free(c);
	free(jwt);

	CHECK(notify_jwt_sign(rsa, "ES256", hdr, claims, errbuf) == NULL,
		  "ES256 refuses an RSA key: %s", errbuf);
	CHECK(notify_jwt_sign(ec, "RS256", hdr, claims, errbuf) == NULL,
		  "RS256 refuses an EC key: %s", errbuf);
	CHECK(notify_jwt_sign(ec, "HS256", hdr, claims, errbuf) == NULL,
		  "unknown alg refused: %s", errbuf);

	/* a P-384 key is not ES256 */
	k = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-384");
	CHECK(notify_jwt_sign(k, "ES256", hdr, claims, errbuf) == NULL,
		  "ES256 refuses a P-384 key");
	EVP_PKEY_free(k);

	EVP_PKEY_free(ec);
	EVP_PKEY_free(rsa);
}

static void
test_raw_keys(void)
{
	unsigned char zero[32] = {0};
	unsigned char ff[32];
	unsigned char pub[65];
	char		errbuf[NOTIFY_ERRBUF];
	size_t		len;
	unsigned char *d = dec(rfc_as_private, &len);
	unsigned char *p = dec(rfc_as_public, &len);
	EVP_PKEY   *k = notify_ec_private_from_raw(d, errbuf);
	char	   *jwt;

	CHECK(k != NULL, "P-256 key from the RFC 8291 raw scalar");
	CHECK(k && notify_ec_public_raw(k, pub, errbuf) &&
		  memcmp(pub, p, 65) == 0,
		  "its public key is the RFC's as_public");
	jwt = k ? notify_jwt_sign(k, "ES256", "{\"typ\":\"JWT\",\"alg\":\"ES256\"}",
							  "{\"aud\":\"https://push.example.net\"}", errbuf) : NULL;
	CHECK(jwt && tu_jwt_verify(jwt, k, "ES256", NULL, NULL),
		  "a raw-scalar key signs a verifiable VAPID JWT");
	free(jwt);
	EVP_PKEY_free(k);
	free(d);
	free(p);

	memset(ff, 0xff, sizeof(ff));
	CHECK(notify_ec_private_from_raw(zero, errbuf) == NULL,
		  "scalar 0 refused: %s", errbuf);
	CHECK(notify_ec_private_from_raw(ff, errbuf) == NULL,
		  "scalar >= n refused: %s", errbuf);
}

static void
test_webpush_rfc8291(void)
{
	size_t		n;
	size_t		out_len = 0;
	unsigned char *as_priv = dec(rfc_as_private, &n);
	unsigned char *ua_priv = dec(rfc_ua_private, &n);
	unsigned char *ua_pub = dec(rfc_ua_public, &n);
	unsigned char *as_pub = dec(rfc_as_public, &n);
	unsigned char *auth = dec(rfc_auth, &n);
	unsigned char *salt = dec(rfc_salt, &n);
	size_t		ecdh_len;
	unsigned char *ecdh = dec(rfc_ecdh, &ecdh_len);
	size_t		expect_len;
	unsigned char *expect = dec(rfc_body, &expect_len);
	char		errbuf[NOTIFY_ERRBUF];
	unsigned char *body;
	unsigned char *plain;
	size_t		plain_len = 0;
	EVP_PKEY   *ua = tu_ec_key(ua_priv, ua_pub);
	EVP_PKEY   *as = tu_ec_key(as_priv, as_pub);

	/* the vector is self-consistent: ECDH of the RFC keys = RFC secret */
	{
		EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new(ua, NULL);
		unsigned char secret[32];
		size_t		slen = sizeof(secret);

		CHECK(ua && as && ctx && EVP_PKEY_derive_init(ctx) > 0 &&
			  EVP_PKEY_derive_set_peer(ctx, as) > 0 &&
			  EVP_PKEY_derive(ctx, secret, &slen) > 0 &&
			  slen == 32 && ecdh_len == 32 &&
			  memcmp(secret, ecdh, 32) == 0,
			  "RFC 8291 keys: ECDH(ua_private, as_public) = RFC shared secret");
		EVP_PKEY_CTX_free(ctx);
	}

	body = notify_webpush_encrypt(ua_pub, 65, auth, 16,
								  (const unsigned char *) rfc_plaintext,
								  strlen(rfc_plaintext), as_priv, salt,
								  &out_len, errbuf);
	CHECK(body != NULL, "encrypts the RFC 8291 example");
	CHECK(body && out_len == expect_len && expect_len == 144,
		  "body is %zu bytes (RFC: 144)", out_len);
	CHECK(body && out_len == expect_len && memcmp(body, expect, out_len) == 0,
		  "RFC 8291 section 5 body reproduced byte for byte");
	if (body && (out_len != expect_len || memcmp(body, expect, out_len) != 0))
	{
		char	   *got = notify_b64url_encode(body, out_len);

		printf("# got    %s\n# expect %s\n", got, rfc_body);
		free(got);
	}

	plain = body ? tu_webpush_decrypt(ua, auth, body, out_len, &plain_len) : NULL;
	CHECK(plain && plain_len == strlen(rfc_plaintext) &&
		  memcmp(plain, rfc_plaintext, plain_len) == 0,
		  "independent decryptor recovers the RFC plaintext");
	free(plain);
	free(body);

	/* the RFC's body also decrypts with our independent decryptor */
	plain = tu_webpush_decrypt(ua, auth, expect, expect_len, &plain_len);
	CHECK(plain && strcmp((char *) plain, rfc_plaintext) == 0,
		  "independent decryptor opens the RFC's published body");
	free(plain);

	/* fresh keys and salt: round trip, and two bodies differ */
	{
		unsigned char *b1;
		unsigned char *b2;
		size_t		l1 = 0;
		size_t		l2 = 0;

		b1 = notify_webpush_encrypt(ua_pub, 65, auth, 16,
									(const unsigned char *) rfc_plaintext,
									strlen(rfc_plaintext), NULL, NULL,
									&l1, errbuf);
		b2 = notify_webpush_encrypt(ua_pub, 65, auth, 16,
									(const unsigned char *) rfc_plaintext,
									strlen(rfc_plaintext), NULL, NULL,
									&l2, errbuf);
		CHECK(b1 && b2 && l1 == l2 && memcmp(b1, b2, 16) != 0 &&
			  memcmp(b1 + 21, b2 + 21, 65) != 0,
			  "fresh salt and key pair per message");
		plain = b1 ? tu_webpush_decrypt(ua, auth, b1, l1, &plain_len) : NULL;
		CHECK(plain && strcmp((char *) plain, rfc_plaintext) == 0,
			  "fresh-key body round trips");
		CHECK(b1 && b1[16] == 0 && b1[17] == 0 && b1[18] == 0x10 &&
			  b1[19] == 0 && b1[20] == 65, "header: rs 4096, idlen 65");
		free(plain);
		free(b1);
		free(b2);
	}

	/* limits */
	{
		unsigned char big[3994];
		unsigned char *b;
		size_t		l = 0;

		memset(big, 'x', sizeof(big));
		b = notify_webpush_encrypt(ua_pub, 65, auth, 16, big, 3993, NULL, NULL,
								   &l, errbuf);
		CHECK(b && l == 4096, "3993-byte payload fills one 4096-byte body");
		plain = b ? tu_webpush_decrypt(ua, auth, b, l, &plain_len) : NULL;
		CHECK(plain && plain_len == 3993 && memcmp(plain, big, 3993) == 0,
			  "3993-byte payload round trips");
		free(plain);
		free(b);
		b = notify_webpush_encrypt(ua_pub, 65, auth, 16, big, 3994, NULL, NULL,
								   &l, errbuf);
		CHECK(b == NULL, "3994-byte payload refused: %s", errbuf);
		b = notify_webpush_encrypt(ua_pub, 65, auth, 16, big, 0, NULL, NULL,
								   &l, errbuf);
		plain = b ? tu_webpush_decrypt(ua, auth, b, l, &plain_len) : NULL;
		CHECK(plain && plain_len == 0, "empty payload round trips");
		free(plain);
		free(b);
	}

	/* bad subscription keys */
	{
		unsigned char off_curve[65];
		size_t		l;

		memcpy(off_curve, ua_pub, 65);
		off_curve[64] ^= 1;
		CHECK(notify_webpush_encrypt(off_curve, 65, auth, 16,
									 (const unsigned char *) "x", 1, NULL,
									 NULL, &l, errbuf) == NULL,
			  "point not on the curve refused: %s", errbuf);
		CHECK(notify_webpush_encrypt(ua_pub, 64, auth, 16,
									 (const unsigned char *) "x", 1, NULL,
									 NULL, &l, errbuf) == NULL,
			  "64-byte p256dh refused");
		CHECK(notify_webpush_encrypt(ua_pub, 65, auth, 12,
									 (const unsigned char *) "x", 1, NULL,
									 NULL, &l, errbuf) == NULL,
			  "12-byte auth refused");
	}

	EVP_PKEY_free(ua);
	EVP_PKEY_free(as);
	free(as_priv);
	free(ua_priv);
	free(ua_pub);
	free(as_pub);
	free(auth);
	free(salt);
	free(ecdh);
	free(expect);
}

int
main(void)
{
	test_b64();
	test_hmac();
	test_uuid();
	test_keys_and_jwt();
	test_raw_keys();
	test_webpush_rfc8291();
	return tu_done();
}
