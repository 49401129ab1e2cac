/*-------------------------------------------------------------------------
 *
 * testutil.h
 *	  A tiny TAP-style harness and the OpenSSL helpers the unit tests share:
 *	  key generation, JWT verification, the user agent's side of RFC 8291
 *	  (decryption), and header-list lookups.
 *
 * The helpers here deliberately use OpenSSL directly, not crypto.c, so a
 * test checks crypto.c against an independent implementation.  Test code
 * only: no network, no PostgreSQL.
 *
 *-------------------------------------------------------------------------
 */
#ifndef NOTIFY_TESTUTIL_H
#define NOTIFY_TESTUTIL_H

#include <stdbool.h>
#include <stddef.h>

#include <curl/curl.h>
#include <openssl/evp.h>

extern int	tu_failures;

/* One check: prints "ok N - what" or "not ok N - what (file:line)". */
#define CHECK(cond, ...) \
	tu_check((cond) ? true : false, __FILE__, __LINE__, __VA_ARGS__)

extern void tu_check(bool ok, const char *file, int line, const char *fmt,...)
			__attribute__((format(printf, 4, 5)));

/* Prints the plan line and returns the process exit code. */
extern int	tu_done(void);

/* Decode base64url with a test-local decoder (not crypto.c's). */
extern unsigned char *tu_b64url_decode(const char *s, size_t *len);

/* A fresh key: "EC" (P-256) or "RSA" (2048 bits). */
extern EVP_PKEY *tu_keygen(const char *type);

/* PEM text of a private key: PKCS#8, or traditional when traditional. */
extern char *tu_pem(EVP_PKEY *key, bool traditional);

/* Uncompressed P-256 public point of a key (65 bytes). */
extern bool tu_ec_public(EVP_PKEY *key, unsigned char out[65]);

/* P-256 key from a raw scalar and its public point (test vectors). */
extern EVP_PKEY *tu_ec_key(const unsigned char priv[32],
						   const unsigned char pub[65]);

/*
 * Verify a compact JWS with key: alg "ES256" (r||s converted back to DER)
 * or "RS256".  On success *header and *claims (malloc'd JSON text) are
 * set when not NULL.
 */
extern bool tu_jwt_verify(const char *jwt, EVP_PKEY *key, const char *alg,
						  char **header, char **claims);

/*
 * The user agent's side of RFC 8291: decrypt an aes128gcm body with the
 * subscription's private key and auth secret.  Returns malloc'd plaintext
 * (padding delimiter removed) or NULL.
 */
extern unsigned char *tu_webpush_decrypt(EVP_PKEY *ua_key,
										 const unsigned char auth[16],
										 const unsigned char *body,
										 size_t body_len, size_t *plain_len);

/* Value of header name in a curl header list ("Name: value"), or NULL. */
extern const char *tu_header(const struct curl_slist *list, const char *name);

/* Number of entries in a header list. */
extern int	tu_header_count(const struct curl_slist *list);

#endif							/* NOTIFY_TESTUTIL_H */
