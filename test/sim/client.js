#!/usr/bin/env node
'use strict';
/*
 * client.js -- a small test client for the simulators: what an
 * application server would do, written independently of the C code so the
 * simulators can be proven on their own (selftest.sh).
 *
 *   apns-jwt       --keys DIR [--kid K] [--team T] [--age S] [--key FILE]
 *                  print an APNS provider token (ES256)
 *   apns-burst     --keys DIR --port N --token HEX [--count K] [--warm] [--topic T]
 *                  one HTTP/2 connection, K concurrent pushes (after one
 *                  warm-up push with --warm); prints the statuses
 *   fcm-assertion  --keys DIR --aud URL [--scope S] [--lifetime S] [--iss X] [--key PEM]
 *                  print a service-account JWT for the token endpoint
 *   vapid          --keys DIR --aud ORIGIN [--sub URI] [--exp-in S] [--key FILE]
 *                  print an Authorization header value "vapid t=..., k=..."
 *   webpush-encrypt --sub JSON|@FILE --text TEXT --out FILE
 *                  RFC 8291 body for a subscription
 *   webpush-send   --keys DIR --sub JSON|@FILE --text TEXT [--ttl N] [--urgency U]
 *                  [--topic T] [--key FILE] [--aud ORIGIN] [--no-ttl] [--corrupt]
 *                  encrypt, sign and POST; prints "<status> <body>"
 *   smtp-chat      --port N [--implicit-tls] [--ca FILE] LINE...
 *                  send each LINE, print each reply; "STARTTLS" upgrades;
 *                  after a 354 reply lines go out unanswered up to "." 
 *   rfc8291-vector check encrypt/decrypt against RFC 8291 appendix A
 *
 * Also a module: run(argv) resolves to what the command would print, and
 * the functions behind the commands are exported (selftest.sh drives them
 * from one long-lived node process).
 */

const fs = require('node:fs');
const path = require('node:path');
const crypto = require('node:crypto');
const http2 = require('node:http2');
const https = require('node:https');
const net = require('node:net');
const tls = require('node:tls');
const jose = require('./lib/jose');
const ece = require('./lib/ece');

const FLAGS = new Set(['warm', 'no-ttl', 'corrupt', 'implicit-tls']);

function parse(argv) {
  const o = { _: [] };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a.startsWith('--')) {
      const k = a.slice(2);
      if (FLAGS.has(k)) o[k] = true;
      else if (i + 1 < argv.length) o[k] = argv[++i];
      else die(`${a} needs a value`);
    } else {
      o._.push(a);
    }
  }
  return o;
}

function need(o, k) {
  if (o[k] === undefined || o[k] === true) die(`--${k} is required`);
  return o[k];
}

class UsageError extends Error {}

/* Fatal on the command line; an exception when used as a module. */
function die(msg) {
  if (require.main !== module) throw new UsageError(msg);
  process.stderr.write(`client: ${msg}\n`);
  process.exit(2);
}

const keyFile = (o, name) => (o.key ? o.key : path.join(need(o, 'keys'), name));
const readJsonArg = (v) => JSON.parse(v.startsWith('@') ? fs.readFileSync(v.slice(1), 'utf8') : v);
const now = () => Math.floor(Date.now() / 1000);

function apnsJwt(o) {
  const key = crypto.createPrivateKey(fs.readFileSync(keyFile(o, 'apns.p8')));
  return jose.signJwt({ alg: 'ES256', kid: o.kid || 'ABC123DEFG' },
                      { iss: o.team || 'DEF123GHIJ', iat: now() - Number(o.age || 0) }, key);
}

function fcmAssertion(o) {
  const sa = JSON.parse(fs.readFileSync(path.join(need(o, 'keys'), 'fcm-sa.json'), 'utf8'));
  const key = crypto.createPrivateKey(o.key ? fs.readFileSync(o.key) : sa.private_key);
  const iat = now();
  return jose.signJwt({ alg: 'RS256', typ: 'JWT', kid: sa.private_key_id }, {
    iss: o.iss || sa.client_email, scope: o.scope || 'https://www.googleapis.com/auth/firebase.messaging',
    aud: need(o, 'aud'), iat, exp: iat + Number(o.lifetime || 3600),
  }, key);
}

function vapidHeader(o, aud) {
  const key = crypto.createPrivateKey(fs.readFileSync(keyFile(o, 'vapid.pem')));
  const t = jose.signJwt({ typ: 'JWT', alg: 'ES256' }, {
    aud, exp: now() + Number(o['exp-in'] || 12 * 3600), sub: o.sub || 'mailto:ops@example.com',
  }, key);
  const k = jose.b64u(jose.p256RawFromKey(crypto.createPublicKey(key)));
  return `vapid t=${t}, k=${k}`;
}

function encryptFor(sub, text) {
  return ece.encrypt({ plaintext: Buffer.from(text, 'utf8'), uaPublic: jose.unb64u(sub.keys.p256dh),
                       authSecret: jose.unb64u(sub.keys.auth) });
}

async function webpushSend(o) {
  const sub = readJsonArg(need(o, 'sub'));
  const url = new URL(sub.endpoint);
  let body = encryptFor(sub, need(o, 'text'));
  if (o.corrupt) body[body.length - 1] ^= 1;
  const headers = {
    'content-encoding': 'aes128gcm', 'content-type': 'application/octet-stream',
    authorization: vapidHeader({ ...o, sub: o['sub-claim'] }, o.aud || url.origin),
  };
  if (!o['no-ttl']) headers.ttl = String(o.ttl ?? 60);
  if (o.urgency) headers.urgency = o.urgency;
  if (o.topic) headers.topic = o.topic;
  const ca = fs.readFileSync(path.join(need(o, 'keys'), 'ca.pem'));
  const r = await new Promise((resolve, reject) => {
    const req = https.request(url, { method: 'POST', headers, ca }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode, body: Buffer.concat(chunks).toString() }));
    });
    req.on('error', reject);
    req.end(body);
  });
  return r;
}

async function apnsBurst(o) {
  const ca = fs.readFileSync(path.join(need(o, 'keys'), 'ca.pem'));
  const session = http2.connect(`https://127.0.0.1:${need(o, 'port')}`, { ca, servername: 'localhost' });
  session.on('error', () => {});        /* each request reports its own error */
  const jwt = apnsJwt(o);
  const push = () => new Promise((resolve) => {
    const req = session.request({
      ':method': 'POST', ':path': `/3/device/${need(o, 'token')}`, authorization: `bearer ${jwt}`,
      'apns-topic': o.topic || 'com.example.app', 'apns-push-type': 'alert',
    });
    let data = '';
    let status = 0;
    req.on('response', (h) => { status = h[':status']; });
    req.on('data', (c) => { data += c; });
    req.on('end', () => resolve(`${status}${data ? ' ' + data : ''}`));
    req.on('error', (e) => resolve(`error ${e.code || e.message}`));
    req.end(JSON.stringify({ aps: { alert: { title: 'hi', body: 'there' } } }));
  });
  const out = [];
  if (o.warm) out.push(await push());
  out.push(...await Promise.all(Array.from({ length: Number(o.count || 2) }, push)));
  session.close();
  return out;
}

/* Line-by-line SMTP conversation; prints every reply line. */
async function smtpChat(o) {
  const port = Number(need(o, 'port'));
  const ca = o.ca ? fs.readFileSync(o.ca) : undefined;
  let sock = o['implicit-tls']
    ? tls.connect({ port, host: '127.0.0.1', servername: 'localhost', ca })
    : net.connect({ port, host: '127.0.0.1' });
  let buf = '';
  let waiter = null;
  const onData = (c) => {
    buf += c.toString('latin1');
    if (waiter) waiter();
  };
  let closed = false;
  const onClose = () => {
    closed = true;
    if (waiter) waiter();
  };
  sock.on('data', onData);
  sock.on('close', onClose);
  sock.on('error', onClose);
  const readReply = () => new Promise((resolve) => {
    const check = () => {
      const m = /(^|\n)(\d{3}) [^\n]*\n/.exec(buf);
      if (!m) {
        if (closed) {
          waiter = null;
          resolve('(connection closed)');
        }
        return;
      }
      const end = m.index + m[0].length;
      const text = buf.slice(0, end);
      buf = buf.slice(end);
      waiter = null;
      resolve(text.trimEnd());
    };
    waiter = check;
    check();
  });
  const transcript = [await readReply()];
  let inData = false;
  for (const line of o._) {
    sock.write(line + '\r\n');
    if (inData && line !== '.') continue;
    inData = false;
    const r = await readReply();
    if (r.startsWith('354')) inData = true;
    transcript.push(r);
    if (closed) break;
    if (/^STARTTLS$/i.test(line) && r.startsWith('220')) {
      sock.removeListener('data', onData);
      sock.removeListener('close', onClose);
      sock = tls.connect({ socket: sock, servername: 'localhost', ca });
      await new Promise((resolve, reject) => { sock.once('secureConnect', resolve); sock.once('error', reject); });
      sock.on('data', onData);
      sock.on('close', onClose);
      sock.on('error', onClose);
    }
  }
  sock.end();
  return transcript.join('\n');
}

function rfc8291Vector() {
  const u = (s) => Buffer.from(s, 'base64url');
  const ua = crypto.createECDH('prime256v1');
  ua.setPrivateKey(u('q1dXpw3UpT5VOmu_cf_v6ih07Aems3njxI-JWgLcM94'));
  const auth = u('BTBZMqHH6r4Tts7J_aSIgg');
  const expected = u('DGv6ra1nlYgDCS1FRnbzlwAAEABBBP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A_yl95bQpu6cVPTpK4Mqgkf1CXztLVBSt2Ks3oZwbuwXPXLWyouBWLVWGNWQexSgSxsj_Qulcy4a-fN');
  const text = 'When I grow up, I want to be a watermelon';
  const body = ece.encrypt({ plaintext: text, uaPublic: ua.getPublicKey(), authSecret: auth,
                             asPrivate: u('yfWPiYE-n46HLnH0KqZOF1fJJU3MYrct3AELtAQ-oRw'),
                             salt: u('DGv6ra1nlYgDCS1FRnbzlw') });
  const back = ece.decrypt({ body: expected, uaECDH: ua, authSecret: auth }).plaintext.toString();
  return body.equals(expected) && back === text;
}

/* Run one command (argv as on the command line); resolves to its output text. */
async function run(argv) {
  const [cmd, ...rest] = argv;
  const o = parse(rest);
  switch (cmd) {
    case 'apns-jwt': return apnsJwt(o);
    case 'apns-burst': return (await apnsBurst(o)).join('\n');
    case 'fcm-assertion': return fcmAssertion(o);
    case 'vapid': return vapidHeader(o, need(o, 'aud'));
    case 'webpush-encrypt': {
      const sub = readJsonArg(need(o, 'sub'));
      fs.writeFileSync(need(o, 'out'), encryptFor(sub, need(o, 'text')));
      return '';
    }
    case 'webpush-send': {
      const r = await webpushSend(o);
      return `${r.status} ${r.body}`;
    }
    case 'smtp-chat': return smtpChat(o);
    case 'rfc8291-vector': return rfc8291Vector() ? 'ok' : 'MISMATCH';
    default: return die(`unknown command ${cmd || '(none)'}; see the header of client.js`);
  }
}

module.exports = { run, apnsJwt, fcmAssertion, vapidHeader, encryptFor, webpushSend, apnsBurst, smtpChat,
                   rfc8291Vector };

if (require.main === module) {
  run(process.argv.slice(2)).then((out) => {
    if (out) process.stdout.write(out + '\n');
    if (out === 'MISMATCH') process.exitCode = 1;
  }, (e) => die(e.stack || e.message));
}
