'use strict';
/*
 * apns.js -- Apple Push Notification service, token-based provider API.
 *
 * HTTP/2 over TLS only (ALPN h2; an HTTP/1.1 client is refused).
 * POST /3/device/<token> with the checks Apple documents, answered with
 * Apple's status codes and {"reason": ...} bodies:
 *   - authorization: bearer <ES256 JWT>: kid = key_id, iss = team_id,
 *     signature by the .p8 key (apns.pub.pem), iat at most 3600 s old
 *     (ExpiredProviderToken) and not in the future;
 *   - apns-topic required and equal to the configured topic (plus the
 *     suffix the push type needs, e.g. ".voip");
 *   - apns-push-type, apns-priority (background needs 5), apns-expiration,
 *     apns-collapse-id (<= 64 bytes), apns-id (lower-case UUID);
 *   - device token 64 hex; body non-empty, <= 4096 (5120 voip), JSON with
 *     an "aps" dictionary; unregistered tokens -> 410 with timestamp.
 * Connection rules, tracked per HTTP/2 connection and reported (not
 * enforced unless configured) as violations in stats and log:
 *   - premature_stream: a second concurrent stream before any request on
 *     that connection passed token authentication;
 *   - token_update: a new provider token on a connection less than
 *     token_update_window_s after the previous one; with
 *     max_token_updates > 0, more distinct tokens than that in the window
 *     is answered 429 TooManyProviderTokenUpdates.
 * Verified JWTs are cached, so the per-request cost is a map lookup.
 */

const crypto = require('node:crypto');
const { HttpSim, startListener } = require('./http');
const { newStats } = require('./core');
const { parseJwt, verifyJwt } = require('./jose');

const PUSH_TYPES = {
  alert: '', background: '', location: '.location-query', voip: '.voip',
  complication: '.complication', fileprovider: '.pushkit.fileprovider', mdm: '',
  liveactivity: '.push-type.liveactivity', pushtotalk: '.voip-ptt', widgets: '.push-type.widgets',
  controls: '.push-type.controls',
};
const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const TOKEN_RE = /^[0-9a-fA-F]{64}$/;
const PATH_PREFIX = '/3/device/';
const JWT_CACHE_MAX = 10000;
const CLOCK_SKEW_S = 5;
const ERR_HEADERS = { 'content-type': 'application/json' };

const FAULT_REASONS = {
  400: 'BadDeviceToken', 403: 'Forbidden', 404: 'BadPath', 405: 'MethodNotAllowed',
  410: 'Unregistered', 413: 'PayloadTooLarge', 429: 'TooManyRequests', 500: 'InternalServerError',
  503: 'ServiceUnavailable',
};

class ApnsSim extends HttpSim {
  constructor(core) {
    super(core, 'apns', {
      key_id: 'ABC123DEFG',
      team_id: 'DEF123GHIJ',
      topic: 'com.example.app',
      public_key_pem: null,          /* null = apns.pub.pem from the keys dir */
      unregistered: {},              /* token -> timestamp ms (array of tokens accepted) */
      max_token_age_s: 3600,
      token_update_window_s: 1200,
      max_token_updates: 0,          /* > 0: more distinct tokens per window -> 429 */
      max_streams: 1000,             /* SETTINGS_MAX_CONCURRENT_STREAMS once warmed up */
      initial_max_streams: 1000,     /* ... before; 1 = Apple-strict warm-up */
      log_requests: true,
    });
    this.publicKey = core.keys.apnsPublic;
    this.jwtCache = new Map();
  }

  freshStats() {
    return newStats({ connections: 0, reasons: {}, premature_streams: 0, token_updates: 0,
                      token_update_violations: 0, distinct_provider_tokens: 0, warmed_connections: 0 });
  }

  reset() {
    super.reset();
    this.publicKey = this.core.keys.apnsPublic;
    this.jwtCache.clear();
  }

  normalize(k, v) {
    if (k === 'unregistered' && Array.isArray(v)) {
      const now = Date.now();
      return Object.fromEntries(v.map((t) => [String(t), now]));
    }
    if (k === 'public_key_pem') {
      this.publicKey = v ? crypto.createPublicKey(v) : this.core.keys.apnsPublic;
      this.jwtCache.clear();
    }
    if (k === 'key_id' || k === 'team_id') this.jwtCache.clear();
    return v;
  }

  async start(ports) {
    const l = await startListener('tls', ports.apns ?? 0, this.handle, {
      keys: this.core.keys, alpn: ['h2'],
      h2settings: { maxConcurrentStreams: this.cfg.initial_max_streams },
      onSession: (session, conn) => {
        this.stats.connections++;
        conn.tokens = new Map();       /* provider JWT -> first seen (ms) */
        conn.warmed = false;
        conn.session = session;
        if (this.cfg.initial_max_streams !== this.listenInitialStreams) {
          session.settings({ maxConcurrentStreams: this.cfg.initial_max_streams });
        }
      },
      /* Judge warm-up when the stream opens, before any body arrives. */
      onStream: (ex) => {
        if (ex.conn && !ex.conn.warmed && ex.concurrent > 1) ex.premature = true;
      },
    });
    this.listenInitialStreams = this.cfg.initial_max_streams;
    this.servers = l.servers;
    return { apns: l.port };
  }

  faultKeys(ex) {
    return [ex.path];
  }

  faultBody(status) {
    const reason = FAULT_REASONS[status] || 'InternalServerError';
    return status === 410 ? { reason, timestamp: Date.now() } : { reason };
  }

  fail(ex, status, reason, info) {
    const r = this.stats.reasons;
    r[reason] = (r[reason] || 0) + 1;
    const headers = { ...ERR_HEADERS, 'apns-id': info?.apns_id || crypto.randomUUID() };
    const body = status === 410 ? { reason, timestamp: info.timestamp } : { reason };
    this.reply(ex, status, headers, JSON.stringify(body), { ...info, reason });
  }

  process(ex) {
    const info = {};
    const h = ex.headers;
    const conn = ex.conn;
    const apnsId = h['apns-id'];
    if (apnsId !== undefined) info.apns_id = apnsId;

    if (ex.premature) {
      this.stats.premature_streams++;
      info.violation = 'premature_stream';
    }
    if (ex.method !== 'POST') return this.fail(ex, 405, 'MethodNotAllowed', info);
    const path = ex.path;
    if (!path.startsWith(PATH_PREFIX)) return this.fail(ex, 404, 'BadPath', info);
    const token = path.slice(PATH_PREFIX.length);
    info.token = token;

    for (const name of ['apns-id', 'apns-topic', 'apns-push-type', 'apns-priority',
                        'apns-expiration', 'apns-collapse-id', 'authorization']) {
      if (h[name] !== undefined && ex.headerCount(name) > 1) return this.fail(ex, 400, 'DuplicateHeaders', info);
    }

    /* Provider token. */
    const auth = h.authorization;
    if (auth === undefined) return this.fail(ex, 403, 'MissingProviderToken', info);
    const m = /^bearer\s+(\S+)$/i.exec(auth);
    if (!m) return this.fail(ex, 403, 'InvalidProviderToken', info);
    const jwt = m[1];
    const v = this.verifyToken(jwt);
    if (v.reason) {
      info.jwt_problem = v.problem;
      return this.fail(ex, 403, v.reason, info);
    }
    info.jwt = { kid: v.kid, iss: v.iss, iat: v.iat };
    const nowS = Date.now() / 1000;
    if (v.iat > nowS + CLOCK_SKEW_S) {
      info.jwt_problem = 'iat is in the future';
      return this.fail(ex, 403, 'InvalidProviderToken', info);
    }
    if (nowS - v.iat > this.cfg.max_token_age_s) {
      info.jwt_problem = `token is ${Math.round(nowS - v.iat)} s old`;
      return this.fail(ex, 403, 'ExpiredProviderToken', info);
    }
    if (conn) {
      if (!conn.tokens.has(jwt) && this.tokenUpdate(conn, jwt, info)) {
        return this.fail(ex, 429, 'TooManyProviderTokenUpdates', info);
      }
      if (!conn.warmed) {
        conn.warmed = true;
        this.stats.warmed_connections++;
        if (this.cfg.initial_max_streams !== this.cfg.max_streams && conn.session && !conn.session.destroyed) {
          conn.session.settings({ maxConcurrentStreams: this.cfg.max_streams });
        }
      }
    }

    /* Headers. */
    const topic = h['apns-topic'];
    if (topic === undefined || topic === '') return this.fail(ex, 400, 'MissingTopic', info);
    const pushType = h['apns-push-type'];
    const problems = [];
    if (pushType === undefined) problems.push('no apns-push-type (required for watchOS, recommended everywhere)');
    else if (!Object.prototype.hasOwnProperty.call(PUSH_TYPES, pushType)) return this.fail(ex, 400, 'InvalidPushType', info);
    const type = pushType || 'alert';
    info.push_type = type;
    info.topic = topic;
    if (topic !== this.cfg.topic + PUSH_TYPES[type]) return this.fail(ex, 400, 'DeviceTokenNotForTopic', info);

    const prio = h['apns-priority'];
    if (prio !== undefined && prio !== '10' && prio !== '5' && prio !== '1') return this.fail(ex, 400, 'BadPriority', info);
    if (type === 'background' && prio !== '5') {
      info.problem = 'background push needs apns-priority 5';
      return this.fail(ex, 400, 'BadPriority', info);
    }
    const exp = h['apns-expiration'];
    if (exp !== undefined && !/^\d{1,12}$/.test(exp)) return this.fail(ex, 400, 'BadExpirationDate', info);
    const collapse = h['apns-collapse-id'];
    if (collapse !== undefined && Buffer.byteLength(collapse) > 64) return this.fail(ex, 400, 'BadCollapseId', info);
    if (apnsId !== undefined && !UUID_RE.test(apnsId)) return this.fail(ex, 400, 'BadMessageId', info);

    /* Device token. */
    if (token === '') return this.fail(ex, 400, 'MissingDeviceToken', info);
    if (!TOKEN_RE.test(token)) return this.fail(ex, 400, 'BadDeviceToken', info);

    /* Payload. */
    const body = ex.body;
    if (!body || body.length === 0) return this.fail(ex, 400, 'PayloadEmpty', info);
    const limit = type === 'voip' ? 5120 : 4096;
    if (body.length > limit || ex.truncated) return this.fail(ex, 413, 'PayloadTooLarge', info);
    let payload;
    try {
      payload = JSON.parse(body);
    } catch (e) {
      info.problem = 'payload is not JSON';
      return this.fail(ex, 400, 'BadPayload', info);
    }
    if (payload === null || typeof payload !== 'object' || Array.isArray(payload) ||
        payload.aps === null || typeof payload.aps !== 'object' || Array.isArray(payload.aps)) {
      info.problem = 'payload has no "aps" dictionary';
      return this.fail(ex, 400, 'BadPayload', info);
    }
    checkAps(type, payload.aps, problems);
    if (problems.length) info.problems = problems;

    const gone = this.cfg.unregistered[token] ?? this.cfg.unregistered[token.toLowerCase()];
    if (gone !== undefined) {
      info.timestamp = gone;
      return this.fail(ex, 410, 'Unregistered', info);
    }

    const id = apnsId || crypto.randomUUID();
    info.apns_id = id;
    this.reply(ex, 200, { 'apns-id': id }, null, info);
  }

  /*
   * A new provider token on a connection: count it, flag refreshes sooner
   * than the window, and say whether to refuse it (429).
   */
  tokenUpdate(conn, jwt, info) {
    const now = Date.now();
    const windowMs = this.cfg.token_update_window_s * 1000;
    this.stats.distinct_provider_tokens++;
    let recent = 1;
    let refused = false;
    if (conn.tokens.size > 0) {
      this.stats.token_updates++;
      for (const seen of conn.tokens.values()) if (now - seen < windowMs) recent++;
      if (recent > 1) {
        this.stats.token_update_violations++;
        info.violation = info.violation ? info.violation + ',token_update' : 'token_update';
      }
      refused = this.cfg.max_token_updates > 0 && recent > this.cfg.max_token_updates;
    }
    if (!refused) conn.tokens.set(jwt, now);
    return refused;
  }

  /* Signature, alg, kid and iss of a provider token (cached); iat is checked by the caller. */
  verifyToken(jwt) {
    const hit = this.jwtCache.get(jwt);
    if (hit) return hit;
    let r;
    try {
      const p = parseJwt(jwt);
      const iat = p.claims.iat;
      if (p.header.alg !== 'ES256') r = { reason: 'InvalidProviderToken', problem: `alg ${p.header.alg}, expected ES256` };
      else if (p.header.kid !== this.cfg.key_id) r = { reason: 'InvalidProviderToken', problem: `kid ${p.header.kid}, expected ${this.cfg.key_id}` };
      else if (!verifyJwt(p, 'ES256', this.publicKey)) r = { reason: 'InvalidProviderToken', problem: 'bad signature' };
      else if (p.claims.iss !== this.cfg.team_id) r = { reason: 'InvalidProviderToken', problem: `iss ${p.claims.iss}, expected ${this.cfg.team_id}` };
      else if (!Number.isInteger(iat)) r = { reason: 'InvalidProviderToken', problem: 'iat is not an integer' };
      else r = { kid: p.header.kid, iss: p.claims.iss, iat };
    } catch (e) {
      r = { reason: 'InvalidProviderToken', problem: e.message };
    }
    if (this.jwtCache.size >= JWT_CACHE_MAX) this.jwtCache.clear();
    this.jwtCache.set(jwt, r);
    return r;
  }
}

/* Things Apple accepts but that are probably mistakes: logged, not refused. */
function checkAps(type, aps, problems) {
  if (type === 'background') {
    if (aps['content-available'] !== 1) problems.push('background push without aps.content-available = 1');
    if (aps.alert !== undefined || aps.sound !== undefined || aps.badge !== undefined) {
      problems.push('background push with alert/sound/badge');
    }
  } else if (type === 'alert') {
    if (aps.alert === undefined && aps.sound === undefined && aps.badge === undefined) {
      problems.push('alert push without aps.alert, sound or badge');
    }
  }
  if (aps.badge !== undefined && !Number.isInteger(aps.badge)) problems.push('aps.badge is not an integer');
  if (aps['content-available'] !== undefined && aps['content-available'] !== 1) problems.push('aps.content-available must be 1');
  if (aps['mutable-content'] !== undefined && aps['mutable-content'] !== 1) problems.push('aps.mutable-content must be 1');
}

module.exports = { ApnsSim };
