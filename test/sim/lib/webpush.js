'use strict';
/*
 * webpush.js -- a browser push service (RFC 8030) with message encryption
 * (RFC 8291) and VAPID (RFC 8292), and the user agent's side of it: the
 * simulator holds each subscription's private key and decrypts every
 * message it accepts, so a test sees the plaintext the browser would.
 *
 * HTTPS, ALPN h2 + http/1.1.
 * POST /subscribe [{"applicationServerKey": <b64url VAPID public key>,
 *                   "host": "localhost"}]
 *   -> 201 PushSubscription JSON, like a browser's toJSON():
 *      {"endpoint":"https://127.0.0.1:<port>/push/<id>","expirationTime":null,
 *       "keys":{"p256dh":<65 bytes b64url>,"auth":<16 bytes b64url>}}
 *   With applicationServerKey the subscription is restricted: pushes must
 *   be signed with that VAPID key (else 403).
 * POST /push/<id>
 *   TTL required (400), Urgency in very-low|low|normal|high, Topic <= 32
 *   base64url chars; Authorization: vapid t=<JWT>, k=<key> (401 when
 *   missing or invalid: ES256 by k, aud = endpoint origin, exp in
 *   (now, now + 24 h], sub mailto: or https:); body <= 4096 (413);
 *   Content-Encoding aes128gcm and a body that decrypts (400); unknown
 *   subscription 404, expired 410.  -> 201 with Location and TTL.
 * Error bodies follow Mozilla autopush: {"code","errno","error","message",
 * "more_info"} (errno values approximate).
 */

const crypto = require('node:crypto');
const { HttpSim, startListener } = require('./http');
const { newStats } = require('./core');
const { b64u, unb64u, parseJwt, verifyJwt, p256PublicFromRaw } = require('./jose');
const ece = require('./ece');

const URGENCIES = new Set(['very-low', 'low', 'normal', 'high']);
const TOPIC_RE = /^[A-Za-z0-9_-]{1,32}$/;
const MAX_BODY = 4096;
const VAPID_MAX_EXP_S = 24 * 3600;
const REASONS = {
  400: 'Bad Request', 401: 'Unauthorized', 403: 'Forbidden', 404: 'Not Found', 410: 'Gone',
  413: 'Payload Too Large', 429: 'Too Many Requests', 500: 'Internal Server Error', 503: 'Service Unavailable',
};

class WebpushSim extends HttpSim {
  constructor(core) {
    super(core, 'webpush', {
      require_vapid: true,
      log_requests: true,
    });
    this.subs = new Map();       /* id -> subscription */
    this.vapidCache = new Map(); /* "k|jwt" -> verified claims or error */
  }

  freshStats() {
    return newStats({ subscriptions: 0, delivered: 0, decrypt_failures: 0, vapid_failures: 0 });
  }

  /* Actions: {"expire": [id or endpoint, ...]} marks subscriptions expired (410). */
  configAction(k, v) {
    if (k !== 'expire') return false;
    if (!Array.isArray(v)) throw new Error('webpush: "expire" takes a list of ids or endpoints');
    for (const x of v) {
      const s = this.subs.get(String(x).replace(/^.*\/push\//, ''));
      if (!s) throw new Error(`webpush: no subscription ${x}`);
      s.expired = true;
    }
    return true;
  }

  async start(ports) {
    const l = await startListener('tls', ports.webpush ?? 0, this.handle, { keys: this.core.keys });
    this.servers = l.servers;
    this.port = l.port;
    return { webpush: l.port };
  }

  faultKeys(ex) {
    return [ex.path];
  }

  faultBody(status) {
    return autopushError(status, 999, `Simulated ${status}`);
  }

  fail(ex, status, errno, message, info) {
    this.json(ex, status, autopushError(status, errno, message), { ...info, error: message });
  }

  process(ex) {
    const path = ex.path.split('?')[0];
    if (path === '/subscribe') return this.subscribe(ex);
    if (path.startsWith('/push/')) return this.push(ex, path.slice(6));
    return this.fail(ex, 404, 102, 'Not found', {});
  }

  /* Create a subscription; also used by the control API. Returns the PushSubscription JSON. */
  createSubscription({ applicationServerKey, host } = {}) {
    let restrict = null;
    if (applicationServerKey !== undefined && applicationServerKey !== null) {
      restrict = unb64u(applicationServerKey);
      if (!restrict || !p256PublicFromRaw(restrict)) {
        throw new Error('applicationServerKey must be a base64url 65-byte P-256 public key');
      }
    }
    const ua = crypto.createECDH('prime256v1');
    ua.generateKeys();
    const auth = crypto.randomBytes(16);
    const id = crypto.randomBytes(16).toString('base64url');
    const origin = `https://${host === 'localhost' ? 'localhost' : '127.0.0.1'}:${this.port}`;
    const sub = { id, ua, auth, restrict, origin, endpoint: `${origin}/push/${id}`, expired: false };
    this.subs.set(id, sub);
    this.stats.subscriptions++;
    return {
      endpoint: sub.endpoint, expirationTime: null,
      keys: { p256dh: b64u(ua.getPublicKey()), auth: b64u(auth) },
    };
  }

  subscribe(ex) {
    if (ex.method !== 'POST') return this.fail(ex, 405, 101, 'Use POST', {});
    let opts = {};
    if (ex.body && ex.body.length) {
      try {
        opts = JSON.parse(ex.body.toString('utf8'));
      } catch (e) {
        return this.fail(ex, 400, 101, 'subscribe body must be JSON', {});
      }
    }
    let sub;
    try {
      sub = this.createSubscription(opts || {});
    } catch (e) {
      return this.fail(ex, 400, 101, e.message, {});
    }
    this.json(ex, 201, sub, { subscription: sub.endpoint }, { location: sub.endpoint });
  }

  push(ex, id) {
    const info = { subscription: id };
    const h = ex.headers;
    if (ex.method !== 'POST') return this.fail(ex, 405, 101, 'Use POST', info);
    const sub = this.subs.get(id);
    if (!sub) return this.fail(ex, 404, 102, 'Subscription not found', info);
    if (sub.expired) return this.fail(ex, 410, 106, 'Subscription expired', info);

    /* VAPID (RFC 8292). */
    const vapid = this.checkVapid(h.authorization, sub);
    if (vapid.error) {
      this.stats.vapid_failures++;
      return this.fail(ex, vapid.status, 109, vapid.error, info);
    }
    if (vapid.claims) info.vapid = vapid.claims;

    /* RFC 8030 headers. */
    const ttl = h.ttl;
    if (ttl === undefined) return this.fail(ex, 400, 111, 'Missing TTL header', info);
    if (!/^\d{1,10}$/.test(ttl)) return this.fail(ex, 400, 112, 'Invalid TTL header', info);
    info.ttl = Number(ttl);
    const urgency = h.urgency;
    if (urgency !== undefined) {
      if (!URGENCIES.has(urgency)) return this.fail(ex, 400, 113, `Invalid Urgency header "${urgency}"`, info);
      info.urgency = urgency;
    }
    const topic = h.topic;
    if (topic !== undefined) {
      if (!TOPIC_RE.test(topic)) return this.fail(ex, 400, 113, 'Topic must be at most 32 URL-safe base64 characters', info);
      info.topic = topic;
    }

    /* Payload (RFC 8291). */
    const body = ex.body;
    if (body && body.length > 0) {
      info.body = body.toString('base64');          /* ciphertext; plaintext below */
      info.body_encoding = 'base64';
      if (body.length > MAX_BODY || ex.truncated) return this.fail(ex, 413, 104, `Payload of ${body.length} bytes exceeds ${MAX_BODY}`, info);
      const enc = String(h['content-encoding'] || '').toLowerCase();
      if (enc !== 'aes128gcm') {
        return this.fail(ex, 400, 110, `Content-Encoding must be aes128gcm, got "${h['content-encoding'] || ''}"`, info);
      }
      let r;
      try {
        r = ece.decrypt({ body, uaECDH: sub.ua, authSecret: sub.auth });
      } catch (e) {
        this.stats.decrypt_failures++;
        return this.fail(ex, 400, 110, `Payload does not decrypt: ${e.message}`, info);
      }
      info.record_size = r.rs;
      info.padding = r.padding;
      const text = r.plaintext.toString('utf8');
      if (Buffer.from(text, 'utf8').equals(r.plaintext)) info.plaintext = text;
      else info.plaintext_b64 = r.plaintext.toString('base64');
      try {
        info.json = JSON.parse(text);
      } catch (e) { /* not JSON: fine */ }
    } else {
      info.plaintext = null;           /* a push without payload is allowed */
    }

    this.stats.delivered++;
    const msgId = crypto.randomBytes(12).toString('base64url');
    const location = `${sub.origin}/m/${msgId}`;
    info.message_id = msgId;
    this.reply(ex, 201, { location, ttl: String(info.ttl) }, null, info);
  }

  /* { claims } when the VAPID authorization is good; { status, error } otherwise. */
  checkVapid(auth, sub) {
    if (auth === undefined) {
      if (!this.cfg.require_vapid && !sub.restrict) return {};
      return { status: 401, error: 'Missing Authorization header (VAPID required)' };
    }
    const m = /^vapid\s+(.*)$/i.exec(auth);
    if (!m) return { status: 401, error: 'Authorization scheme must be "vapid" (RFC 8292)' };
    const params = {};
    for (const part of m[1].split(',')) {
      const eq = part.indexOf('=');
      if (eq > 0) params[part.slice(0, eq).trim().toLowerCase()] = part.slice(eq + 1).trim();
    }
    const t = params.t;
    const k = params.k;
    if (!t || !k) return { status: 401, error: 'VAPID Authorization needs t= and k=' };
    const cacheKey = k + '|' + t;
    let v = this.vapidCache.get(cacheKey);
    if (!v) {
      v = verifyVapidSignature(t, k);
      if (this.vapidCache.size > 10000) this.vapidCache.clear();
      this.vapidCache.set(cacheKey, v);
    }
    if (v.error) return v;
    if (sub.restrict && !sub.restrict.equals(v.raw)) {
      return { status: 403, error: 'VAPID key does not match the applicationServerKey of the subscription' };
    }
    const c = v.claims;
    if (c.aud !== sub.origin) return { status: 401, error: `VAPID aud "${c.aud}" is not the endpoint origin ${sub.origin}` };
    const now = Date.now() / 1000;
    if (!Number.isInteger(c.exp)) return { status: 401, error: 'VAPID exp missing or not an integer' };
    if (c.exp <= now) return { status: 401, error: 'VAPID token expired' };
    if (c.exp > now + VAPID_MAX_EXP_S + 5) return { status: 401, error: 'VAPID exp more than 24 hours ahead' };
    if (typeof c.sub !== 'string' || !/^(mailto:|https:)/.test(c.sub)) {
      return { status: 401, error: 'VAPID sub must be a mailto: or https: URI' };
    }
    return { claims: c };
  }
}

function verifyVapidSignature(t, k) {
  const raw = unb64u(k);
  const key = raw ? p256PublicFromRaw(raw) : null;
  if (!key) return { status: 401, error: 'VAPID k is not a base64url uncompressed P-256 public key' };
  let p;
  try {
    p = parseJwt(t);
  } catch (e) {
    return { status: 401, error: `VAPID t is not a JWT: ${e.message}` };
  }
  if (p.header.alg !== 'ES256') return { status: 401, error: 'VAPID JWT alg must be ES256' };
  if (!verifyJwt(p, 'ES256', key)) return { status: 401, error: 'VAPID JWT signature does not verify with k' };
  return { claims: p.claims, raw };
}

function autopushError(code, errno, message) {
  return { code, errno, error: REASONS[code] || 'Error', message,
           more_info: 'http://autopush.readthedocs.io/en/latest/http.html#error-codes' };
}

module.exports = { WebpushSim };
