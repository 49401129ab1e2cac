'use strict';
/*
 * core.js -- process-wide state shared by every simulator:
 *   RequestLog  the request log: an in-memory ring (served by the control
 *               API) plus an optional JSON-lines file, written in batches
 *               so that logging never does synchronous I/O per request;
 *   Faults      the fault rules set through the control API and the lookup
 *               each simulator does before answering;
 *   Core        holds the above, the per-simulator counters and settings,
 *               and the TLS material loaded from the keys directory.
 *
 * Sequence numbers of log entries only ever grow (also across /reset), so
 * "give me what happened since seq N" stays valid for a test.
 */

const fs = require('node:fs');

class RequestLog {
  constructor({ file = null, max = 50000 } = {}) {
    this.seq = 0;
    this.entries = [];
    this.max = max;
    this.pending = [];
    this.flushScheduled = false;
    this.stream = file ? fs.createWriteStream(file, { flags: 'a' }) : null;
    this.stream?.on('error', (e) => process.stderr.write(`sim: log file: ${e.message}\n`));
  }

  /* Record one entry; seq and ts are added here.  Returns the seq. */
  add(entry) {
    entry.seq = ++this.seq;
    entry.ts = Date.now();
    this.entries.push(entry);
    if (this.entries.length > this.max * 1.25) {
      this.entries.splice(0, this.entries.length - this.max);
    }
    if (this.stream) {
      this.pending.push(JSON.stringify(entry));
      if (!this.flushScheduled) {
        this.flushScheduled = true;
        setImmediate(() => this.flush());
      }
    }
    return entry.seq;
  }

  flush() {
    this.flushScheduled = false;
    if (!this.stream || this.pending.length === 0) return;
    this.stream.write(this.pending.join('\n') + '\n');
    this.pending = [];
  }

  /* On exit: whatever is still queued goes out synchronously. */
  flushSync(file) {
    if (!this.stream) return;
    const queued = this.pending.length ? this.pending.join('\n') + '\n' : '';
    this.pending = [];
    this.stream.end();
    if (queued) fs.appendFileSync(file, queued);
  }

  /* Entries with seq > since, optionally of one sim, at most limit (oldest first). */
  query({ since = 0, sim = null, limit = 1000, tail = 0, filter = null } = {}) {
    const e = this.entries;
    let lo = 0;
    let hi = e.length;
    while (lo < hi) {                      /* first entry with seq > since */
      const mid = (lo + hi) >> 1;
      if (e[mid].seq > since) hi = mid; else lo = mid + 1;
    }
    const out = [];
    for (let i = lo; i < e.length; i++) {
      if (sim && e[i].sim !== sim) continue;
      if (filter && !filter(e[i])) continue;
      out.push(e[i]);
    }
    if (tail > 0) return out.slice(-tail);
    return out.slice(0, limit);
  }

  clear() {
    this.entries = [];
  }
}

/*
 * A fault rule, as posted to the control API:
 *   sim       which simulator ("apns", ...; "*" = all)
 *   match     substring of the path, device token, phone number, address...
 *             (whatever the simulator offers as match keys); absent = all
 *   stage     SMTP only: connect|ehlo|starttls|auth|mail|rcpt|data
 *   status    HTTP status to answer (code is the SMTP equivalent)
 *   code, message   SMTP reply code and text
 *   body      object (sent as JSON) or string (sent raw); absent = the
 *             simulator's realistic error body for that status
 *   headers   extra response headers
 *   delay_ms  wait before answering (alone: answer normally, late)
 *   drop      true: reset the stream / close the socket without answer;
 *             "connection": also kill the whole HTTP/2 connection
 *   goaway    HTTP/2: send GOAWAY (with JSON {"reason": goaway} when it is
 *             a string) after answering
 *   count     how many requests to affect (default: unlimited)
 */
const FAULT_KEYS = new Set(['sim', 'match', 'stage', 'status', 'code', 'message', 'body', 'headers',
                            'delay_ms', 'drop', 'goaway', 'count']);

class Faults {
  constructor(simNames) {
    this.simNames = simNames;
    this.rules = [];
    this.nextId = 1;
    this.live = 0;            /* rules with count left: fast path when 0 */
  }

  add(spec) {
    if (spec === null || typeof spec !== 'object' || Array.isArray(spec)) {
      throw new Error('a fault must be a JSON object');
    }
    for (const k of Object.keys(spec)) {
      if (!FAULT_KEYS.has(k)) throw new Error(`unknown fault field "${k}"`);
    }
    if (!spec.sim || (spec.sim !== '*' && !this.simNames.includes(spec.sim))) {
      throw new Error(`fault needs "sim": one of ${this.simNames.join(', ')} or "*"`);
    }
    if (spec.count !== undefined && !(Number.isInteger(spec.count) && spec.count > 0)) {
      throw new Error('"count" must be a positive integer');
    }
    const status = spec.status ?? spec.code;
    if (status !== undefined && !(Number.isInteger(status) && status >= 100 && status <= 599)) {
      throw new Error('"status"/"code" must be an integer 100..599');
    }
    if (spec.delay_ms !== undefined && !(Number.isFinite(spec.delay_ms) && spec.delay_ms >= 0)) {
      throw new Error('"delay_ms" must be a non-negative number');
    }
    if (status === undefined && !spec.drop && !spec.delay_ms && !spec.goaway) {
      throw new Error('fault does nothing: give status/code, drop, goaway or delay_ms');
    }
    const rule = { id: this.nextId++, ...spec, remaining: spec.count ?? null, hits: 0 };
    this.rules.push(rule);
    this.recount();
    return rule;
  }

  remove(id) {
    const n = this.rules.length;
    this.rules = this.rules.filter((r) => r.id !== id);
    this.recount();
    return this.rules.length !== n;
  }

  clear() {
    this.rules = [];
    this.live = 0;
  }

  recount() {
    this.live = this.rules.filter((r) => r.remaining === null || r.remaining > 0).length;
  }

  /*
   * The first live rule for this sim (and SMTP stage) whose match is a
   * substring of one of keys; consumes one of its count.  null if none.
   */
  take(sim, keys, stage = null) {
    if (this.live === 0) return null;
    for (const r of this.rules) {
      if (r.sim !== sim && r.sim !== '*') continue;
      if (r.remaining !== null && r.remaining <= 0) continue;
      if (stage !== null ? (r.stage || 'data') !== stage : r.stage) continue;
      if (r.match !== undefined && r.match !== '') {
        let hit = false;
        for (const k of keys) {
          if (k && k.includes(r.match)) { hit = true; break; }
        }
        if (!hit) continue;
      }
      if (r.remaining !== null && --r.remaining === 0) this.recount();
      r.hits++;
      return r;
    }
    return null;
  }
}

class Core {
  constructor({ keys, logFile, logMax, quiet, simNames }) {
    this.keys = keys;            /* { dir, ca, cert, key, ... } loaded material */
    this.log = new RequestLog({ file: logFile, max: logMax });
    this.logFile = logFile;
    this.faults = new Faults(simNames);
    this.quiet = quiet;
    this.sims = {};              /* name -> simulator object */
    this.ports = {};             /* port name -> number */
    this.startedAt = Date.now();
    this.internalErrors = 0;
  }

  info(msg) {
    if (!this.quiet) process.stdout.write(`sim: ${msg}\n`);
  }
}

/*
 * Merge a settings patch (from POST /config) into sim.cfg.  A key must exist
 * in sim.defaults (or be an action the sim handles in configAction) and
 * keep the type of its default; sim.normalize(key, value) may convert.
 */
function applyConfig(sim, patch) {
  if (patch === null || typeof patch !== 'object' || Array.isArray(patch)) {
    throw new Error(`${sim.name}: settings must be a JSON object`);
  }
  for (const [k, v] of Object.entries(patch)) {
    if (sim.configAction && sim.configAction(k, v)) continue;
    if (!Object.prototype.hasOwnProperty.call(sim.defaults, k)) {
      throw new Error(`${sim.name}: unknown setting "${k}" (known: ${Object.keys(sim.defaults).join(', ')})`);
    }
    const d = sim.defaults[k];
    const ok = d === null ? (v === null || typeof v === 'string')
      : Array.isArray(d) ? Array.isArray(v)
        : typeof d === 'object' ? (v !== null && typeof v === 'object')
          : typeof v === typeof d;
    if (!ok) throw new Error(`${sim.name}: setting "${k}" has the wrong type`);
    sim.cfg[k] = sim.normalize ? sim.normalize(k, v) : v;
  }
}

/* A fresh counters object: requests, answers by status, plus extra fields. */
function newStats(extra = {}) {
  return { requests: 0, status: {}, ...extra };
}

module.exports = { Core, RequestLog, Faults, newStats, applyConfig };
