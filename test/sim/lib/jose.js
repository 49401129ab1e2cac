'use strict';
/*
 * jose.js -- the small part of JOSE the simulators and the test client need:
 * base64url, compact JWS parsing, ES256 / RS256 signing and verification, and
 * conversion between raw uncompressed P-256 public keys (65 bytes, as used by
 * Web Push and VAPID) and Node KeyObjects.
 *
 * Everything here is synchronous and uses only node:crypto.
 */

const crypto = require('node:crypto');

const B64URL_RE = /^[A-Za-z0-9_-]*$/;

function b64u(buf) {
  return Buffer.from(buf).toString('base64url');
}

/* Strict base64url decode: returns null for anything that is not base64url. */
function unb64u(text) {
  if (typeof text !== 'string' || !B64URL_RE.test(text) || text.length % 4 === 1) {
    return null;
  }
  return Buffer.from(text, 'base64url');
}

class JwtError extends Error {}

/*
 * Split a compact JWS into its parts.  Throws JwtError when it is not
 * three base64url segments with JSON objects for header and claims.
 */
function parseJwt(token) {
  if (typeof token !== 'string') throw new JwtError('token is not a string');
  const parts = token.split('.');
  if (parts.length !== 3) throw new JwtError('token does not have three segments');
  const [h, c, s] = parts;
  const hb = unb64u(h);
  const cb = unb64u(c);
  const sig = unb64u(s);
  if (!hb || !cb || !sig) throw new JwtError('segment is not base64url');
  let header;
  let claims;
  try {
    header = JSON.parse(hb.toString('utf8'));
    claims = JSON.parse(cb.toString('utf8'));
  } catch (e) {
    throw new JwtError('segment is not JSON');
  }
  if (!isObject(header) || !isObject(claims)) throw new JwtError('segment is not a JSON object');
  return { header, claims, signingInput: h + '.' + c, signature: sig };
}

function isObject(v) {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

/*
 * Verify the signature of a parsed JWT with a public KeyObject.
 * alg must be 'ES256' (raw r||s, 64 bytes) or 'RS256'.
 */
function verifyJwt(parsed, alg, publicKey) {
  if (parsed.header.alg !== alg) return false;
  const data = Buffer.from(parsed.signingInput, 'ascii');
  try {
    if (alg === 'ES256') {
      if (parsed.signature.length !== 64) return false;
      return crypto.verify('sha256', data, { key: publicKey, dsaEncoding: 'ieee-p1363' },
                           parsed.signature);
    }
    if (alg === 'RS256') {
      return crypto.verify('sha256', data, publicKey, parsed.signature);
    }
  } catch (e) {
    return false;
  }
  return false;
}

/* Sign header+claims; header.alg picks ES256 or RS256. */
function signJwt(header, claims, privateKey) {
  const input = b64u(JSON.stringify(header)) + '.' + b64u(JSON.stringify(claims));
  let sig;
  if (header.alg === 'ES256') {
    sig = crypto.sign('sha256', Buffer.from(input), { key: privateKey, dsaEncoding: 'ieee-p1363' });
  } else if (header.alg === 'RS256') {
    sig = crypto.sign('sha256', Buffer.from(input), privateKey);
  } else {
    throw new JwtError('unsupported alg ' + header.alg);
  }
  return input + '.' + b64u(sig);
}

/* KeyObject for a raw uncompressed P-256 point (0x04 || X || Y); null if invalid. */
function p256PublicFromRaw(raw) {
  if (!Buffer.isBuffer(raw) || raw.length !== 65 || raw[0] !== 4) return null;
  try {
    return crypto.createPublicKey({
      key: { kty: 'EC', crv: 'P-256', x: b64u(raw.subarray(1, 33)), y: b64u(raw.subarray(33)) },
      format: 'jwk',
    });
  } catch (e) {
    return null;
  }
}

/* Raw uncompressed point (65 bytes) of a P-256 public or private KeyObject. */
function p256RawFromKey(key) {
  const jwk = key.export({ format: 'jwk' });
  return Buffer.concat([Buffer.from([4]), Buffer.from(jwk.x, 'base64url'),
                        Buffer.from(jwk.y, 'base64url')]);
}

/* Private P-256 KeyObject from a 32-byte scalar (plus its public point). */
function p256PrivateFromScalar(d) {
  const ecdh = crypto.createECDH('prime256v1');
  ecdh.setPrivateKey(d);
  const pub = ecdh.getPublicKey();
  return crypto.createPrivateKey({
    key: { kty: 'EC', crv: 'P-256', d: b64u(d), x: b64u(pub.subarray(1, 33)),
           y: b64u(pub.subarray(33)) },
    format: 'jwk',
  });
}

module.exports = {
  b64u, unb64u, parseJwt, verifyJwt, signJwt, JwtError, isObject,
  p256PublicFromRaw, p256RawFromKey, p256PrivateFromScalar,
};
