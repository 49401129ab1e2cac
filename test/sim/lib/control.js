'use strict';
/*
 * control.js -- the control API: plain HTTP/1.1 + JSON on 127.0.0.1, used
 * by tests to read what the simulators received and to steer them.
 *
 *   GET    /health                     {"ok":true}
 *   GET    /state                      same content as the --state file
 *   GET    /stats                      counters per simulator
 *   GET    /log?sim=&since=&limit=&tail=&event=
 *                                      {"entries":[...],"last_seq":N}
 *   GET    /config                     current settings per simulator
 *   POST   /config                     {"<sim>":{setting: value, ...}, ...}
 *   GET    /faults                     the fault rules (with hits/remaining)
 *   POST   /faults                     one rule or an array -> {"ids":[...]}
 *   DELETE /faults                     remove all rules
 *   DELETE /faults/<id>                remove one rule
 *   POST   /reset                      clear log, counters, faults, settings
 *   POST   /webpush/subscribe          create a push subscription (as POST
 *                                      /subscribe on the push service)
 *   POST   /shutdown                   exit (as SIGTERM)
 *
 * Log entries are returned as stored, plus "json" (the body parsed) when
 * the body is JSON; parsing happens here, not on the request path.
 */

const http = require('node:http');

function send(res, status, obj) {
  const body = JSON.stringify(obj);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
  res.end(body);
}

function withJson(entry) {
  if (typeof entry.body !== 'string' || entry.body === '' || entry.json !== undefined) return entry;
  const c = entry.body[0];
  if (c !== '{' && c !== '[') return entry;
  try {
    return { ...entry, json: JSON.parse(entry.body) };
  } catch (e) {
    return entry;
  }
}

function readJson(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      const text = Buffer.concat(chunks).toString('utf8').trim();
      if (text === '') return resolve(null);
      try {
        resolve(JSON.parse(text));
      } catch (e) {
        reject(new Error(`body is not JSON: ${e.message}`));
      }
    });
    req.on('error', reject);
  });
}

function statsOf(core) {
  const sims = {};
  for (const [name, sim] of Object.entries(core.sims)) sims[name] = sim.stats;
  return {
    sims, log: { last_seq: core.log.seq, entries: core.log.entries.length },
    faults: core.faults.rules.length, internal_errors: core.internalErrors,
    uptime_ms: Date.now() - core.startedAt,
  };
}

async function route(core, req, res, shutdown) {
  const url = new URL(req.url, 'http://control');
  const path = url.pathname.replace(/\/+$/, '') || '/';
  const q = url.searchParams;
  const m = req.method;

  if (path === '/health') return send(res, 200, { ok: true });
  if (path === '/state' && m === 'GET') return send(res, 200, core.state);
  if (path === '/stats' && m === 'GET') return send(res, 200, statsOf(core));

  if (path === '/log' && m === 'GET') {
    const sim = q.get('sim');
    const event = q.get('event');
    const entries = core.log.query({
      since: Number(q.get('since') || 0), sim, limit: Number(q.get('limit') || 1000),
      tail: Number(q.get('tail') || 0), filter: event ? (e) => e.event === event : null,
    });
    return send(res, 200, { entries: entries.map(withJson), last_seq: core.log.seq });
  }

  if (path === '/config') {
    if (m === 'GET') {
      const out = {};
      for (const [name, sim] of Object.entries(core.sims)) out[name] = sim.cfg;
      return send(res, 200, out);
    }
    if (m === 'POST') {
      const body = await readJson(req);
      if (body === null || typeof body !== 'object' || Array.isArray(body)) throw new Error('POST /config takes {"<sim>": {...}}');
      for (const name of Object.keys(body)) {
        if (!core.sims[name]) throw new Error(`no simulator "${name}" running (running: ${Object.keys(core.sims).join(', ')})`);
      }
      for (const [name, patch] of Object.entries(body)) core.sims[name].configure(patch);
      const out = {};
      for (const name of Object.keys(body)) out[name] = core.sims[name].cfg;
      return send(res, 200, out);
    }
  }

  if (path === '/faults') {
    if (m === 'GET') return send(res, 200, { faults: core.faults.rules });
    if (m === 'POST') {
      const body = await readJson(req);
      const specs = Array.isArray(body) ? body : [body];
      const ids = specs.map((s) => core.faults.add(s).id);
      return send(res, 200, { ids });
    }
    if (m === 'DELETE') {
      core.faults.clear();
      return send(res, 200, { ok: true });
    }
  }
  const fm = /^\/faults\/(\d+)$/.exec(path);
  if (fm && m === 'DELETE') {
    const ok = core.faults.remove(Number(fm[1]));
    return send(res, ok ? 200 : 404, { ok });
  }

  if (path === '/reset' && m === 'POST') {
    core.log.clear();
    core.faults.clear();
    core.internalErrors = 0;
    for (const sim of Object.values(core.sims)) sim.reset();
    return send(res, 200, { ok: true, last_seq: core.log.seq });
  }

  if (path === '/webpush/subscribe' && m === 'POST') {
    if (!core.sims.webpush) throw new Error('webpush simulator is not running');
    const body = await readJson(req);
    return send(res, 201, core.sims.webpush.createSubscription(body || {}));
  }

  if (path === '/shutdown' && m === 'POST') {
    send(res, 200, { ok: true });
    setImmediate(shutdown);
    return undefined;
  }
  return send(res, 404, { error: `no route ${m} ${path}` });
}

function startControl(core, port, shutdown) {
  const server = http.createServer((req, res) => {
    route(core, req, res, shutdown).catch((e) => send(res, 400, { error: e.message }));
  });
  server.keepAliveTimeout = 65000;
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => resolve({ server, port: server.address().port }));
  });
}

module.exports = { startControl };
