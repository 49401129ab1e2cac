/*-------------------------------------------------------------------------
 *
 * crypto.h
 *	  The cryptography notify's providers need, on OpenSSL 3: base64url,
 *	  HMAC-SHA256, JWTs signed ES256 (APNS, VAPID) and RS256 (FCM service
 *	  accounts), UUIDs, and RFC 8291 Web Push message encryption.
 *
 * Plain C (no PostgreSQL headers): everything returns malloc'd memory or
 * NULL with a message in errbuf, and frees every OpenSSL object on every
 * path.  Key material is never copied into error messages.
 *
 *-------------------------------------------------------------------------
 */
#ifndef NOTIFY_CRYPTO_H
#define NOTIFY_CRYPTO_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

#include <openssl/evp.h>

#define NOTIFY_ERRBUF 256

/* base64url without padding; returns malloc'd NUL-terminated string. */
extern char *notify_b64url_encode(const unsigned char *data, size_t len);

/* base64url (padding optional; also accepts standard base64 alphabet);
 * returns malloc'd bytes and sets *outlen, or NULL when malformed. */
extern unsigned char *notify_b64url_decode(const char *text, size_t *outlen);

/* standard base64 with padding (for HTTP Basic auth); malloc'd. */
extern char *notify_b64_encode(const unsigned char *data, size_t len);

/* HMAC-SHA256 of data with key, written as 64 lowercase hex chars + NUL. */
extern void notify_hmac_sha256_hex(const unsigned char *key, size_t keylen,
								   const unsigned char *data, size_t datalen,
								   char out[65]);

/* A random (v4) UUID in lowercase text form, 36 chars + NUL. */
extern void notify_uuid_random(char out[37]);

/*
 * A deterministic UUID for an outbox row (v8-style layout, lowercase):
 * the same id always gives the same UUID, so a retried APNS delivery
 * carries the same apns-id.
 */
extern void notify_uuid_for_id(int64_t id, char out[37]);

/* Load a PEM private key (PKCS#8 "BEGIN PRIVATE KEY", or EC/RSA
 * traditional).  NULL and errbuf on failure. Free with EVP_PKEY_free. */
extern EVP_PKEY *notify_load_private_key(const char *pem, char *errbuf);

/*
 * Sign a JWT: header_json and claims_json are complete JSON objects as
 * text; alg is "ES256" (key must be P-256; the DER signature is converted
 * to the 64-byte r||s form JWS requires) or "RS256".  Returns malloc'd
 * "h.c.s" or NULL with errbuf.
 */
extern char *notify_jwt_sign(EVP_PKEY *key, const char *alg,
							 const char *header_json, const char *claims_json,
							 char *errbuf);

/*
 * A P-256 private key from its raw 32-byte big-endian scalar (a VAPID key
 * given as base64url, the RFC 8291 test vector).  NULL and errbuf when the
 * scalar is not in [1, n-1].  Free with EVP_PKEY_free.
 */
extern EVP_PKEY *notify_ec_private_from_raw(const unsigned char d[32],
											char *errbuf);

/*
 * The uncompressed P-256 public key (65 bytes, 0x04||X||Y) of a private
 * key, for VAPID's "k=" parameter.  Returns false with errbuf on failure.
 */
extern bool notify_ec_public_raw(EVP_PKEY *key, unsigned char out[65],
								 char *errbuf);

/*
 * RFC 8291 aes128gcm encryption of one Web Push message.
 *	 ua_public: subscription p256dh, 65 bytes uncompressed
 *	 auth_secret: subscription auth, 16 bytes
 *	 as_private / salt: NULL for fresh random ones (production); tests pass
 *	   the RFC's values to reproduce its vector.  as_private is a raw
 *	   32-byte P-256 private scalar.
 * Output: malloc'd body (salt || rs || idlen || as_public || ciphertext)
 * and its length.  Returns NULL with errbuf on failure (bad key, payload
 * over 3993 bytes).
 */
extern unsigned char *notify_webpush_encrypt(const unsigned char *ua_public,
											 size_t ua_public_len,
											 const unsigned char *auth_secret,
											 size_t auth_secret_len,
											 const unsigned char *payload,
											 size_t payload_len,
											 const unsigned char *as_private,
											 const unsigned char *salt,
											 size_t *out_len, char *errbuf);

#endif							/* NOTIFY_CRYPTO_H */
