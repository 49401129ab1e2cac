/*-------------------------------------------------------------------------
 *
 * crypto.c
 *	  The cryptography notify's providers need, on OpenSSL 3 EVP APIs:
 *	  base64url / base64, HMAC-SHA256, UUIDs, PEM private keys, JWTs signed
 *	  ES256 or RS256, raw P-256 public keys, and RFC 8291 (aes128gcm) Web
 *	  Push message encryption.
 *
 * What this file owns: the byte-level algorithms and every OpenSSL object
 * they create (each one is freed on every path, and secrets are cleansed).
 * What it does not: any protocol decision (which claims go in a JWT, when a
 * token is refreshed, what a payload holds); those live in the providers.
 *
 * Plain C: no PostgreSQL header, malloc/free, errors returned as NULL/false
 * plus a message in the caller's errbuf.  No message ever contains key
 * material; OpenSSL's error queue is cleared after a failure so a stale
 * error cannot surface later in an unrelated caller.
 *
 *-------------------------------------------------------------------------
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/kdf.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>
#include <openssl/rand.h>

#include "crypto.h"

/* RFC 8291 constants */
#define WEBPUSH_RS			4096	/* record size we announce */
#define WEBPUSH_HEADER_LEN	(16 + 4 + 1 + 65)	/* salt, rs, idlen, keyid */
#define WEBPUSH_TAG_LEN		16
#define WEBPUSH_MAX_PLAIN	(WEBPUSH_RS - WEBPUSH_HEADER_LEN - WEBPUSH_TAG_LEN - 1)

static const char b64url_alphabet[] =
"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
static const char b64_alphabet[] =
"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/*
 * Format a message into errbuf (which may be NULL), appending OpenSSL's
 * reason for the most recent failure when there is one, then clear the
 * OpenSSL error queue.  Reason strings are fixed texts from OpenSSL and
 * never contain key material.
 */
static void crypto_error(char *errbuf, const char *fmt,...)
			__attribute__((format(printf, 2, 3)));

static void
crypto_error(char *errbuf, const char *fmt,...)
{
	unsigned long e = ERR_peek_last_error();

	if (errbuf != NULL)
	{
		va_list		ap;
		size_t		len;

		va_start(ap, fmt);
		vsnprintf(errbuf, NOTIFY_ERRBUF, fmt, ap);
		va_end(ap);

		len = strlen(errbuf);
		if (e != 0 && ERR_reason_error_string(e) != NULL &&
			len < NOTIFY_ERRBUF - 1)
			snprintf(errbuf + len, NOTIFY_ERRBUF - len, ": %s",
					 ERR_reason_error_string(e));
	}
	ERR_clear_error();
}

/* ----------------------------------------------------------------
 * base64
 * ----------------------------------------------------------------
 */

static char *
b64_encode_with(const char *alphabet, bool pad,
				const unsigned char *data, size_t len)
{
	size_t		outlen = ((len + 2) / 3) * 4 + 1;
	char	   *out;
	char	   *p;
	size_t		i;

	if (len > (SIZE_MAX / 4) * 3 - 3)
		return NULL;
	out = malloc(outlen);
	if (out == NULL)
		return NULL;
	p = out;

	for (i = 0; i + 2 < len; i += 3)
	{
		uint32_t	v = ((uint32_t) data[i] << 16) |
			((uint32_t) data[i + 1] << 8) | data[i + 2];

		*p++ = alphabet[(v >> 18) & 0x3f];
		*p++ = alphabet[(v >> 12) & 0x3f];
		*p++ = alphabet[(v >> 6) & 0x3f];
		*p++ = alphabet[v & 0x3f];
	}
	if (len - i == 1)
	{
		uint32_t	v = (uint32_t) data[i] << 16;

		*p++ = alphabet[(v >> 18) & 0x3f];
		*p++ = alphabet[(v >> 12) & 0x3f];
		if (pad)
		{
			*p++ = '=';
			*p++ = '=';
		}
	}
	else if (len - i == 2)
	{
		uint32_t	v = ((uint32_t) data[i] << 16) |
			((uint32_t) data[i + 1] << 8);

		*p++ = alphabet[(v >> 18) & 0x3f];
		*p++ = alphabet[(v >> 12) & 0x3f];
		*p++ = alphabet[(v >> 6) & 0x3f];
		if (pad)
			*p++ = '=';
	}
	*p = '\0';
	return out;
}

char *
notify_b64url_encode(const unsigned char *data, size_t len)
{
	return b64_encode_with(b64url_alphabet, false, data, len);
}

char *
notify_b64_encode(const unsigned char *data, size_t len)
{
	return b64_encode_with(b64_alphabet, true, data, len);
}

/* Value of one base64 or base64url character, or -1. */
static int
b64_value(unsigned char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '-' || c == '+')
		return 62;
	if (c == '_' || c == '/')
		return 63;
	return -1;
}

/*
 * Decode base64url or base64.  Padding is optional but, when present, must
 * be exactly what completes the last quantum; nothing may follow it.  The
 * two alphabets may not be mixed within one text.  Whitespace is rejected.
 * Leftover bits in the last character are ignored (RFC 4648 3.5 allows a
 * decoder to do so).
 */
unsigned char *
notify_b64url_decode(const char *text, size_t *outlen)
{
	size_t		len;
	size_t		ndata;
	size_t		npad = 0;
	size_t		i;
	unsigned char *out;
	unsigned char *p;
	uint32_t	acc = 0;
	int			bits = 0;
	bool		seen_url = false;
	bool		seen_std = false;

	if (text == NULL || outlen == NULL)
		return NULL;

	len = strlen(text);
	ndata = len;
	while (ndata > 0 && text[ndata - 1] == '=')
	{
		ndata--;
		npad++;
	}
	/* a lone leftover character cannot encode a byte */
	if (ndata % 4 == 1)
		return NULL;
	if (npad > 0)
	{
		if (npad > 2 || (ndata + npad) % 4 != 0)
			return NULL;
		if ((ndata % 4 == 2 && npad != 2) || (ndata % 4 == 3 && npad != 1) ||
			ndata % 4 == 0)
			return NULL;
	}

	out = malloc(ndata / 4 * 3 + 3);
	if (out == NULL)
		return NULL;
	p = out;

	for (i = 0; i < ndata; i++)
	{
		unsigned char c = (unsigned char) text[i];
		int			v = b64_value(c);

		if (v < 0)
		{
			free(out);
			return NULL;
		}
		if (c == '-' || c == '_')
			seen_url = true;
		else if (c == '+' || c == '/')
			seen_std = true;

		acc = (acc << 6) | (uint32_t) v;
		bits += 6;
		if (bits >= 8)
		{
			bits -= 8;
			*p++ = (unsigned char) ((acc >> bits) & 0xff);
		}
	}
	if (seen_url && seen_std)
	{
		free(out);
		return NULL;
	}

	*outlen = (size_t) (p - out);
	return out;
}

/* ----------------------------------------------------------------
 * HMAC, UUIDs
 * ----------------------------------------------------------------
 */

static void
hex_encode(const unsigned char *data, size_t len, char *out)
{
	static const char hex[] = "0123456789abcdef";
	size_t		i;

	for (i = 0; i < len; i++)
	{
		out[2 * i] = hex[data[i] >> 4];
		out[2 * i + 1] = hex[data[i] & 0x0f];
	}
	out[2 * len] = '\0';
}

void
notify_hmac_sha256_hex(const unsigned char *key, size_t keylen,
					   const unsigned char *data, size_t datalen,
					   char out[65])
{
	unsigned char mac[EVP_MAX_MD_SIZE];
	unsigned int maclen = 0;
	static const unsigned char empty = 0;

	/* HMAC() is the one-shot interface, not deprecated in OpenSSL 3 */
	if (HMAC(EVP_sha256(), keylen > 0 ? key : &empty, (int) keylen,
			 datalen > 0 ? data : &empty, datalen, mac, &maclen) == NULL ||
		maclen != 32)
	{
		ERR_clear_error();
		out[0] = '\0';
		return;
	}
	hex_encode(mac, 32, out);
	OPENSSL_cleanse(mac, sizeof(mac));
}

/* Write 16 bytes as a lowercase 8-4-4-4-12 UUID. */
static void
uuid_format(const unsigned char b[16], char out[37])
{
	char		hex[33];
	int			i;
	int			o = 0;

	hex_encode(b, 16, hex);
	for (i = 0; i < 32; i++)
	{
		if (i == 8 || i == 12 || i == 16 || i == 20)
			out[o++] = '-';
		out[o++] = hex[i];
	}
	out[o] = '\0';
}

void
notify_uuid_random(char out[37])
{
	unsigned char b[16];

	if (RAND_bytes(b, sizeof(b)) != 1)
	{
		/*
		 * The CSPRNG failing is close to impossible; fall back to a weaker
		 * source rather than leaving the caller without an id.
		 */
		int			i;

		ERR_clear_error();
		for (i = 0; i < 16; i++)
			b[i] = (unsigned char) (random() & 0xff);
	}
	b[6] = (b[6] & 0x0f) | 0x40;	/* version 4 */
	b[8] = (b[8] & 0x3f) | 0x80;	/* RFC 4122 variant */
	uuid_format(b, out);
}

/*
 * UUID version 8 (RFC 9562 custom layout): the first 16 bytes of
 * SHA-256("notify.outbox-id:" || id as 8 bytes big-endian) with the version
 * and variant bits set.
 */
void
notify_uuid_for_id(int64_t id, char out[37])
{
	static const char ns[] = "notify.outbox-id:";
	unsigned char in[sizeof(ns) - 1 + 8];
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;
	uint64_t	u = (uint64_t) id;
	int			i;

	memcpy(in, ns, sizeof(ns) - 1);
	for (i = 0; i < 8; i++)
		in[sizeof(ns) - 1 + i] = (unsigned char) (u >> (56 - 8 * i));

	if (EVP_Digest(in, sizeof(in), md, &mdlen, EVP_sha256(), NULL) != 1)
	{
		/* cannot really happen; still deterministic */
		ERR_clear_error();
		memset(md, 0, sizeof(md));
		memcpy(md + 8, in + sizeof(ns) - 1, 8);
	}
	md[6] = (md[6] & 0x0f) | 0x80;	/* version 8 */
	md[8] = (md[8] & 0x3f) | 0x80;	/* RFC 4122 variant */
	uuid_format(md, out);
}

/* ----------------------------------------------------------------
 * Keys
 * ----------------------------------------------------------------
 */

/* Never prompt for a passphrase: an encrypted key simply fails to load. */
static int
no_passphrase(char *buf, int size, int rwflag, void *u)
{
	return -1;
}

EVP_PKEY *
notify_load_private_key(const char *pem, char *errbuf)
{
	BIO		   *bio;
	EVP_PKEY   *key;
	char	   *copy = NULL;
	const char *text = pem;

	if (pem == NULL || strstr(pem, "-----BEGIN") == NULL)
	{
		crypto_error(errbuf, "private key is not in PEM format");
		return NULL;
	}

	/*
	 * A key pasted into JSON by hand sometimes arrives with literal "\n"
	 * sequences instead of line breaks; turn them back into line breaks.
	 */
	if (strchr(pem, '\n') == NULL && strstr(pem, "\\n") != NULL)
	{
		const char *s;
		char	   *d;

		copy = malloc(strlen(pem) + 1);
		if (copy == NULL)
		{
			crypto_error(errbuf, "out of memory");
			return NULL;
		}
		for (s = pem, d = copy; *s; s++)
		{
			if (s[0] == '\\' && s[1] == 'n')
			{
				*d++ = '\n';
				s++;
			}
			else
				*d++ = *s;
		}
		*d = '\0';
		text = copy;
	}

	bio = BIO_new_mem_buf(text, -1);
	if (bio == NULL)
	{
		if (copy)
		{
			OPENSSL_cleanse(copy, strlen(copy));
			free(copy);
		}
		crypto_error(errbuf, "out of memory");
		return NULL;
	}
	key = PEM_read_bio_PrivateKey(bio, NULL, no_passphrase, NULL);
	BIO_free(bio);
	if (copy)
	{
		OPENSSL_cleanse(copy, strlen(copy));
		free(copy);
	}
	if (key == NULL)
	{
		crypto_error(errbuf, "could not load private key");
		return NULL;
	}
	ERR_clear_error();
	return key;
}

/* True when key is an EC key on P-256. */
static bool
key_is_p256(EVP_PKEY *key)
{
	char		group[64];
	size_t		glen = 0;

	if (key == NULL || !EVP_PKEY_is_a(key, "EC"))
		return false;
	if (!EVP_PKEY_get_utf8_string_param(key, OSSL_PKEY_PARAM_GROUP_NAME,
										group, sizeof(group), &glen))
	{
		ERR_clear_error();
		return false;
	}
	return strcmp(group, "prime256v1") == 0 || strcmp(group, "P-256") == 0 ||
		strcmp(group, "secp256r1") == 0;
}

/*
 * Build an EVP_PKEY for P-256 from public point octets and/or a private
 * scalar (either may be NULL, not both).  The point is validated by
 * OpenSSL (on the curve) when given.
 */
static EVP_PKEY *
p256_fromdata(const unsigned char *pub, size_t publen, const BIGNUM *priv)
{
	OSSL_PARAM_BLD *bld = NULL;
	OSSL_PARAM *params = NULL;
	EVP_PKEY_CTX *ctx = NULL;
	EVP_PKEY   *pkey = NULL;

	bld = OSSL_PARAM_BLD_new();
	if (bld == NULL)
		goto done;
	if (!OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME,
										 "prime256v1", 0))
		goto done;
	if (priv != NULL &&
		!OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_PRIV_KEY, priv))
		goto done;
	if (pub != NULL &&
		!OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY,
										  pub, publen))
		goto done;
	params = OSSL_PARAM_BLD_to_param(bld);
	if (params == NULL)
		goto done;
	ctx = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);
	if (ctx == NULL || EVP_PKEY_fromdata_init(ctx) <= 0)
		goto done;
	if (EVP_PKEY_fromdata(ctx, &pkey,
						  priv != NULL ? EVP_PKEY_KEYPAIR : EVP_PKEY_PUBLIC_KEY,
						  params) <= 0)
		pkey = NULL;

done:
	EVP_PKEY_CTX_free(ctx);
	OSSL_PARAM_free(params);	/* clears the private scalar copy */
	OSSL_PARAM_BLD_free(bld);
	return pkey;
}

/*
 * The uncompressed point d*G for a P-256 scalar.  Returns false when the
 * scalar is zero or not below the group order.
 */
static bool
p256_public_from_scalar(const BIGNUM *priv, unsigned char out[65])
{
	EC_GROUP   *group = NULL;
	EC_POINT   *point = NULL;
	BN_CTX	   *bnctx = NULL;
	bool		ok = false;

	group = EC_GROUP_new_by_curve_name(NID_X9_62_prime256v1);
	bnctx = BN_CTX_new();
	if (group == NULL || bnctx == NULL)
		goto done;
	if (BN_is_zero(priv) || BN_is_negative(priv) ||
		BN_cmp(priv, EC_GROUP_get0_order(group)) >= 0)
		goto done;
	point = EC_POINT_new(group);
	if (point == NULL ||
		!EC_POINT_mul(group, point, priv, NULL, NULL, bnctx))
		goto done;
	if (EC_POINT_point2oct(group, point, POINT_CONVERSION_UNCOMPRESSED,
						   out, 65, bnctx) != 65)
		goto done;
	ok = true;

done:
	EC_POINT_free(point);
	BN_CTX_free(bnctx);
	EC_GROUP_free(group);
	return ok;
}

EVP_PKEY *
notify_ec_private_from_raw(const unsigned char d[32], char *errbuf)
{
	BIGNUM	   *priv;
	unsigned char pub[65];
	EVP_PKEY   *key = NULL;

	priv = BN_secure_new();
	if (priv == NULL || BN_bin2bn(d, 32, priv) == NULL)
	{
		BN_clear_free(priv);
		crypto_error(errbuf, "out of memory");
		return NULL;
	}
	if (!p256_public_from_scalar(priv, pub))
	{
		BN_clear_free(priv);
		crypto_error(errbuf, "not a valid P-256 private key");
		return NULL;
	}
	key = p256_fromdata(pub, sizeof(pub), priv);
	BN_clear_free(priv);
	if (key == NULL)
	{
		crypto_error(errbuf, "could not build P-256 key");
		return NULL;
	}
	ERR_clear_error();
	return key;
}

bool
notify_ec_public_raw(EVP_PKEY *key, unsigned char out[65], char *errbuf)
{
	unsigned char enc[133];
	size_t		enclen = 0;
	EC_GROUP   *group = NULL;
	EC_POINT   *point = NULL;
	BN_CTX	   *bnctx = NULL;
	BIGNUM	   *priv = NULL;
	bool		ok = false;

	if (!key_is_p256(key))
	{
		crypto_error(errbuf, "key is not a P-256 EC key");
		return false;
	}

	if (EVP_PKEY_get_octet_string_param(key, OSSL_PKEY_PARAM_PUB_KEY,
										enc, sizeof(enc), &enclen) &&
		enclen > 0)
	{
		if (enclen == 65 && enc[0] == 0x04)
		{
			memcpy(out, enc, 65);
			ERR_clear_error();
			return true;
		}
		/* compressed or hybrid form: re-encode uncompressed */
		group = EC_GROUP_new_by_curve_name(NID_X9_62_prime256v1);
		bnctx = BN_CTX_new();
		point = group ? EC_POINT_new(group) : NULL;
		if (point != NULL && bnctx != NULL &&
			EC_POINT_oct2point(group, point, enc, enclen, bnctx) &&
			EC_POINT_point2oct(group, point, POINT_CONVERSION_UNCOMPRESSED,
							   out, 65, bnctx) == 65)
			ok = true;
	}
	else if (EVP_PKEY_get_bn_param(key, OSSL_PKEY_PARAM_PRIV_KEY, &priv))
	{
		/* a private key stored without its public half */
		ok = p256_public_from_scalar(priv, out);
	}

	EC_POINT_free(point);
	BN_CTX_free(bnctx);
	EC_GROUP_free(group);
	BN_clear_free(priv);
	if (!ok)
	{
		crypto_error(errbuf, "could not get the P-256 public key");
		return false;
	}
	ERR_clear_error();
	return true;
}

/* ----------------------------------------------------------------
 * JWT
 * ----------------------------------------------------------------
 */

/* Convert a DER ECDSA-Sig-Value into the 64-byte r||s form of JWS. */
static bool
ecdsa_der_to_raw(const unsigned char *der, size_t derlen, unsigned char out[64])
{
	const unsigned char *p = der;
	ECDSA_SIG  *sig;
	const BIGNUM *r = NULL;
	const BIGNUM *s = NULL;
	bool		ok;

	sig = d2i_ECDSA_SIG(NULL, &p, (long) derlen);
	if (sig == NULL)
		return false;
	ECDSA_SIG_get0(sig, &r, &s);
	ok = r != NULL && s != NULL &&
		BN_bn2binpad(r, out, 32) == 32 &&
		BN_bn2binpad(s, out + 32, 32) == 32;
	ECDSA_SIG_free(sig);
	return ok;
}

char *
notify_jwt_sign(EVP_PKEY *key, const char *alg,
				const char *header_json, const char *claims_json,
				char *errbuf)
{
	bool		es256;
	char	   *h = NULL;
	char	   *c = NULL;
	char	   *input = NULL;
	char	   *s = NULL;
	char	   *jwt = NULL;
	unsigned char *sig = NULL;
	size_t		siglen = 0;
	size_t		inlen;
	unsigned char raw[64];
	EVP_MD_CTX *md = NULL;

	if (key == NULL || alg == NULL || header_json == NULL || claims_json == NULL)
	{
		crypto_error(errbuf, "missing JWT argument");
		return NULL;
	}
	if (strcmp(alg, "ES256") == 0)
	{
		es256 = true;
		if (!key_is_p256(key))
		{
			crypto_error(errbuf, "ES256 needs a P-256 EC key");
			return NULL;
		}
	}
	else if (strcmp(alg, "RS256") == 0)
	{
		es256 = false;
		if (!EVP_PKEY_is_a(key, "RSA"))
		{
			crypto_error(errbuf, "RS256 needs an RSA key");
			return NULL;
		}
	}
	else
	{
		crypto_error(errbuf, "unsupported JWT algorithm");
		return NULL;
	}

	h = notify_b64url_encode((const unsigned char *) header_json,
							 strlen(header_json));
	c = notify_b64url_encode((const unsigned char *) claims_json,
							 strlen(claims_json));
	if (h == NULL || c == NULL)
	{
		crypto_error(errbuf, "out of memory");
		goto done;
	}
	inlen = strlen(h) + 1 + strlen(c);
	input = malloc(inlen + 1);
	if (input == NULL)
	{
		crypto_error(errbuf, "out of memory");
		goto done;
	}
	snprintf(input, inlen + 1, "%s.%s", h, c);

	md = EVP_MD_CTX_new();
	if (md == NULL ||
		EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, key) != 1 ||
		EVP_DigestSign(md, NULL, &siglen, (const unsigned char *) input,
					   inlen) != 1)
	{
		crypto_error(errbuf, "could not sign JWT");
		goto done;
	}
	sig = malloc(siglen);
	if (sig == NULL)
	{
		crypto_error(errbuf, "out of memory");
		goto done;
	}
	if (EVP_DigestSign(md, sig, &siglen, (const unsigned char *) input,
					   inlen) != 1)
	{
		crypto_error(errbuf, "could not sign JWT");
		goto done;
	}

	if (es256)
	{
		if (!ecdsa_der_to_raw(sig, siglen, raw))
		{
			crypto_error(errbuf, "could not convert ECDSA signature");
			goto done;
		}
		s = notify_b64url_encode(raw, sizeof(raw));
	}
	else
		s = notify_b64url_encode(sig, siglen);
	if (s == NULL)
	{
		crypto_error(errbuf, "out of memory");
		goto done;
	}

	jwt = malloc(inlen + 1 + strlen(s) + 1);
	if (jwt == NULL)
	{
		crypto_error(errbuf, "out of memory");
		goto done;
	}
	snprintf(jwt, inlen + 1 + strlen(s) + 1, "%s.%s", input, s);
	ERR_clear_error();

done:
	EVP_MD_CTX_free(md);
	free(sig);
	free(s);
	free(input);
	free(c);
	free(h);
	return jwt;
}

/* ----------------------------------------------------------------
 * RFC 8291 Web Push encryption
 * ----------------------------------------------------------------
 */

/* HKDF-SHA256 (extract and expand) through the EVP_KDF interface. */
static bool
hkdf_sha256(const unsigned char *salt, size_t saltlen,
			const unsigned char *ikm, size_t ikmlen,
			const unsigned char *info, size_t infolen,
			unsigned char *out, size_t outlen)
{
	EVP_KDF    *kdf;
	EVP_KDF_CTX *kctx = NULL;
	OSSL_PARAM	params[5];
	OSSL_PARAM *p = params;
	bool		ok = false;

	kdf = EVP_KDF_fetch(NULL, "HKDF", NULL);
	if (kdf == NULL)
		return false;
	kctx = EVP_KDF_CTX_new(kdf);
	EVP_KDF_free(kdf);
	if (kctx == NULL)
		return false;

	*p++ = OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST,
											(char *) "SHA256", 0);
	*p++ = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY,
											 (void *) ikm, ikmlen);
	*p++ = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT,
											 (void *) salt, saltlen);
	*p++ = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO,
											 (void *) info, infolen);
	*p = OSSL_PARAM_construct_end();

	if (EVP_KDF_derive(kctx, out, outlen, params) == 1)
		ok = true;
	EVP_KDF_CTX_free(kctx);
	return ok;
}

/* A fresh P-256 key pair. */
static EVP_PKEY *
p256_generate(void)
{
	EVP_PKEY_CTX *ctx;
	EVP_PKEY   *key = NULL;

	ctx = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);
	if (ctx == NULL)
		return NULL;
	if (EVP_PKEY_keygen_init(ctx) <= 0 ||
		EVP_PKEY_CTX_set_group_name(ctx, "prime256v1") <= 0 ||
		EVP_PKEY_keygen(ctx, &key) <= 0)
		key = NULL;
	EVP_PKEY_CTX_free(ctx);
	return key;
}

/* ECDH shared secret (the X coordinate, 32 bytes). */
static bool
p256_ecdh(EVP_PKEY *priv, EVP_PKEY *peer, unsigned char out[32])
{
	EVP_PKEY_CTX *ctx;
	size_t		len = 32;
	bool		ok = false;

	ctx = EVP_PKEY_CTX_new(priv, NULL);
	if (ctx == NULL)
		return false;
	if (EVP_PKEY_derive_init(ctx) > 0 &&
		EVP_PKEY_derive_set_peer_ex(ctx, peer, 1) > 0 &&
		EVP_PKEY_derive(ctx, out, &len) > 0 && len == 32)
		ok = true;
	EVP_PKEY_CTX_free(ctx);
	return ok;
}

/* AES-128-GCM encrypt; writes inlen bytes of ciphertext then the tag. */
static bool
aes128gcm_seal(const unsigned char key[16], const unsigned char nonce[12],
			   const unsigned char *in, size_t inlen, unsigned char *out)
{
	EVP_CIPHER_CTX *ctx;
	int			n = 0;
	int			fin = 0;
	bool		ok = false;

	if (inlen > INT32_MAX)
		return false;
	ctx = EVP_CIPHER_CTX_new();
	if (ctx == NULL)
		return false;
	if (EVP_EncryptInit_ex2(ctx, EVP_aes_128_gcm(), NULL, NULL, NULL) == 1 &&
		EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_IVLEN, 12, NULL) == 1 &&
		EVP_EncryptInit_ex2(ctx, NULL, key, nonce, NULL) == 1 &&
		EVP_EncryptUpdate(ctx, out, &n, in, (int) inlen) == 1 &&
		EVP_EncryptFinal_ex(ctx, out + n, &fin) == 1 &&
		(size_t) (n + fin) == inlen &&
		EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, WEBPUSH_TAG_LEN,
							out + inlen) == 1)
		ok = true;
	EVP_CIPHER_CTX_free(ctx);
	return ok;
}

unsigned char *
notify_webpush_encrypt(const unsigned char *ua_public, size_t ua_public_len,
					   const unsigned char *auth_secret, size_t auth_secret_len,
					   const unsigned char *payload, size_t payload_len,
					   const unsigned char *as_private,
					   const unsigned char *salt,
					   size_t *out_len, char *errbuf)
{
	static const char info_prefix[] = "WebPush: info";	/* + NUL */
	static const char cek_info[] = "Content-Encoding: aes128gcm";	/* + NUL */
	static const char nonce_info[] = "Content-Encoding: nonce";	/* + NUL */
	EVP_PKEY   *as_key = NULL;
	EVP_PKEY   *ua_key = NULL;
	unsigned char as_public[65];
	unsigned char salt_buf[16];
	unsigned char ecdh[32];
	unsigned char key_info[sizeof(info_prefix) + 65 + 65];
	unsigned char ikm[32];
	unsigned char cek[16];
	unsigned char nonce[12];
	unsigned char *plain = NULL;
	unsigned char *body = NULL;
	unsigned char *result = NULL;
	size_t		body_len;

	if (ua_public == NULL || ua_public_len != 65 || ua_public[0] != 0x04)
	{
		crypto_error(errbuf, "subscription key is not an uncompressed P-256 point");
		return NULL;
	}
	if (auth_secret == NULL || auth_secret_len != 16)
	{
		crypto_error(errbuf, "subscription auth secret is not 16 bytes");
		return NULL;
	}
	if (payload_len > WEBPUSH_MAX_PLAIN)
	{
		crypto_error(errbuf, "payload is %zu bytes, more than the %d a record holds",
					 payload_len, WEBPUSH_MAX_PLAIN);
		return NULL;
	}
	if (payload == NULL && payload_len > 0)
	{
		crypto_error(errbuf, "missing payload");
		return NULL;
	}
	if (out_len == NULL)
	{
		crypto_error(errbuf, "missing output length");
		return NULL;
	}

	/* the application server's key pair: given (tests) or fresh */
	if (as_private != NULL)
		as_key = notify_ec_private_from_raw(as_private, errbuf);
	else
	{
		as_key = p256_generate();
		if (as_key == NULL)
			crypto_error(errbuf, "could not generate P-256 key");
	}
	if (as_key == NULL)
		goto done;
	if (!notify_ec_public_raw(as_key, as_public, errbuf))
		goto done;

	if (salt != NULL)
		memcpy(salt_buf, salt, 16);
	else if (RAND_bytes(salt_buf, 16) != 1)
	{
		crypto_error(errbuf, "could not generate salt");
		goto done;
	}

	/* the user agent's public key; OpenSSL checks the point is on P-256 */
	ua_key = p256_fromdata(ua_public, 65, NULL);
	if (ua_key == NULL)
	{
		crypto_error(errbuf, "subscription key is not a valid P-256 point");
		goto done;
	}
	if (!p256_ecdh(as_key, ua_key, ecdh))
	{
		crypto_error(errbuf, "ECDH with the subscription key failed");
		goto done;
	}

	/* IKM = HKDF(auth_secret, ecdh, "WebPush: info" 0 ua_public as_public) */
	memcpy(key_info, info_prefix, sizeof(info_prefix));
	memcpy(key_info + sizeof(info_prefix), ua_public, 65);
	memcpy(key_info + sizeof(info_prefix) + 65, as_public, 65);
	if (!hkdf_sha256(auth_secret, 16, ecdh, 32, key_info, sizeof(key_info),
					 ikm, 32) ||
		!hkdf_sha256(salt_buf, 16, ikm, 32, (const unsigned char *) cek_info,
					 sizeof(cek_info), cek, 16) ||
		!hkdf_sha256(salt_buf, 16, ikm, 32, (const unsigned char *) nonce_info,
					 sizeof(nonce_info), nonce, 12))
	{
		crypto_error(errbuf, "HKDF failed");
		goto done;
	}

	/* one record: payload, then the last-record delimiter, no padding */
	plain = malloc(payload_len + 1);
	body_len = WEBPUSH_HEADER_LEN + payload_len + 1 + WEBPUSH_TAG_LEN;
	body = malloc(body_len);
	if (plain == NULL || body == NULL)
	{
		crypto_error(errbuf, "out of memory");
		goto done;
	}
	if (payload_len > 0)
		memcpy(plain, payload, payload_len);
	plain[payload_len] = 0x02;

	memcpy(body, salt_buf, 16);
	body[16] = (WEBPUSH_RS >> 24) & 0xff;
	body[17] = (WEBPUSH_RS >> 16) & 0xff;
	body[18] = (WEBPUSH_RS >> 8) & 0xff;
	body[19] = WEBPUSH_RS & 0xff;
	body[20] = 65;
	memcpy(body + 21, as_public, 65);
	if (!aes128gcm_seal(cek, nonce, plain, payload_len + 1,
						body + WEBPUSH_HEADER_LEN))
	{
		crypto_error(errbuf, "AES-128-GCM encryption failed");
		goto done;
	}

	*out_len = body_len;
	result = body;
	body = NULL;
	ERR_clear_error();

done:
	if (plain != NULL)
	{
		OPENSSL_cleanse(plain, payload_len + 1);
		free(plain);
	}
	free(body);
	OPENSSL_cleanse(ecdh, sizeof(ecdh));
	OPENSSL_cleanse(ikm, sizeof(ikm));
	OPENSSL_cleanse(cek, sizeof(cek));
	OPENSSL_cleanse(nonce, sizeof(nonce));
	EVP_PKEY_free(ua_key);
	EVP_PKEY_free(as_key);
	return result;
}
