'use strict';
/*
 * smtp.js -- an SMTP submission server (RFC 5321, ESMTP) for the email
 * channel.  Two listeners:
 *   smtp   plaintext, STARTTLS advertised (RFC 3207); AUTH is offered and
 *          accepted only after TLS (530 before), and MAIL needs AUTH;
 *   smtps  implicit TLS (RFC 8314).
 * Commands: EHLO, HELO, STARTTLS, AUTH PLAIN / LOGIN (with or without an
 * initial response), MAIL FROM (SIZE, BODY, SMTPUTF8), RCPT TO, DATA (dot
 * unstuffing), RSET, NOOP, VRFY, QUIT; pipelining; any number of messages
 * per connection.
 * Recipients configured as bouncing get 550 5.1.1; greylisted ones get
 * 451 4.7.1 on their first greylist_attempts tries, then are accepted.
 * Fault rules apply per stage (connect, ehlo, starttls, auth, mail, rcpt,
 * data) with an SMTP reply code.
 *
 * Every accepted message is logged with its envelope, connection id (to
 * assert connection reuse), TLS and AUTH use, parsed headers, decoded MIME
 * parts and a "problems" list (missing Date/Message-ID/From/To/Subject/
 * MIME-Version, raw 8-bit headers, List-Unsubscribe without one-click,
 * ...): problems are reported, not refused.
 */

const net = require('node:net');
const tls = require('node:tls');
const crypto = require('node:crypto');
const { newStats, applyConfig } = require('./core');

const HOSTNAME = 'smtp.sim.localhost';
const MAX_LINE = 4096;
const LOG_RAW_MAX = 256 * 1024;
const IDLE_MS = 300000;
const REQUIRED_HEADERS = ['date', 'message-id', 'from', 'to', 'subject', 'mime-version'];
const SINGLE_HEADERS = ['date', 'message-id', 'from', 'to', 'subject', 'mime-version', 'reply-to', 'sender', 'cc'];

const DEFAULT_TEXT = {
  421: '4.3.2 Service not available, closing transmission channel',
  450: '4.2.1 Mailbox unavailable, try again later',
  451: '4.3.0 Local error in processing, try again later',
  452: '4.3.1 Insufficient system storage',
  454: '4.7.0 TLS not available due to temporary reason',
  530: '5.7.0 Authentication required',
  535: '5.7.8 Authentication credentials invalid',
  550: '5.1.1 Mailbox unavailable',
  552: '5.3.4 Message size exceeds fixed maximum message size',
  553: '5.1.3 Mailbox name not allowed',
  554: '5.6.0 Transaction failed',
};
let connSeq = 0;

class SmtpSim {
  constructor(core) {
    this.core = core;
    this.name = 'smtp';
    this.defaults = {
      username: 'notify',
      password: 'secret-pass',
      require_tls: true,       /* AUTH and MAIL need TLS on the plaintext port */
      require_auth: true,      /* MAIL needs AUTH */
      bouncing: [],            /* RCPT -> 550 5.1.1 */
      greylisted: [],          /* RCPT -> 451 4.7.1 for the first greylist_attempts tries */
      greylist_attempts: 1,
      max_size: 10 * 1024 * 1024,
      log_requests: true,
      log_raw: true,           /* include the raw message (capped) in the log */
    };
    this.cfg = structuredClone(this.defaults);
    this.stats = this.freshStats();
    this.greylist = new Map();   /* address -> deferrals so far */
    this.secureContext = tls.createSecureContext({ key: core.keys.serverKey, cert: core.keys.serverCert,
                                                   minVersion: 'TLSv1.2' });
  }

  freshStats() {
    return newStats({ connections: 0, starttls: 0, auth_ok: 0, auth_failed: 0, messages: 0,
                      replies: {}, rejected: 0 });
  }

  configure(patch) {
    applyConfig(this, patch);
  }

  normalize(k, v) {
    if (k === 'bouncing' || k === 'greylisted') return v.map((a) => String(a).toLowerCase());
    return v;
  }

  reset() {
    this.cfg = structuredClone(this.defaults);
    this.stats = this.freshStats();
    this.greylist.clear();
  }

  async start(ports) {
    const plain = net.createServer((s) => new SmtpSession(this, s, 'smtp', false));
    const implicit = tls.createServer({ key: this.core.keys.serverKey, cert: this.core.keys.serverCert,
                                        minVersion: 'TLSv1.2' },
                                      (s) => new SmtpSession(this, s, 'smtps', true));
    implicit.on('tlsClientError', () => {});
    this.servers = [plain, implicit];
    return { smtp: await listen(plain, ports.smtp ?? 0), smtps: await listen(implicit, ports.smtps ?? 0) };
  }

  log(entry) {
    if (this.cfg.log_requests !== false) this.core.log.add({ sim: 'smtp', ...entry });
  }
}

function listen(server, port) {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => resolve(server.address().port));
  });
}

class SmtpSession {
  constructor(sim, socket, port, implicitTls) {
    this.sim = sim;
    this.id = ++connSeq;
    this.port = port;
    this.socket = socket;
    this.tls = implicitTls;
    this.starttls = false;
    this.buf = '';
    this.mode = 'cmd';            /* cmd | data | auth */
    this.busy = false;            /* waiting on a delayed reply */
    this.closed = false;
    this.upgrading = false;
    this.helo = null;
    this.authUser = null;
    this.auth = null;             /* AUTH exchange in progress */
    this.messages = 0;
    this.resetTransaction();
    sim.stats.connections++;
    sim.log({ event: 'connect', conn: this.id, port, tls: this.tls });
    this.attach(socket);
    socket.setTimeout(IDLE_MS, () => {
      this.reply(421, '4.4.2 Idle timeout, closing connection');
      this.close();
    });
    socket.on('close', () => {
      this.closed = true;
      sim.log({ event: 'close', conn: this.id, messages: this.messages });
    });
    this.stage('connect', [], () => this.reply(220, `${HOSTNAME} ESMTP notify simulator ready`));
  }

  attach(socket) {
    socket.on('data', (chunk) => {
      if (this.upgrading || this.closed) return;
      this.buf += chunk.toString('latin1');
      this.pump();
    });
    socket.on('error', () => {});
  }

  resetTransaction() {
    this.mail = null;
    this.rcpts = [];
  }

  /* ---- output ---- */

  reply(code, text, command) {
    if (this.closed || this.socket.destroyed) return;
    const lines = Array.isArray(text) ? text : [text];
    let out = '';
    for (let i = 0; i < lines.length; i++) out += `${code}${i < lines.length - 1 ? '-' : ' '}${lines[i]}\r\n`;
    this.socket.write(out);
    const r = this.sim.stats.replies;
    r[code] = (r[code] || 0) + 1;
    if (code >= 400) {
      this.sim.stats.rejected++;
      this.sim.log({ event: 'reply', conn: this.id, command: command ?? this.lastCommand, code, text: lines.join(' ') });
    }
  }

  close() {
    this.closed = true;
    this.socket.end();
  }

  /*
   * Run a protocol stage through the fault rules: a matching rule may
   * delay, drop the connection, or answer its own code instead of
   * proceed().
   */
  stage(name, keys, proceed) {
    const faults = this.sim.core.faults;
    const rule = faults.live ? faults.take('smtp', keys, name) : null;
    if (!rule) return proceed();
    const act = () => {
      if (this.closed) return;
      if (rule.drop) {
        this.sim.log({ event: 'drop', conn: this.id, stage: name, fault: rule.id });
        this.closed = true;
        this.socket.destroy();
        return;
      }
      const code = rule.code ?? rule.status;
      if (code === undefined || code < 400) return proceed();
      this.reply(code, rule.message || DEFAULT_TEXT[code] || `${code >= 500 ? 5 : 4}.0.0 Simulated failure`);
      if (code === 421 || name === 'connect') this.close();
    };
    if (rule.delay_ms) {
      this.busy = true;
      setTimeout(() => {
        this.busy = false;
        act();
        this.pump();
      }, rule.delay_ms);
    } else {
      act();
    }
  }

  /* ---- input ---- */

  pump() {
    while (!this.busy && !this.closed && !this.upgrading) {
      if (this.mode === 'data') {
        if (!this.pumpData()) return;
        continue;
      }
      const nl = this.buf.indexOf('\n');
      if (nl < 0) {
        if (this.buf.length > MAX_LINE) {
          this.buf = '';
          this.reply(500, '5.5.2 Line too long');
        }
        return;
      }
      let line = this.buf.slice(0, nl);
      this.buf = this.buf.slice(nl + 1);
      if (line.endsWith('\r')) line = line.slice(0, -1);
      if (this.mode === 'auth') this.authStep(line);
      else this.command(line);
    }
  }

  /*
   * Collect DATA up to CRLF.CRLF; true when the message ended (and was
   * handled).  Chunks are kept in a list and only the new chunk (plus the
   * last 4 characters before it) is searched, so a big message costs O(n).
   * dataTail starts as the CRLF that precedes a "." on the very first line.
   */
  pumpData() {
    const chunk = this.buf;
    this.buf = '';
    const tail = this.dataTail;
    const probe = tail + chunk;
    const end = probe.indexOf('\r\n.\r\n');
    if (end < 0) {
      if (this.dataSize <= this.sim.cfg.max_size) this.dataParts.push(chunk);
      this.dataSize += chunk.length;
      this.dataTail = probe.slice(-4);
      return false;
    }
    /* Content ends after the CRLF before ".": at end + 2 in probe, i.e. cut in chunk. */
    const cut = end + 2 - tail.length;
    let body = this.dataParts.join('');
    if (cut >= 0) body += chunk.slice(0, cut); else body = body.slice(0, body.length + cut);
    const size = this.dataSize + cut;
    this.buf = probe.slice(end + 5);
    this.dataParts = [];
    this.mode = 'cmd';
    const raw = ('\r\n' + body).replace(/\r\n\./g, '\r\n').slice(2);    /* dot-unstuffing */
    this.endOfData(raw, size);
    return true;
  }

  command(line) {
    const sp = line.indexOf(' ');
    const verb = (sp < 0 ? line : line.slice(0, sp)).toUpperCase();
    const arg = sp < 0 ? '' : line.slice(sp + 1).trim();
    this.lastCommand = verb === 'AUTH' ? `AUTH ${arg.split(' ')[0]}` : line.slice(0, 200);
    switch (verb) {
      case 'EHLO': case 'HELO': return this.cmdHelo(verb, arg);
      case 'STARTTLS': return this.cmdStarttls(arg);
      case 'AUTH': return this.cmdAuth(arg);
      case 'MAIL': return this.cmdMail(arg);
      case 'RCPT': return this.cmdRcpt(arg);
      case 'DATA': return this.cmdData(arg);
      case 'RSET': this.resetTransaction(); return this.reply(250, '2.0.0 OK');
      case 'NOOP': return this.reply(250, '2.0.0 OK');
      case 'VRFY': return this.reply(252, '2.5.2 Cannot VRFY user, but will accept message and attempt delivery');
      case 'QUIT':
        this.reply(221, '2.0.0 Bye');
        return this.close();
      case '': return this.reply(500, '5.5.2 Syntax error, command unrecognized');
      default: return this.reply(502, '5.5.1 Command not implemented');
    }
  }

  cmdHelo(verb, arg) {
    if (!arg) return this.reply(501, `5.5.4 Syntax: ${verb} hostname`);
    this.stage('ehlo', [arg], () => {
      this.helo = arg;
      this.esmtp = verb === 'EHLO';
      this.resetTransaction();
      if (!this.esmtp) return this.reply(250, `${HOSTNAME} Hello ${arg}`);
      const ext = [`${HOSTNAME} Hello ${arg}`, `SIZE ${this.sim.cfg.max_size}`, '8BITMIME', 'PIPELINING',
                   'ENHANCEDSTATUSCODES', 'SMTPUTF8'];
      if (!this.tls) ext.push('STARTTLS');
      if (this.tls || !this.sim.cfg.require_tls) ext.push('AUTH PLAIN LOGIN');
      this.reply(250, ext);
    });
  }

  cmdStarttls(arg) {
    if (arg) return this.reply(501, '5.5.4 Syntax error (no parameters allowed)');
    if (this.tls) return this.reply(503, '5.5.1 TLS already active');
    if (this.port !== 'smtp') return this.reply(502, '5.5.1 Command not implemented');
    this.stage('starttls', [], () => {
      this.reply(220, '2.0.0 Ready to start TLS');
      this.upgrading = true;
      this.buf = '';                          /* RFC 3207: discard pipelined plaintext */
      const raw = this.socket;
      raw.removeAllListeners('data');
      raw.setTimeout(0);
      setImmediate(() => {
        const secure = new tls.TLSSocket(raw, { isServer: true, secureContext: this.sim.secureContext });
        secure.on('secure', () => {
          this.tls = true;
          this.starttls = true;
          this.upgrading = false;
          this.helo = null;                   /* client must EHLO again */
          this.authUser = null;
          this.resetTransaction();
          this.sim.stats.starttls++;
          this.pump();
        });
        secure.on('error', () => raw.destroy());
        secure.setTimeout(IDLE_MS, () => {
          this.reply(421, '4.4.2 Idle timeout, closing connection');
          this.close();
        });
        this.socket = secure;
        this.attach(secure);
      });
    });
  }

  cmdAuth(arg) {
    const [mechRaw, initial] = arg.split(/\s+/, 2);
    const mech = (mechRaw || '').toUpperCase();
    if (!this.helo) return this.reply(503, '5.5.1 EHLO/HELO first');
    if (!this.tls && this.sim.cfg.require_tls) return this.reply(530, '5.7.0 Must issue a STARTTLS command first');
    if (this.authUser !== null) return this.reply(503, '5.5.1 Already authenticated');
    if (this.mail) return this.reply(503, '5.5.1 AUTH not allowed during a mail transaction');
    if (mech !== 'PLAIN' && mech !== 'LOGIN') return this.reply(504, '5.5.4 Unrecognized authentication type');
    this.auth = { mech, user: null };
    if (mech === 'PLAIN') {
      if (initial && initial !== '=') return this.authStep(initial);
      this.mode = 'auth';
      return this.reply(334, '');
    }
    this.mode = 'auth';
    if (initial) return this.authStep(initial);
    return this.reply(334, 'VXNlcm5hbWU6');                /* "Username:" */
  }

  authStep(line) {
    const a = this.auth;
    if (line === '*') {
      this.mode = 'cmd';
      this.auth = null;
      return this.reply(501, '5.7.0 Authentication aborted');
    }
    if (!/^[A-Za-z0-9+/]*={0,2}$/.test(line)) {
      this.mode = 'cmd';
      this.auth = null;
      return this.reply(501, '5.5.2 Cannot decode response');
    }
    const text = Buffer.from(line, 'base64').toString('utf8');
    let user;
    let pass;
    if (a.mech === 'PLAIN') {
      const parts = text.split('\0');
      if (parts.length !== 3) {
        this.mode = 'cmd';
        this.auth = null;
        return this.reply(501, '5.5.2 Malformed AUTH PLAIN response');
      }
      [, user, pass] = parts;
    } else if (a.user === null) {
      a.user = text;
      this.mode = 'auth';
      return this.reply(334, 'UGFzc3dvcmQ6');              /* "Password:" */
    } else {
      user = a.user;
      pass = text;
    }
    this.mode = 'cmd';
    this.auth = null;
    this.stage('auth', [user], () => {
      const ok = user === this.sim.cfg.username && pass === this.sim.cfg.password;
      this.sim.log({ event: 'auth', conn: this.id, mech: a.mech, user, ok });
      if (!ok) {
        this.sim.stats.auth_failed++;
        return this.reply(535, '5.7.8 Authentication credentials invalid', `AUTH ${a.mech}`);
      }
      this.sim.stats.auth_ok++;
      this.authUser = user;
      this.authMech = a.mech;
      this.reply(235, '2.7.0 Authentication successful');
    });
  }

  cmdMail(arg) {
    if (!this.helo) return this.reply(503, '5.5.1 EHLO/HELO first');
    if (!this.tls && this.sim.cfg.require_tls) return this.reply(530, '5.7.0 Must issue a STARTTLS command first');
    if (this.authUser === null && this.sim.cfg.require_auth) return this.reply(530, '5.7.0 Authentication required');
    if (this.mail) return this.reply(503, '5.5.1 Sender already specified');
    const m = /^FROM:\s*<([^<>]*)>\s*(.*)$/i.exec(arg);
    if (!m) return this.reply(501, '5.1.7 Bad sender address syntax');
    const from = m[1];
    const params = parseParams(m[2]);
    if (params === null) return this.reply(501, '5.5.4 Bad MAIL parameters');
    if (params.SIZE !== undefined && Number(params.SIZE) > this.sim.cfg.max_size) {
      return this.reply(552, '5.3.4 Message size exceeds fixed maximum message size');
    }
    if (from !== '' && !/^[^\s@]+@[^\s@]+$/.test(from)) return this.reply(553, '5.1.7 Bad sender address syntax');
    this.stage('mail', [from], () => {
      this.mail = { from, params };
      this.reply(250, '2.1.0 Sender OK');
    });
  }

  cmdRcpt(arg) {
    if (!this.mail) return this.reply(503, '5.5.1 Need MAIL command');
    const m = /^TO:\s*<([^<>]+)>\s*(.*)$/i.exec(arg);
    if (!m) return this.reply(501, '5.1.3 Bad recipient address syntax');
    const addr = m[1];
    if (!/^[^\s@]+@[^\s@]+$/.test(addr)) return this.reply(553, '5.1.3 Bad recipient address syntax');
    if (this.rcpts.length >= 100) return this.reply(452, '4.5.3 Too many recipients');
    this.stage('rcpt', [addr], () => {
      const lower = addr.toLowerCase();
      const cfg = this.sim.cfg;
      if (cfg.bouncing.includes(lower)) {
        return this.reply(550, `5.1.1 <${addr}>: Recipient address rejected: User unknown in local recipient table`);
      }
      if (cfg.greylisted.includes(lower)) {
        const n = this.sim.greylist.get(lower) || 0;
        if (n < cfg.greylist_attempts) {
          this.sim.greylist.set(lower, n + 1);
          return this.reply(451, `4.7.1 <${addr}>: Recipient address rejected: Greylisted, please try again later`);
        }
      }
      this.rcpts.push(addr);
      this.reply(250, '2.1.5 Recipient OK');
    });
  }

  cmdData(arg) {
    if (arg) return this.reply(501, '5.5.4 Syntax error (no parameters allowed)');
    if (!this.mail) return this.reply(503, '5.5.1 Need MAIL command');
    if (this.rcpts.length === 0) return this.reply(554, '5.5.1 No valid recipients');
    this.mode = 'data';
    this.dataParts = [];
    this.dataTail = '\r\n';         /* the CRLF before a leading "." line */
    this.dataSize = 0;
    this.reply(354, 'End data with <CR><LF>.<CR><LF>');
  }

  endOfData(raw, size) {
    const mail = this.mail;
    const rcpts = this.rcpts;
    this.resetTransaction();            /* whatever the answer, this transaction is over */
    if (size > this.sim.cfg.max_size) {
      return this.reply(552, '5.3.4 Message size exceeds fixed maximum message size', 'DATA');
    }
    const parsed = analyzeMessage(raw, mail.params);
    this.stage('data', [mail.from, ...rcpts, parsed.subject || ''], () => {
      const queueId = crypto.randomBytes(6).toString('hex').toUpperCase();
      this.messages++;
      this.sim.stats.messages++;
      const entry = {
        event: 'message', conn: this.id, port: this.port, tls: this.tls, starttls: this.starttls,
        auth_user: this.authUser, auth_mech: this.authUser ? this.authMech : null, helo: this.helo,
        mail_from: mail.from, mail_params: mail.params, rcpt: rcpts, size, message_index: this.messages,
        queue_id: queueId, status: 250, ...parsed,
      };
      if (this.sim.cfg.log_raw) entry.raw = raw.length > LOG_RAW_MAX ? raw.slice(0, LOG_RAW_MAX) : raw;
      if (entry.raw !== undefined) entry.raw = Buffer.from(entry.raw, 'latin1').toString('utf8');
      this.sim.log(entry);
      this.reply(250, `2.0.0 OK: queued as ${queueId}`);
    });
  }
}

/* "SIZE=123 BODY=8BITMIME SMTPUTF8" -> { SIZE: "123", ... }; null on junk. */
function parseParams(text) {
  const out = {};
  for (const p of text.split(/\s+/).filter(Boolean)) {
    const m = /^([A-Za-z0-9-]+)(?:=(\S+))?$/.exec(p);
    if (!m) return null;
    out[m[1].toUpperCase()] = m[2] ?? true;
  }
  return out;
}

/* ---- message analysis ---- */

/* Parse a header block (latin1 string) into ordered [name, value] pairs. */
function parseHeaderBlock(block) {
  const out = [];
  for (const line of block.split(/\r?\n/)) {
    if (/^[ \t]/.test(line) && out.length) {
      out[out.length - 1][1] += ' ' + line.trim();
    } else if (line.length) {
      const c = line.indexOf(':');
      if (c > 0) out.push([line.slice(0, c).trim().toLowerCase(), line.slice(c + 1).trim()]);
      else out.push(['(malformed)', line]);
    }
  }
  return out;
}

function splitEntity(text) {
  let i = text.indexOf('\r\n\r\n');
  let sep = 4;
  if (i < 0) { i = text.indexOf('\n\n'); sep = 2; }
  if (i < 0) return { head: text, body: '' };
  return { head: text.slice(0, i), body: text.slice(i + sep) };
}

/* "text/plain; charset=utf-8; x="y"" -> { type: "text/plain", params: {...} } */
function parseContentType(value) {
  const parts = (value || 'text/plain').split(';');
  const params = {};
  for (const p of parts.slice(1)) {
    const eq = p.indexOf('=');
    if (eq > 0) params[p.slice(0, eq).trim().toLowerCase()] = p.slice(eq + 1).trim().replace(/^"(.*)"$/, '$1');
  }
  return { type: parts[0].trim().toLowerCase(), params };
}

function latin1ToUtf8(s) {
  return Buffer.from(s, 'latin1').toString('utf8');
}

function decodeBody(body, encoding, charset) {
  let bytes;
  const enc = (encoding || '7bit').toLowerCase();
  if (enc === 'base64') {
    bytes = Buffer.from(body.replace(/[^A-Za-z0-9+/=]/g, ''), 'base64');
  } else if (enc === 'quoted-printable') {
    const s = body.replace(/=\r?\n/g, '').replace(/=([0-9A-Fa-f]{2})/g, (_, h) => String.fromCharCode(parseInt(h, 16)));
    bytes = Buffer.from(s, 'latin1');
  } else {
    bytes = Buffer.from(body, 'latin1');
  }
  const cs = (charset || 'us-ascii').toLowerCase();
  return cs === 'iso-8859-1' || cs === 'latin1' ? bytes.toString('latin1') : bytes.toString('utf8');
}

/* RFC 2047 encoded words -> text. */
function decodeWords(value) {
  return value.replace(/\?=\s+=\?/g, '?==?').replace(/=\?([^?]+)\?([BbQq])\?([^?]*)\?=/g, (all, cs, enc, text) => {
    let bytes;
    if (enc.toUpperCase() === 'B') {
      bytes = Buffer.from(text, 'base64');
    } else {
      bytes = Buffer.from(text.replace(/_/g, ' ').replace(/=([0-9A-Fa-f]{2})/g,
                                                           (_, h) => String.fromCharCode(parseInt(h, 16))), 'latin1');
    }
    return /^(iso-8859-1|latin1)$/i.test(cs) ? bytes.toString('latin1') : bytes.toString('utf8');
  });
}

/* Leaf parts of a MIME entity, depth-first, with decoded text. */
function collectParts(headers, body, path, out, problems, depth) {
  const get = (n) => headers.find(([k]) => k === n)?.[1];
  const ct = parseContentType(get('content-type'));
  const encoding = (get('content-transfer-encoding') || '').toLowerCase();
  if (ct.type.startsWith('multipart/')) {
    const b = ct.params.boundary;
    if (!b) {
      problems.push(`${path || 'message'}: ${ct.type} without boundary`);
      return;
    }
    if (depth > 5) return;
    const container = { path: path || '0', content_type: ct.type, parts: 0 };
    out.push(container);
    const chunks = body.split(new RegExp(`(?:^|\\r?\\n)--${b.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}`));
    if (chunks.length < 3) problems.push(`${path || 'message'}: multipart body has no closing boundary`);
    let n = 0;
    for (const chunk of chunks.slice(1)) {
      if (chunk.startsWith('--')) break;                         /* closing delimiter */
      n++;
      const sub = splitEntity(chunk.replace(/^[ \t]*\r?\n/, ''));
      collectParts(parseHeaderBlock(sub.head), sub.body, path ? `${path}.${n}` : String(n), out, problems, depth + 1);
    }
    container.parts = n;
    return;
  }
  if (/[\x80-\xff]/.test(body) && !['8bit', 'binary', 'base64', 'quoted-printable'].includes(encoding)) {
    problems.push(`${path || 'body'}: 8-bit content without a Content-Transfer-Encoding (use quoted-printable or base64)`);
  }
  const text = decodeBody(body, encoding, ct.params.charset);
  if (ct.type.startsWith('text/') && !ct.params.charset && /[^\x00-\x7f]/.test(text)) {
    problems.push(`${path || 'body'}: non-ASCII ${ct.type} without a charset parameter`);
  }
  const part = { path: path || '1', content_type: ct.type, charset: ct.params.charset || null,
                 encoding: encoding || null, size: body.length, text: text.length > 65536 ? text.slice(0, 65536) : text };
  const disp = get('content-disposition');
  if (disp) part.disposition = disp;
  out.push(part);
}

/*
 * Parse a received message (latin1 string of its bytes): headers, MIME
 * parts, and what is wrong with it.
 */
function analyzeMessage(raw, params) {
  const problems = [];
  const { head, body } = splitEntity(raw);
  const pairs = parseHeaderBlock(head);
  const headers = {};
  for (const [k, v] of pairs) {
    const value = latin1ToUtf8(v);
    if (headers[k] === undefined) headers[k] = value;
    else headers[k] = [].concat(headers[k], value);
  }
  for (const h of REQUIRED_HEADERS) if (headers[h] === undefined) problems.push(`missing ${h} header`);
  for (const h of SINGLE_HEADERS) if (Array.isArray(headers[h])) problems.push(`more than one ${h} header`);
  if (pairs.some(([k]) => k === '(malformed)')) problems.push('malformed header line');
  const smtputf8 = params && params.SMTPUTF8;
  for (const [k, v] of pairs) {
    if (/[\x80-\xff]/.test(v) && !smtputf8) problems.push(`raw 8-bit text in ${k} header (needs RFC 2047 encoding)`);
  }
  if (typeof headers.date === 'string' && Number.isNaN(Date.parse(headers.date))) problems.push('Date header does not parse');
  if (typeof headers['message-id'] === 'string' && !/^<[^<>@\s]+@[^<>@\s]+>$/.test(headers['message-id'])) {
    problems.push('Message-ID is not <local@domain>');
  }
  if (typeof headers['mime-version'] === 'string' && !/^1\.0\b/.test(headers['mime-version'])) problems.push('MIME-Version is not 1.0');
  const lu = headers['list-unsubscribe'];
  if (lu !== undefined) {
    if (!/<https:\/\/[^>]+>/.test(String(lu))) problems.push('List-Unsubscribe has no <https://...> URL');
    if (headers['list-unsubscribe-post'] !== 'List-Unsubscribe=One-Click') {
      problems.push('List-Unsubscribe without "List-Unsubscribe-Post: List-Unsubscribe=One-Click" (RFC 8058)');
    }
  }
  if (/(^|[^\r])\n/.test(raw)) problems.push('bare LF line ending');
  if (raw.split('\r\n').some((l) => l.length > 998)) problems.push('line longer than 998 characters');

  const parts = [];
  collectParts(pairs, body, '', parts, problems, 0);
  const leaves = parts.filter((p) => p.parts === undefined);
  const result = {
    headers, problems, parts,
    subject: typeof headers.subject === 'string' ? decodeWords(headers.subject) : null,
    from_header: typeof headers.from === 'string' ? decodeWords(headers.from) : null,
    content_type: parseContentType(typeof headers['content-type'] === 'string' ? headers['content-type'] : undefined).type,
  };
  const textPart = leaves.find((p) => p.content_type === 'text/plain');
  const htmlPart = leaves.find((p) => p.content_type === 'text/html');
  if (textPart) result.text = textPart.text;
  if (htmlPart) result.html = htmlPart.text;
  return result;
}

module.exports = { SmtpSim, analyzeMessage };
