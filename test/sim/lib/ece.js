'use strict';
/*
 * ece.js -- Web Push message encryption, RFC 8291 on top of the aes128gcm
 * content coding of RFC 8188.  Both directions: encrypt() is what an
 * application server does (used by the test client), decrypt() is what the
 * user agent does (used by the push-service simulator to prove that what
 * the C side sent really decrypts).
 *
 * Body layout (RFC 8188 section 2.1):
 *   salt (16) || rs (uint32 BE) || idlen (1) || keyid (idlen: the sender's
 *   65-byte P-256 public key) || records
 * RFC 8291 requires exactly one record, so the ciphertext is one AES-128-GCM
 * record of plaintext || 0x02 || zero padding, with its 16-byte tag.
 */

const crypto = require('node:crypto');

const TAG_LEN = 16;
const HEADER_LEN = 16 + 4 + 1;

class EceError extends Error {}

function hkdf(salt, ikm, info, length) {
  return Buffer.from(crypto.hkdfSync('sha256', ikm, salt, info, length));
}

/* CEK and nonce of RFC 8291 section 3.4 / RFC 8188 section 2.2-2.3. */
function deriveKeys(ecdhSecret, authSecret, uaPublic, asPublic, salt) {
  const keyInfo = Buffer.concat([Buffer.from('WebPush: info\0', 'latin1'), uaPublic, asPublic]);
  const ikm = hkdf(authSecret, ecdhSecret, keyInfo, 32);
  const cek = hkdf(salt, ikm, Buffer.from('Content-Encoding: aes128gcm\0', 'latin1'), 16);
  const nonce = hkdf(salt, ikm, Buffer.from('Content-Encoding: nonce\0', 'latin1'), 12);
  return { cek, nonce };
}

/*
 * Encrypt a push message for a subscription.
 *   uaPublic: 65-byte p256dh of the subscription; authSecret: 16 bytes.
 *   Optional (for test vectors): asPrivate (32-byte scalar), salt (16 bytes),
 *   rs (record size, default 4096), padding (extra zero bytes, default 0).
 */
function encrypt({ plaintext, uaPublic, authSecret, asPrivate, salt, rs = 4096, padding = 0 }) {
  const as = crypto.createECDH('prime256v1');
  if (asPrivate) as.setPrivateKey(asPrivate); else as.generateKeys();
  const asPublic = as.getPublicKey();
  salt = salt || crypto.randomBytes(16);
  const secret = as.computeSecret(uaPublic);
  const { cek, nonce } = deriveKeys(secret, authSecret, uaPublic, asPublic, salt);
  const data = Buffer.concat([Buffer.from(plaintext), Buffer.from([2]), Buffer.alloc(padding)]);
  if (data.length + TAG_LEN > rs) throw new EceError('message does not fit in one record');
  const cipher = crypto.createCipheriv('aes-128-gcm', cek, nonce);
  const ct = Buffer.concat([cipher.update(data), cipher.final(), cipher.getAuthTag()]);
  const header = Buffer.alloc(HEADER_LEN);
  salt.copy(header, 0);
  header.writeUInt32BE(rs, 16);
  header[20] = asPublic.length;
  return Buffer.concat([header, asPublic, ct]);
}

/*
 * Decrypt a push message with the subscription's private key.
 *   uaECDH: a crypto ECDH object holding the subscription's private key.
 * Returns { plaintext, salt, rs, asPublic, padding }; throws EceError
 * saying why the body does not decrypt.
 */
function decrypt({ body, uaECDH, authSecret }) {
  if (body.length < HEADER_LEN) throw new EceError('body shorter than the aes128gcm header');
  const salt = body.subarray(0, 16);
  const rs = body.readUInt32BE(16);
  const idlen = body[20];
  if (rs < 18) throw new EceError('record size ' + rs + ' is below the minimum of 18');
  if (idlen !== 65) throw new EceError('key id length ' + idlen + ', expected 65 (sender public key)');
  if (body.length < HEADER_LEN + idlen + TAG_LEN + 1) throw new EceError('body too short for one record');
  const asPublic = body.subarray(HEADER_LEN, HEADER_LEN + idlen);
  if (asPublic[0] !== 4) throw new EceError('key id is not an uncompressed P-256 point');
  const record = body.subarray(HEADER_LEN + idlen);
  if (record.length > rs) throw new EceError('more than one record (' + record.length + ' bytes > rs ' + rs + ')');
  let secret;
  try {
    secret = uaECDH.computeSecret(asPublic);
  } catch (e) {
    throw new EceError('sender public key is not on the curve');
  }
  const uaPublic = uaECDH.getPublicKey();
  const { cek, nonce } = deriveKeys(secret, authSecret, uaPublic, asPublic, salt);
  let data;
  try {
    const decipher = crypto.createDecipheriv('aes-128-gcm', cek, nonce);
    decipher.setAuthTag(record.subarray(record.length - TAG_LEN));
    data = Buffer.concat([decipher.update(record.subarray(0, record.length - TAG_LEN)), decipher.final()]);
  } catch (e) {
    throw new EceError('authentication tag mismatch (wrong keys, auth secret or salt)');
  }
  let end = data.length - 1;
  while (end >= 0 && data[end] === 0) end--;
  if (end < 0) throw new EceError('record has no padding delimiter');
  if (data[end] !== 2) throw new EceError('padding delimiter is 0x' + data[end].toString(16) + ', the last record needs 0x02');
  return { plaintext: data.subarray(0, end), salt, rs, asPublic, padding: data.length - end - 1 };
}

module.exports = { encrypt, decrypt, EceError };
