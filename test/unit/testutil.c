/*-------------------------------------------------------------------------
 *
 * testutil.c
 *	  The unit tests' harness and independent OpenSSL helpers (see
 *	  testutil.h).  Nothing here calls crypto.c.
 *
 *-------------------------------------------------------------------------
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/kdf.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>

#include "testutil.h"

int			tu_failures = 0;
static int	tu_count = 0;

void
tu_check(bool ok, const char *file, int line, const char *fmt,...)
{
	va_list		ap;

	tu_count++;
	printf("%s %d - ", ok ? "ok" : "not ok", tu_count);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	if (!ok)
	{
		printf(" (%s:%d)", file, line);
		tu_failures++;
	}
	printf("\n");
	fflush(stdout);
}

int
tu_done(void)
{
	printf("1..%d\n", tu_count);
	if (tu_failures)
		printf("# %d of %d checks FAILED\n", tu_failures, tu_count);
	else
		printf("# all %d checks passed\n", tu_count);
	return tu_failures ? 1 : 0;
}

unsigned char *
tu_b64url_decode(const char *s, size_t *len)
{
	size_t		n = strlen(s);
	size_t		i;
	unsigned char *out = malloc(n * 3 / 4 + 3);
	unsigned int acc = 0;
	int			bits = 0;
	size_t		o = 0;

	for (i = 0; i < n; i++)
	{
		const char *alpha =
			"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
		const char *p = strchr(alpha, s[i]);

		if (s[i] == '=')
			break;
		if (p == NULL)
		{
			free(out);
			return NULL;
		}
		acc = (acc << 6) | (unsigned int) (p - alpha);
		bits += 6;
		if (bits >= 8)
		{
			bits -= 8;
			out[o++] = (unsigned char) (acc >> bits);
		}
	}
	*len = o;
	return out;
}

EVP_PKEY *
tu_keygen(const char *type)
{
	if (strcmp(type, "RSA") == 0)
		return EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t) 2048);
	return EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
}

char *
tu_pem(EVP_PKEY *key, bool traditional)
{
	BIO		   *bio = BIO_new(BIO_s_mem());
	char	   *data;
	long		len;
	char	   *out;
	int			ok;

	if (traditional)
		ok = PEM_write_bio_PrivateKey_traditional(bio, key, NULL, NULL, 0,
												  NULL, NULL);
	else
		ok = PEM_write_bio_PrivateKey(bio, key, NULL, NULL, 0, NULL, NULL);
	if (!ok)
	{
		BIO_free(bio);
		return NULL;
	}
	len = BIO_get_mem_data(bio, &data);
	out = malloc((size_t) len + 1);
	memcpy(out, data, (size_t) len);
	out[len] = '\0';
	BIO_free(bio);
	return out;
}

bool
tu_ec_public(EVP_PKEY *key, unsigned char out[65])
{
	size_t		len = 0;

	return EVP_PKEY_get_octet_string_param(key, OSSL_PKEY_PARAM_PUB_KEY,
										   out, 65, &len) && len == 65;
}

EVP_PKEY *
tu_ec_key(const unsigned char priv[32], const unsigned char pub[65])
{
	OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
	OSSL_PARAM *params;
	EVP_PKEY_CTX *ctx;
	EVP_PKEY   *key = NULL;
	BIGNUM	   *d = BN_bin2bn(priv, 32, NULL);

	OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME,
									"prime256v1", 0);
	OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_PRIV_KEY, d);
	OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, pub, 65);
	params = OSSL_PARAM_BLD_to_param(bld);
	ctx = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);
	if (EVP_PKEY_fromdata_init(ctx) <= 0 ||
		EVP_PKEY_fromdata(ctx, &key, EVP_PKEY_KEYPAIR, params) <= 0)
		key = NULL;
	EVP_PKEY_CTX_free(ctx);
	OSSL_PARAM_free(params);
	OSSL_PARAM_BLD_free(bld);
	BN_free(d);
	return key;
}

bool
tu_jwt_verify(const char *jwt, EVP_PKEY *key, const char *alg,
			  char **header, char **claims)
{
	const char *dot1 = strchr(jwt, '.');
	const char *dot2 = dot1 ? strchr(dot1 + 1, '.') : NULL;
	unsigned char *sig = NULL;
	unsigned char *der = NULL;
	size_t		siglen = 0;
	int			derlen = 0;
	EVP_MD_CTX *md = NULL;
	bool		ok = false;
	char	   *part;

	if (dot1 == NULL || dot2 == NULL || strchr(dot2 + 1, '.') != NULL)
		return false;
	sig = tu_b64url_decode(dot2 + 1, &siglen);
	if (sig == NULL)
		return false;

	if (strcmp(alg, "ES256") == 0)
	{
		ECDSA_SIG  *es;
		BIGNUM	   *r;
		BIGNUM	   *s;

		if (siglen != 64)
			goto done;
		es = ECDSA_SIG_new();
		r = BN_bin2bn(sig, 32, NULL);
		s = BN_bin2bn(sig + 32, 32, NULL);
		ECDSA_SIG_set0(es, r, s);
		derlen = i2d_ECDSA_SIG(es, &der);
		ECDSA_SIG_free(es);
		if (derlen <= 0)
			goto done;
	}
	else
	{
		der = OPENSSL_malloc(siglen);
		memcpy(der, sig, siglen);
		derlen = (int) siglen;
	}

	md = EVP_MD_CTX_new();
	if (EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, key) != 1)
		goto done;
	if (EVP_DigestVerify(md, der, (size_t) derlen,
						 (const unsigned char *) jwt,
						 (size_t) (dot2 - jwt)) != 1)
		goto done;
	ok = true;

	if (header)
	{
		size_t		n;

		part = strndup(jwt, (size_t) (dot1 - jwt));
		*header = (char *) tu_b64url_decode(part, &n);
		(*header)[n] = '\0';
		free(part);
	}
	if (claims)
	{
		size_t		n;

		part = strndup(dot1 + 1, (size_t) (dot2 - dot1 - 1));
		*claims = (char *) tu_b64url_decode(part, &n);
		(*claims)[n] = '\0';
		free(part);
	}

done:
	EVP_MD_CTX_free(md);
	OPENSSL_free(der);
	free(sig);
	return ok;
}

/* HKDF through the EVP_PKEY_HKDF interface (crypto.c uses EVP_KDF). */
static bool
tu_hkdf(const unsigned char *salt, size_t saltlen,
		const unsigned char *ikm, size_t ikmlen,
		const unsigned char *info, size_t infolen,
		unsigned char *out, size_t outlen)
{
	EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_id(EVP_PKEY_HKDF, NULL);
	bool		ok;

	ok = ctx != NULL &&
		EVP_PKEY_derive_init(ctx) > 0 &&
		EVP_PKEY_CTX_set_hkdf_md(ctx, EVP_sha256()) > 0 &&
		EVP_PKEY_CTX_set1_hkdf_salt(ctx, salt, (int) saltlen) > 0 &&
		EVP_PKEY_CTX_set1_hkdf_key(ctx, ikm, (int) ikmlen) > 0 &&
		EVP_PKEY_CTX_add1_hkdf_info(ctx, info, (int) infolen) > 0 &&
		EVP_PKEY_derive(ctx, out, &outlen) > 0;
	EVP_PKEY_CTX_free(ctx);
	return ok;
}

unsigned char *
tu_webpush_decrypt(EVP_PKEY *ua_key, const unsigned char auth[16],
				   const unsigned char *body, size_t body_len,
				   size_t *plain_len)
{
	unsigned char ua_pub[65];
	unsigned char secret[32];
	size_t		secret_len = sizeof(secret);
	unsigned char info[14 + 65 + 65];
	unsigned char ikm[32];
	unsigned char cek[16];
	unsigned char nonce[12];
	unsigned char *plain = NULL;
	const unsigned char *salt = body;
	const unsigned char *as_pub;
	const unsigned char *ct;
	size_t		ct_len;
	unsigned long rs;
	OSSL_PARAM_BLD *bld = NULL;
	OSSL_PARAM *params = NULL;
	EVP_PKEY_CTX *ctx = NULL;
	EVP_PKEY   *peer = NULL;
	EVP_CIPHER_CTX *c = NULL;
	int			n = 0;
	int			fin = 0;
	size_t		len;

	if (body_len < 21 || body[20] != 65 || body_len < 86 + 17)
		return NULL;
	rs = ((unsigned long) body[16] << 24) | ((unsigned long) body[17] << 16) |
		((unsigned long) body[18] << 8) | body[19];
	as_pub = body + 21;
	ct = body + 86;
	ct_len = body_len - 86;
	if (ct_len > rs)
		return NULL;			/* RFC 8291: exactly one record */

	if (!tu_ec_public(ua_key, ua_pub))
		return NULL;

	bld = OSSL_PARAM_BLD_new();
	OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME,
									"prime256v1", 0);
	OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, as_pub, 65);
	params = OSSL_PARAM_BLD_to_param(bld);
	ctx = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);
	if (EVP_PKEY_fromdata_init(ctx) <= 0 ||
		EVP_PKEY_fromdata(ctx, &peer, EVP_PKEY_PUBLIC_KEY, params) <= 0)
		goto done;
	EVP_PKEY_CTX_free(ctx);
	ctx = EVP_PKEY_CTX_new(ua_key, NULL);
	if (EVP_PKEY_derive_init(ctx) <= 0 ||
		EVP_PKEY_derive_set_peer(ctx, peer) <= 0 ||
		EVP_PKEY_derive(ctx, secret, &secret_len) <= 0)
		goto done;

	memcpy(info, "WebPush: info\0", 14);
	memcpy(info + 14, ua_pub, 65);
	memcpy(info + 79, as_pub, 65);
	if (!tu_hkdf(auth, 16, secret, 32, info, sizeof(info), ikm, 32) ||
		!tu_hkdf(salt, 16, ikm, 32,
				 (const unsigned char *) "Content-Encoding: aes128gcm\0", 28,
				 cek, 16) ||
		!tu_hkdf(salt, 16, ikm, 32,
				 (const unsigned char *) "Content-Encoding: nonce\0", 24,
				 nonce, 12))
		goto done;

	plain = malloc(ct_len);
	c = EVP_CIPHER_CTX_new();
	if (EVP_DecryptInit_ex(c, EVP_aes_128_gcm(), NULL, cek, nonce) != 1 ||
		EVP_DecryptUpdate(c, plain, &n, ct, (int) (ct_len - 16)) != 1 ||
		EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_TAG, 16,
							(void *) (ct + ct_len - 16)) != 1 ||
		EVP_DecryptFinal_ex(c, plain + n, &fin) != 1)
	{
		free(plain);
		plain = NULL;
		goto done;
	}
	len = (size_t) (n + fin);
	/* strip zero padding, then the last-record delimiter 0x02 */
	while (len > 0 && plain[len - 1] == 0)
		len--;
	if (len == 0 || plain[len - 1] != 0x02)
	{
		free(plain);
		plain = NULL;
		goto done;
	}
	len--;
	plain[len] = '\0';			/* there is room: the delimiter was here */
	*plain_len = len;

done:
	EVP_CIPHER_CTX_free(c);
	EVP_PKEY_CTX_free(ctx);
	EVP_PKEY_free(peer);
	OSSL_PARAM_free(params);
	OSSL_PARAM_BLD_free(bld);
	return plain;
}

const char *
tu_header(const struct curl_slist *list, const char *name)
{
	size_t		n = strlen(name);

	for (; list; list = list->next)
	{
		if (strncasecmp(list->data, name, n) == 0 && list->data[n] == ':')
		{
			const char *v = list->data + n + 1;

			while (*v == ' ')
				v++;
			return v;
		}
	}
	return NULL;
}

int
tu_header_count(const struct curl_slist *list)
{
	int			n = 0;

	for (; list; list = list->next)
		n++;
	return n;
}
