'use strict';
/*
 * http.js -- the HTTP plumbing every HTTP simulator shares:
 *   - listeners: plain HTTP/1.1, h2c (HTTP/2 prior knowledge), and TLS with
 *     ALPN that hands each connection to an HTTP/2 or an HTTP/1.1 server
 *     according to the protocol the client negotiated;
 *   - Exchange: one request with its whole body read, and the ways to answer
 *     it (respond, drop the stream, drop the connection, GOAWAY), the same
 *     for HTTP/1.1 and HTTP/2, so simulators and faults are written once;
 *   - HttpSim: the base class of a simulator: counts, applies fault rules,
 *     logs, answers.
 *
 * HTTP/2 uses the core 'stream' API (not the compatibility layer): the
 * webhook and APNS simulators are benchmark targets.
 */

const http = require('node:http');
const http2 = require('node:http2');
const tls = require('node:tls');
const { newStats, applyConfig } = require('./core');

const CONN = Symbol('conn');
const MAX_BODY = 1 << 20;            /* bodies above this are cut (and flagged) */
const LOG_BODY_MAX = 64 * 1024;
const CLIENT_CLOSED = 499;           /* status recorded when the client left before the answer */
let connSeq = 0;

const H2_OPTIONS = {
  maxSessionMemory: 64,
  settings: { maxConcurrentStreams: 1000 },
};

/* Per-connection state: id, streams in flight, and room for a simulator. */
function newConn(proto, tlsOn) {
  return { id: ++connSeq, proto, tls: tlsOn, inflight: 0, requests: 0 };
}

class Exchange {
  constructor(proto, conn, method, path, headers, rawHeaders) {
    this.proto = proto;          /* 'h1' | 'h2' */
    this.conn = conn;
    this.method = method;
    this.path = path;
    this.headers = headers;      /* lower-case names */
    this.rawHeaders = rawHeaders;/* flat [name, value, ...] as received */
    this.body = null;            /* Buffer */
    this.truncated = false;
    this.concurrent = 1;         /* streams in flight on the connection when this one opened */
    this.answered = false;
  }

  /* Call fn once when the client side goes away (or the exchange ends). */
  onClose(fn) {
    (this.stream || this.res).once('close', fn);
  }

  /* Times a header name (lower case) occurs in the request. */
  headerCount(name) {
    let n = 0;
    const raw = this.rawHeaders;
    if (!raw) return 0;
    for (let i = 0; i < raw.length; i += 2) {
      if (raw[i].length === name.length && raw[i].toLowerCase() === name) n++;
    }
    return n;
  }
}

class H2Exchange extends Exchange {
  constructor(stream, headers, rawHeaders) {
    super('h2', stream.session?.[CONN], headers[':method'], headers[':path'], headers, rawHeaders);
    this.stream = stream;
  }

  isOpen() {
    const s = this.stream;
    return !s.destroyed && !s.closed && !!s.session && !s.session.destroyed;
  }

  respond(status, headers, body) {
    if (this.answered) return;
    this.answered = true;
    const s = this.stream;
    if (s.destroyed || s.closed) return;
    const h = headers ? { ...headers, ':status': status } : { ':status': status };
    try {
      if (body === undefined || body === null || body.length === 0) {
        s.respond(h, { endStream: true });
      } else {
        /* a content-length lets libcurl 7.88 finish the stream without an RST_STREAM */
        if (h['content-length'] === undefined) h['content-length'] = Buffer.byteLength(body);
        s.respond(h);
        s.end(body);
      }
    } catch (e) {
      if (e.code !== 'ERR_HTTP2_INVALID_STREAM' && e.code !== 'ERR_HTTP2_STREAM_ERROR') throw e;
      /* the client reset the stream or the session died: nobody to answer */
    }
  }

  drop(wholeConnection) {
    this.answered = true;
    const s = this.stream;
    if (wholeConnection) {
      if (s.session && !s.session.destroyed) s.session.destroy();
    } else if (!s.destroyed && !s.closed && s.session && !s.session.destroyed) {
      s.close(http2.constants.NGHTTP2_INTERNAL_ERROR);
    }
  }

  /*
   * Graceful GOAWAY: the last-stream-id asked for is the largest possible,
   * which nghttp2 caps to the last stream received, so every stream already
   * in flight is still answered (as a real server shutting down does), and
   * no stream is closed underneath node (a GOAWAY naming this stream while
   * later ones were being reset crashed node 20 natively).
   */
  goaway(reason) {
    const session = this.stream.session;
    if (!session || session.destroyed || session.closed) return;
    const data = typeof reason === 'string' ? Buffer.from(JSON.stringify({ reason })) : undefined;
    session.goaway(http2.constants.NGHTTP2_NO_ERROR, 2 ** 31 - 1, data);
    session.close();
  }
}

class H1Exchange extends Exchange {
  constructor(req, res) {
    super('h1', req.socket[CONN], req.method, req.url, req.headers, req.rawHeaders);
    this.res = res;
    this.req = req;
  }

  isOpen() {
    return !this.res.destroyed && !this.req.socket.destroyed;
  }

  respond(status, headers, body) {
    if (this.answered) return;
    this.answered = true;
    if (this.res.destroyed) return;
    this.res.writeHead(status, headers);
    this.res.end(body);
  }

  drop() {
    this.answered = true;
    this.req.socket.destroy();
  }

  goaway() {
    /* HTTP/1.1 has no GOAWAY: the answer carried "Connection: close". */
  }
}

function readBody(source, ex, done) {
  const chunks = [];
  let size = 0;
  source.on('data', (c) => {
    size += c.length;
    if (size <= MAX_BODY) chunks.push(c); else ex.truncated = true;
  });
  source.on('end', () => {
    ex.body = chunks.length === 1 ? chunks[0] : Buffer.concat(chunks);
    done(ex);
  });
}

/* An HTTP/2 server (no listener of its own) that feeds exchanges to onExchange. */
function makeH2Server(onExchange, { tlsOn, settings, onSession, onStream } = {}) {
  const opts = { ...H2_OPTIONS, settings: { ...H2_OPTIONS.settings, ...settings } };
  const server = http2.createServer(opts);
  server.on('session', (session) => {
    const c = newConn('h2', tlsOn);
    session[CONN] = c;
    session.on('error', () => {});
    if (onSession) onSession(session, c);
  });
  server.on('stream', (stream, headers, flags, rawHeaders) => {
    const c = stream.session?.[CONN];
    const ex = new H2Exchange(stream, headers, rawHeaders);
    if (c) {
      ex.concurrent = ++c.inflight;
      c.requests++;
      stream.on('close', () => { c.inflight--; });
    }
    if (onStream) onStream(ex);
    stream.on('error', () => {});
    readBody(stream, ex, onExchange);
  });
  server.on('sessionError', () => {});
  return server;
}

/* An HTTP/1.1 server (no listener of its own) that feeds exchanges to onExchange. */
function makeH1Server(onExchange, { tlsOn, onConnection } = {}) {
  const server = http.createServer({ keepAliveTimeout: 65000, headersTimeout: 66000,
                                     requestTimeout: 0 });
  server.on('connection', (socket) => {
    if (!socket[CONN]) socket[CONN] = newConn('h1', tlsOn);
    if (onConnection) onConnection(socket, socket[CONN]);
  });
  server.on('request', (req, res) => {
    const ex = new H1Exchange(req, res);
    if (ex.conn) ex.conn.requests++;
    readBody(req, ex, onExchange);
  });
  server.on('clientError', (err, socket) => {
    if (socket.writable) socket.end('HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n');
  });
  return server;
}

function listen(server, port) {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => {
      server.removeListener('error', reject);
      resolve(server.address().port);
    });
  });
}

/*
 * Start listeners for a simulator.  kind:
 *   'h1'   plain HTTP/1.1
 *   'h2c'  plaintext HTTP/2 (prior knowledge)
 *   'tls'  TLS; alpn lists what is offered ('h2' and/or 'http/1.1');
 *          a connection that negotiates nothing usable is closed.
 * Returns { port, servers }.
 */
async function startListener(kind, port, onExchange, { keys, alpn = ['h2', 'http/1.1'], h2settings,
                                                         onSession, onStream, onConnection } = {}) {
  if (kind === 'h1') {
    const s = makeH1Server(onExchange, { tlsOn: false, onConnection });
    return { port: await listen(s, port), servers: [s] };
  }
  if (kind === 'h2c') {
    const s = makeH2Server(onExchange, { tlsOn: false, settings: h2settings, onSession, onStream });
    return { port: await listen(s, port), servers: [s] };
  }
  const h2 = alpn.includes('h2') ? makeH2Server(onExchange, { tlsOn: true, settings: h2settings, onSession, onStream }) : null;
  const h1 = alpn.includes('http/1.1') ? makeH1Server(onExchange, { tlsOn: true, onConnection }) : null;
  const server = tls.createServer({
    key: keys.serverKey, cert: keys.serverCert, ALPNProtocols: alpn, minVersion: 'TLSv1.2',
  });
  server.on('secureConnection', (socket) => {
    socket.on('error', () => {});
    if (socket.alpnProtocol === 'h2' && h2) {
      h2.emit('connection', socket);
    } else if (h1 && (socket.alpnProtocol === 'http/1.1' || socket.alpnProtocol === false)) {
      h1.emit('connection', socket);
    } else {
      socket.destroy();
    }
  });
  server.on('tlsClientError', () => {});
  return { port: await listen(server, port), servers: [server, h2, h1].filter(Boolean), h2 };
}

/*
 * Base class of the HTTP simulators.  A subclass implements
 *   process(ex)             answer a request (fault rules already applied)
 *   faultKeys(ex)           strings a fault's "match" is tested against
 *   faultBody(status, ex)   realistic error body for a fault without "body"
 * and calls this.reply(ex, status, headers, body, info) to answer.
 */
class HttpSim {
  constructor(core, name, defaults) {
    this.core = core;
    this.name = name;
    this.defaults = defaults;
    this.cfg = structuredClone(defaults);
    this.stats = this.freshStats();
    this.handle = this.handle.bind(this);
  }

  freshStats() {
    return newStats();
  }

  reset() {
    this.cfg = structuredClone(this.defaults);
    this.stats = this.freshStats();
  }

  configure(patch) {
    applyConfig(this, patch);
  }

  handle(ex) {
    ex.stats = this.stats;       /* a request held across /reset counts where it started */
    this.stats.requests++;
    try {
      const rule = this.core.faults.live ? this.core.faults.take(this.name, this.faultKeys(ex)) : null;
      if (rule) {
        if (!rule.delay_ms) {
          this.applyFault(ex, rule);
          return;
        }
        /* Hold the request; if its client goes away meanwhile, stop holding it. */
        const timer = setTimeout(() => this.applyFault(ex, rule), rule.delay_ms);
        ex.onClose(() => {
          if (ex.answered) return;
          clearTimeout(timer);
          ex.answered = true;
          this.record(ex, CLIENT_CLOSED, { fault: rule.id, client_closed: true });
        });
        return;
      }
      this.process(ex);
    } catch (e) {
      this.internalError(ex, e);
    }
  }

  applyFault(ex, rule) {
    if (ex.answered) return;
    try {
      if (rule.drop) {
        this.record(ex, 0, { fault: rule.id, dropped: rule.drop === 'connection' ? 'connection' : 'stream' });
        ex.drop(rule.drop === 'connection');
        return;
      }
      const status = rule.status ?? rule.code;
      if (status === undefined) {
        this.process(ex, rule);          /* delay only: answer normally */
        if (rule.goaway) ex.goaway(rule.goaway);
        return;
      }
      let body = rule.body;
      if (body === undefined) body = this.faultBody(status, ex);
      const headers = { ...(rule.headers || {}) };
      if (rule.goaway && ex.proto === 'h1') headers.connection = 'close';
      if (body !== null && typeof body === 'object') {
        body = JSON.stringify(body);
        if (!hasHeader(headers, 'content-type')) headers['content-type'] = 'application/json';
      }
      this.reply(ex, status, headers, body ?? '', { fault: rule.id });
      if (rule.goaway) ex.goaway(rule.goaway);
    } catch (e) {
      this.internalError(ex, e);
    }
  }

  faultKeys(ex) {
    return [ex.path];
  }

  faultBody() {
    return '';
  }

  /* Count and log one answered request. */
  record(ex, status, info) {
    const st = (ex.stats || this.stats).status;
    st[status] = (st[status] || 0) + 1;
    if (this.cfg.log_requests === false) return;
    const entry = {
      sim: this.name, conn: ex.conn?.id ?? 0, proto: ex.proto, method: ex.method, path: ex.path,
      status, headers: ex.headers, body: bodyText(ex),
    };
    if (ex.truncated) entry.truncated = true;
    if (info) Object.assign(entry, info);
    this.core.log.add(entry);
  }

  /* Answer; an exchange whose client is gone is counted as 499, not as answered. */
  reply(ex, status, headers, body, info) {
    if (ex.answered) return;
    if (!ex.isOpen()) {
      ex.answered = true;
      this.record(ex, CLIENT_CLOSED, { ...info, client_closed: true, would_answer: status });
      return;
    }
    this.record(ex, status, info);
    ex.respond(status, headers, body);
  }

  json(ex, status, obj, info, extraHeaders) {
    const headers = { 'content-type': 'application/json; charset=utf-8', ...extraHeaders };
    this.reply(ex, status, headers, JSON.stringify(obj), info);
  }

  internalError(ex, e) {
    this.core.internalErrors++;
    process.stderr.write(`sim: ${this.name}: internal error: ${e.stack || e}\n`);
    if (!ex.answered) this.reply(ex, 500, { 'content-type': 'text/plain' }, 'simulator error\n', { internal_error: String(e) });
  }
}

function hasHeader(headers, name) {
  return Object.keys(headers).some((k) => k.toLowerCase() === name);
}

function bodyText(ex) {
  if (!ex.body || ex.body.length === 0) return '';
  return ex.body.length > LOG_BODY_MAX ? ex.body.toString('utf8', 0, LOG_BODY_MAX) : ex.body.toString('utf8');
}

module.exports = { startListener, HttpSim, Exchange, CONN };
