#!/usr/bin/env node
'use strict';
/*
 * sim.js -- starts the provider simulators in one process on 127.0.0.1:
 * webhook (http, https h2+h1, h2c), apns, fcm, twilio, webpush, smtp and
 * smtps, plus the control API; writes the ports to the --state file (tmp +
 * rename) once everything listens; exits cleanly on SIGTERM / SIGINT.
 *
 *   node sim.js --keys DIR [--state FILE] [--log FILE] [--only apns,webhook]
 *               [--port-<name> N ...] [--config JSON|@FILE] [--no-log-bodies]
 *               [--quiet]
 *
 * Port names: webhook_http webhook_https webhook_h2c apns fcm twilio webpush
 * smtp smtps control (default 0 = ephemeral).  See README.md.
 */

const fs = require('node:fs');
const path = require('node:path');
const crypto = require('node:crypto');
const { Core } = require('./lib/core');
const { startControl } = require('./lib/control');

const SIMS = {
  webhook: () => require('./lib/webhook').WebhookSim,
  apns: () => require('./lib/apns').ApnsSim,
  fcm: () => require('./lib/fcm').FcmSim,
  twilio: () => require('./lib/twilio').TwilioSim,
  webpush: () => require('./lib/webpush').WebpushSim,
  smtp: () => require('./lib/smtp').SmtpSim,
};
const PORT_NAMES = ['webhook_http', 'webhook_https', 'webhook_h2c', 'apns', 'fcm', 'twilio', 'webpush',
                    'smtp', 'smtps', 'control'];

function usage(msg) {
  if (msg) process.stderr.write(`sim: ${msg}\n`);
  process.stderr.write('usage: node sim.js --keys DIR [--state FILE] [--log FILE] [--only a,b] ' +
                       '[--port-NAME N] [--config JSON|@FILE] [--no-log-bodies] [--quiet]\n');
  process.exit(2);
}

function parseArgs(argv) {
  const o = { ports: {}, only: Object.keys(SIMS), quiet: false, noLogBodies: false, config: null };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const val = () => {
      if (i + 1 >= argv.length) usage(`${a} needs a value`);
      return argv[++i];
    };
    if (a === '--keys') o.keys = val();
    else if (a === '--state') o.state = val();
    else if (a === '--log') o.log = val();
    else if (a === '--only') o.only = val().split(',').map((s) => s.trim()).filter(Boolean);
    else if (a === '--quiet') o.quiet = true;
    else if (a === '--no-log-bodies') o.noLogBodies = true;
    else if (a === '--config') o.config = val();
    else if (a === '--log-max') o.logMax = Number(val());
    else if (a.startsWith('--port-')) {
      const name = a.slice(7).replace(/-/g, '_');
      if (!PORT_NAMES.includes(name)) usage(`unknown port name ${name} (known: ${PORT_NAMES.join(' ')})`);
      const n = Number(val());
      if (!Number.isInteger(n) || n < 0 || n > 65535) usage(`bad port for ${name}`);
      o.ports[name] = n;
    } else if (a === '-h' || a === '--help') usage();
    else usage(`unknown argument ${a}`);
  }
  for (const s of o.only) if (!SIMS[s]) usage(`unknown simulator ${s} (known: ${Object.keys(SIMS).join(', ')})`);
  if (!o.keys) usage('--keys DIR is required (make it with keys.sh)');
  return o;
}

/* TLS and signing material made by keys.sh. */
function loadKeys(dir) {
  const read = (f) => fs.readFileSync(path.join(dir, f));
  const k = { dir: path.resolve(dir) };
  k.ca = read('ca.pem');
  k.serverCert = read('server.pem');
  k.serverKey = read('server.key');
  k.apnsPublic = crypto.createPublicKey(read('apns.pub.pem'));
  k.fcmPublic = crypto.createPublicKey(read('fcm-sa.pub.pem'));
  k.fcmServiceAccount = JSON.parse(read('fcm-sa.json'));
  return k;
}

function writeState(file, state) {
  const tmp = `${file}.${process.pid}.tmp`;
  fs.writeFileSync(tmp, JSON.stringify(state, null, 2) + '\n');
  fs.renameSync(tmp, file);
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  let keys;
  try {
    keys = loadKeys(opts.keys);
  } catch (e) {
    usage(`cannot load keys from ${opts.keys}: ${e.message}`);
  }
  const core = new Core({ keys, logFile: opts.log || null, logMax: opts.logMax || 50000,
                          quiet: opts.quiet, simNames: opts.only });

  let stopping = false;
  const shutdown = () => {
    if (stopping) return;
    stopping = true;
    try { core.log.flushSync(opts.log); } catch (e) { /* best effort */ }
    if (opts.state) {
      try { fs.unlinkSync(opts.state); } catch (e) { /* already gone */ }
    }
    process.exit(0);
  };
  process.on('SIGTERM', shutdown);
  process.on('SIGINT', shutdown);
  process.on('uncaughtException', (e) => {
    core.internalErrors++;
    process.stderr.write(`sim: uncaught: ${e.stack || e}\n`);
  });

  const ports = {};
  for (const name of opts.only) {
    const Sim = SIMS[name]();
    const sim = new Sim(core);
    core.sims[name] = sim;
    Object.assign(ports, await sim.start(opts.ports));
  }
  if (opts.noLogBodies) {
    for (const name of ['webhook', 'apns']) if (core.sims[name]) core.sims[name].cfg.log_requests = false;
  }
  if (opts.config) {
    const text = opts.config.startsWith('@') ? fs.readFileSync(opts.config.slice(1), 'utf8') : opts.config;
    const patch = JSON.parse(text);
    for (const [name, p] of Object.entries(patch)) {
      if (!core.sims[name]) usage(`--config names ${name}, which is not running`);
      core.sims[name].configure(p);
    }
  }
  const control = await startControl(core, opts.ports.control ?? 0, shutdown);
  ports.control = control.port;
  core.ports = ports;

  const urls = {};
  if (ports.webhook_http) urls.webhook_http = `http://127.0.0.1:${ports.webhook_http}`;
  if (ports.webhook_https) urls.webhook_https = `https://127.0.0.1:${ports.webhook_https}`;
  if (ports.webhook_h2c) urls.webhook_h2c = `http://127.0.0.1:${ports.webhook_h2c}`;
  if (ports.apns) urls.apns = `https://127.0.0.1:${ports.apns}`;
  if (ports.fcm) {
    urls.fcm = `https://127.0.0.1:${ports.fcm}`;
    urls.fcm_token_uri = `https://127.0.0.1:${ports.fcm}${core.sims.fcm.cfg.token_path}`;
  }
  if (ports.twilio) urls.twilio = `https://127.0.0.1:${ports.twilio}`;
  if (ports.webpush) urls.webpush = `https://127.0.0.1:${ports.webpush}`;
  if (ports.smtp) urls.smtp = `smtp://127.0.0.1:${ports.smtp}`;
  if (ports.smtps) urls.smtps = `smtps://127.0.0.1:${ports.smtps}`;
  urls.control = `http://127.0.0.1:${ports.control}`;

  core.state = { pid: process.pid, ports, urls, keys: keys.dir, started_at: new Date().toISOString() };
  if (opts.state) writeState(opts.state, core.state);
  core.info(`ready: ${Object.entries(ports).map(([k, v]) => `${k}=${v}`).join(' ')}`);
}

main().catch((e) => {
  process.stderr.write(`sim: startup failed: ${e.stack || e}\n`);
  process.exit(1);
});
