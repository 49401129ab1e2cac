'use strict';
/*
 * twilio.js -- Twilio Programmable Messaging, the Messages resource.
 *
 * HTTPS, HTTP/1.1.  POST /2010-04-01/Accounts/<AccountSid>/Messages.json
 * with HTTP Basic (AccountSid:AuthToken or ApiKeySid:ApiKeySecret) and a
 * form body: To, From | MessagingServiceSid, Body, StatusCallback.
 * Validation and error codes as Twilio's:
 *   20003 (401) bad credentials, 20404 (404) wrong account / path,
 *   21604 To missing, 21211 To not E.164, 21603 From missing,
 *   21212 From invalid, 21701 bad Messaging Service, 21602 Body missing,
 *   21617 Body over 1600 chars, 21610 recipient said STOP,
 *   21614 not a mobile number.
 * Error body {"code","message","more_info","status"}; success 201 with the
 * Message resource (num_segments is a string, as Twilio sends it: GSM-7
 * 160/153 per segment, UCS-2 70/67).
 *
 * StatusCallback: after a success the simulator POSTs, like Twilio, the
 * status progression (sent, then delivered; or undelivered with ErrorCode
 * 30003 for numbers configured "unreachable") to the callback URL, signed
 * with X-Twilio-Signature (base64 HMAC-SHA1 of URL + sorted params, keyed
 * by the auth token).  http:// and https:// (trusting the test CA) work.
 */

const crypto = require('node:crypto');
const http = require('node:http');
const https = require('node:https');
const { HttpSim, startListener } = require('./http');
const { newStats } = require('./core');

const PATH_RE = /^\/2010-04-01\/Accounts\/([^/]+)\/Messages\.json$/;
const E164_RE = /^\+[1-9]\d{0,14}$/;
const ALNUM_SENDER_RE = /^(?=.*[A-Za-z])[A-Za-z0-9 ]{1,11}$/;
const SHORTCODE_RE = /^\d{5,6}$/;

/* GSM 03.38 basic set and the extension table (each extension char costs 2 septets). */
const GSM_BASIC = new Set(Array.from(
  '@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !"#¤%&\'()*+,-./0123456789:;<=>?' +
  '¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà'));
const GSM_EXT = new Set(Array.from('^{}\\[~]|€\f'));

const ERRORS = {
  20003: [401, 'Authenticate'],
  20404: [404, 'The requested resource %s was not found'],
  20429: [429, 'Too Many Requests'],
  20500: [500, 'An internal server error has occurred'],
  20503: [503, 'Service unavailable'],
  21211: [400, "The 'To' number %s is not a valid phone number."],
  21212: [400, "The 'From' number %s is not a valid phone number, shortcode, or alphanumeric sender ID."],
  21602: [400, 'Message body is required.'],
  21603: [400, "A 'From' phone number is required."],
  21604: [400, "A 'To' phone number is required."],
  21610: [400, 'Attempt to send to unsubscribed recipient'],
  21614: [400, "'To' number is not a valid mobile number"],
  21617: [400, 'The concatenated message body exceeds the 1600 character limit.'],
  21701: [400, 'The Messaging Service Sid %s is invalid.'],
};
const FAULT_CODES = { 400: 21211, 401: 20003, 404: 20404, 429: 20429, 500: 20500, 503: 20503 };

/* Segments and encoding of an SMS body, as the carrier network counts them. */
function smsSegments(body) {
  const chars = Array.from(body);
  let septets = 0;
  let gsm = true;
  for (const ch of chars) {
    if (GSM_BASIC.has(ch)) septets += 1;
    else if (GSM_EXT.has(ch)) septets += 2;
    else { gsm = false; break; }
  }
  if (gsm) {
    return { encoding: 'GSM-7', units: septets, segments: septets <= 160 ? 1 : Math.ceil(septets / 153) };
  }
  const units = body.length;                 /* UTF-16 code units */
  return { encoding: 'UCS-2', units, segments: units <= 70 ? 1 : Math.ceil(units / 67) };
}

function rfc2822(d) {
  return d.toUTCString().replace('GMT', '+0000');
}

class TwilioSim extends HttpSim {
  constructor(core) {
    super(core, 'twilio', {
      account_sid: 'AC0123456789abcdef0123456789abcdef',
      auth_token: 'f0e1d2c3b4a5968778695a4b3c2d1e0f',
      api_key_sid: 'SK0123456789abcdef0123456789abcdef',
      api_key_secret: 'sim-api-key-secret',
      stopped: [],          /* numbers that replied STOP -> 21610 */
      landline: [],         /* numbers that are not mobile -> 21614 */
      unreachable: [],      /* accepted, then status callback undelivered / 30003 */
      callback_delay_ms: 20,
      log_requests: true,
    });
  }

  freshStats() {
    return newStats({ messages: 0, segments: 0, error_codes: {}, callbacks_sent: 0, callbacks_failed: 0 });
  }

  async start(ports) {
    const l = await startListener('tls', ports.twilio ?? 0, this.handle, {
      keys: this.core.keys, alpn: ['http/1.1'],
    });
    this.servers = l.servers;
    return { twilio: l.port };
  }

  faultKeys(ex) {
    const keys = [ex.path];
    if (ex.body) {
      const f = new URLSearchParams(ex.body.toString('utf8'));
      keys.push(f.get('To'), f.get('From'), f.get('Body'));
    }
    return keys;
  }

  faultBody(status) {
    const code = FAULT_CODES[status] || 20500;
    return errorBody(code, status, ERRORS[code][1].replace(' %s', ''));
  }

  fail(ex, code, arg, info) {
    const [status, text] = ERRORS[code];
    const ec = this.stats.error_codes;
    ec[code] = (ec[code] || 0) + 1;
    const headers = {};
    if (status === 401) headers['www-authenticate'] = 'Basic realm="Twilio API"';
    this.json(ex, status, errorBody(code, status, text.replace('%s', arg ?? '')), { ...info, error_code: code }, headers);
  }

  /* The account the Basic credentials belong to, or null. */
  authenticate(header) {
    const m = header ? /^Basic\s+([A-Za-z0-9+/=]+)$/i.exec(header) : null;
    if (!m) return null;
    const decoded = Buffer.from(m[1], 'base64').toString('utf8');
    const colon = decoded.indexOf(':');
    if (colon < 0) return null;
    const user = decoded.slice(0, colon);
    const pass = decoded.slice(colon + 1);
    const c = this.cfg;
    if (user === c.account_sid && pass === c.auth_token) return { account: c.account_sid, user };
    if (user === c.api_key_sid && pass === c.api_key_secret) return { account: c.account_sid, user };
    return null;
  }

  process(ex) {
    const m = PATH_RE.exec(ex.path.split('?')[0]);
    const info = {};
    const who = this.authenticate(ex.headers.authorization);
    if (!who) return this.fail(ex, 20003, null, info);
    info.auth_user = who.user;
    if (!m || m[1] !== who.account) return this.fail(ex, 20404, ex.path, info);
    if (ex.method !== 'POST') return this.fail(ex, 20404, ex.path, info);

    const f = new URLSearchParams(ex.body ? ex.body.toString('utf8') : '');
    const form = Object.fromEntries(f);
    info.form = form;
    const to = f.get('To');
    const from = f.get('From');
    const mss = f.get('MessagingServiceSid');
    const body = f.get('Body');
    if (!to) return this.fail(ex, 21604, null, info);
    if (!E164_RE.test(to)) return this.fail(ex, 21211, to, info);
    if (!from && !mss) return this.fail(ex, 21603, null, info);
    if (from && !E164_RE.test(from) && !ALNUM_SENDER_RE.test(from) && !SHORTCODE_RE.test(from)) {
      return this.fail(ex, 21212, from, info);
    }
    if (mss && !/^MG[0-9a-f]{32}$/.test(mss)) return this.fail(ex, 21701, mss, info);
    if (!body && !f.get('MediaUrl') && !f.get('ContentSid')) return this.fail(ex, 21602, null, info);
    if (body && Array.from(body).length > 1600) return this.fail(ex, 21617, null, info);
    if (this.cfg.stopped.includes(to)) return this.fail(ex, 21610, null, info);
    if (this.cfg.landline.includes(to)) return this.fail(ex, 21614, null, info);

    const seg = smsSegments(body || '');
    const sid = 'SM' + crypto.randomBytes(16).toString('hex');
    const now = rfc2822(new Date());
    const account = who.account;
    const status = mss ? 'accepted' : 'queued';
    const msg = {
      account_sid: account, api_version: '2010-04-01', body: body || '', date_created: now,
      date_sent: null, date_updated: now, direction: 'outbound-api', error_code: null,
      error_message: null, from: mss ? null : from, messaging_service_sid: mss || null,
      num_media: '0', num_segments: String(seg.segments), price: null, price_unit: 'USD', sid,
      status, subresource_uris: { media: `/2010-04-01/Accounts/${account}/Messages/${sid}/Media.json` },
      to, uri: `/2010-04-01/Accounts/${account}/Messages/${sid}.json`,
    };
    this.stats.messages++;
    this.stats.segments += seg.segments;
    Object.assign(info, { sid, to, from: msg.from, segments: seg.segments, encoding: seg.encoding, units: seg.units });
    this.json(ex, 201, msg, info);
    const cb = f.get('StatusCallback');
    if (cb) this.scheduleCallbacks(cb, msg);
  }

  /* Twilio's status progression, POSTed to StatusCallback. */
  scheduleCallbacks(url, msg) {
    const unreachable = this.cfg.unreachable.includes(msg.to);
    const steps = unreachable ? [['sent', null], ['undelivered', '30003']] : [['sent', null], ['delivered', null]];
    let delay = 0;
    for (const [status, errorCode] of steps) {
      delay += this.cfg.callback_delay_ms;
      setTimeout(() => this.postCallback(url, msg, status, errorCode), delay).unref();
    }
  }

  postCallback(url, msg, status, errorCode) {
    const params = {
      AccountSid: msg.account_sid, ApiVersion: '2010-04-01', From: msg.from || '',
      MessageSid: msg.sid, MessageStatus: status, SmsSid: msg.sid, SmsStatus: status, To: msg.to,
    };
    if (msg.messaging_service_sid) params.MessagingServiceSid = msg.messaging_service_sid;
    if (errorCode) params.ErrorCode = errorCode;
    const body = new URLSearchParams(params).toString();
    const signed = url + Object.keys(params).sort().map((k) => k + params[k]).join('');
    const signature = crypto.createHmac('sha1', this.cfg.auth_token).update(signed).digest('base64');
    let u;
    try {
      u = new URL(url);
    } catch (e) {
      this.callbackDone(url, status, null, 'bad URL');
      return;
    }
    const mod = u.protocol === 'https:' ? https : http;
    const req = mod.request(u, {
      method: 'POST', ca: this.core.keys.ca, timeout: 5000,
      headers: { 'content-type': 'application/x-www-form-urlencoded', 'x-twilio-signature': signature,
                 'user-agent': 'TwilioProxy/1.1', 'content-length': Buffer.byteLength(body) },
    }, (res) => {
      res.resume();
      res.on('end', () => this.callbackDone(url, status, res.statusCode, null));
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', (e) => this.callbackDone(url, status, null, e.message));
    req.end(body);
  }

  callbackDone(url, status, httpStatus, error) {
    if (error || httpStatus >= 400) this.stats.callbacks_failed++; else this.stats.callbacks_sent++;
    if (this.cfg.log_requests === false) return;
    this.core.log.add({ sim: 'twilio', event: 'status_callback', url, message_status: status,
                        callback_status: httpStatus, error });
  }
}

function errorBody(code, status, message) {
  return { code, message, more_info: `https://www.twilio.com/docs/errors/${code}`, status };
}

module.exports = { TwilioSim, smsSegments };
