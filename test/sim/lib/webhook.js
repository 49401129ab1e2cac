'use strict';
/*
 * webhook.js -- the generic webhook receiver, and the benchmark target.
 *
 * Three listeners share one handler: plain HTTP/1.1 (webhook_http), TLS
 * with ALPN h2 + http/1.1 (webhook_https) and h2c prior knowledge
 * (webhook_h2c).  Any path accepts POST and answers 200
 * {"ok":true,"id":"<n>"}.
 *
 * When a secret is configured every request must carry
 *   X-Notify-Signature: t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>
 * (several v1= entries allowed, any may match; t within
 * signature_tolerance_s of now), else 401.
 *
 * Counters (always on): per path, per listener, distinct and duplicate
 * X-Notify-Id values.  Per-request log entries can be switched off
 * (log_requests=false, or --no-log-bodies) for benchmarks.
 */

const crypto = require('node:crypto');
const { HttpSim, startListener } = require('./http');
const { newStats } = require('./core');

const MAX_PATHS = 1000;
const MAX_IDS = 5000000;
const OK_HEADERS = { 'content-type': 'application/json' };

class WebhookSim extends HttpSim {
  constructor(core) {
    super(core, 'webhook', {
      secret: null,                 /* HMAC secret; null = signatures not checked */
      signature_tolerance_s: 300,   /* |now - t| allowed */
      log_requests: true,           /* per-request log entries */
    });
    this.nextId = 0;
    this.seenIds = new Set();
  }

  freshStats() {
    return newStats({ paths: {}, listeners: { http: 0, https_h1: 0, https_h2: 0, h2c: 0 },
                      distinct_ids: 0, duplicate_ids: 0, signature_failures: 0 });
  }

  reset() {
    super.reset();
    this.seenIds = new Set();
  }

  async start(ports) {
    const opts = { keys: this.core.keys };
    const a = await startListener('h1', ports.webhook_http ?? 0, this.handle, opts);
    const b = await startListener('tls', ports.webhook_https ?? 0, this.handle, opts);
    const c = await startListener('h2c', ports.webhook_h2c ?? 0, this.handle, opts);
    this.servers = [...a.servers, ...b.servers, ...c.servers];
    return { webhook_http: a.port, webhook_https: b.port, webhook_h2c: c.port };
  }

  faultKeys(ex) {
    return [ex.path, ex.headers['x-notify-id']];
  }

  faultBody(status) {
    return { ok: false, error: `simulated ${status}` };
  }

  process(ex) {
    const st = this.stats;
    const l = st.listeners;
    if (ex.proto === 'h1') { if (ex.conn?.tls) l.https_h1++; else l.http++; } else if (ex.conn?.tls) l.https_h2++; else l.h2c++;

    const paths = st.paths;
    if (paths[ex.path] !== undefined) paths[ex.path]++;
    else if (Object.keys(paths).length < MAX_PATHS) paths[ex.path] = 1;
    else paths['(other)'] = (paths['(other)'] || 0) + 1;

    if (ex.method !== 'POST') {
      this.json(ex, 405, { ok: false, error: 'method not allowed: use POST' }, null, { allow: 'POST' });
      return;
    }

    const info = {};
    const notifyId = ex.headers['x-notify-id'];
    if (notifyId !== undefined) {
      if (this.seenIds.has(notifyId)) {
        st.duplicate_ids++;
        info.duplicate_id = true;
      } else {
        st.distinct_ids++;
        if (this.seenIds.size < MAX_IDS) this.seenIds.add(notifyId);
      }
    }

    if (this.cfg.secret !== null) {
      const why = this.checkSignature(ex);
      if (why) {
        st.signature_failures++;
        info.signature = why;
        this.json(ex, 401, { ok: false, error: why }, info);
        return;
      }
      info.signature = 'valid';
    }

    const id = String(++this.nextId);
    info.id = id;
    this.reply(ex, 200, OK_HEADERS, '{"ok":true,"id":"' + id + '"}', info);
  }

  /* null when the signature is good, else what is wrong with it. */
  checkSignature(ex) {
    const header = ex.headers['x-notify-signature'];
    if (header === undefined) return 'missing x-notify-signature';
    let t = null;
    const sigs = [];
    for (const part of String(header).split(',')) {
      const eq = part.indexOf('=');
      if (eq < 0) continue;
      const k = part.slice(0, eq).trim();
      const v = part.slice(eq + 1).trim();
      if (k === 't') t = v; else if (k === 'v1') sigs.push(v);
    }
    if (t === null || !/^\d+$/.test(t)) return 'signature has no t=<unix seconds>';
    if (sigs.length === 0) return 'signature has no v1=';
    const age = Math.abs(Date.now() / 1000 - Number(t));
    if (age > this.cfg.signature_tolerance_s) return `signature timestamp off by ${Math.round(age)} s`;
    const ts = ex.headers['x-notify-timestamp'];
    if (ts !== undefined && ts !== t) return 'x-notify-timestamp differs from t= in the signature';
    const mac = crypto.createHmac('sha256', this.cfg.secret);
    mac.update(t + '.');
    if (ex.body) mac.update(ex.body);
    const want = mac.digest();
    for (const s of sigs) {
      if (/^[0-9a-f]{64}$/.test(s) && crypto.timingSafeEqual(Buffer.from(s, 'hex'), want)) return null;
    }
    return 'signature mismatch';
  }
}

module.exports = { WebhookSim };
