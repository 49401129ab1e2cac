'use strict';
/*
 * fcm.js -- Google's OAuth 2.0 token endpoint (service-account JWT bearer
 * grant) and Firebase Cloud Messaging HTTP v1, on one HTTPS listener
 * (ALPN h2 + http/1.1).
 *
 * POST <token_path> (default /token), form-encoded
 *   grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer&assertion=<JWT>
 *   JWT: RS256 by the service account key (fcm-sa.pub.pem), iss =
 *   client_email, scope containing firebase.messaging (or cloud-platform),
 *   aud = the URL the client posted to (https://127.0.0.1:<port><path> or
 *   https://localhost:<port><path>), exp - iat <= 3600, not expired.
 *   -> {"access_token":"ya29.<random>","expires_in":3599,"token_type":"Bearer"}
 *   Errors as Google's OAuth server: 400 {"error":"invalid_grant",
 *   "error_description":...} (also invalid_request, invalid_scope,
 *   unsupported_grant_type).
 *
 * POST /v1/projects/<project>/messages:send with Authorization: Bearer
 *   <live access token> (else 401 UNAUTHENTICATED; /config can revoke all).
 *   Body {"message":{...}, "validate_only"?}: known fields only, exactly
 *   one of token/topic/condition, string-only data maps, android.ttl as
 *   "<n>s", payload at most 4096 bytes (2048 for topics).  Errors use the
 *   google.rpc.Status shape with details: google.rpc.BadRequest for JSON
 *   mapping errors (no FcmError detail, as Google does), FcmError for
 *   FCM's own checks (UNREGISTERED, SENDER_ID_MISMATCH, INVALID_ARGUMENT).
 *   -> 200 {"name":"projects/<p>/messages/<id>"}
 */

const crypto = require('node:crypto');
const { HttpSim, startListener } = require('./http');
const { newStats } = require('./core');
const { parseJwt, verifyJwt, isObject } = require('./jose');

const GRANT_TYPE = 'urn:ietf:params:oauth:grant-type:jwt-bearer';
const FCM_SCOPES = ['https://www.googleapis.com/auth/firebase.messaging',
                    'https://www.googleapis.com/auth/cloud-platform'];
const SEND_RE = /^\/v1\/projects\/([^/]+)\/messages:send$/;
const FCM_ERROR = 'type.googleapis.com/google.firebase.fcm.v1.FcmError';
const BAD_REQUEST = 'type.googleapis.com/google.rpc.BadRequest';
const STATUS_NAMES = {
  400: 'INVALID_ARGUMENT', 401: 'UNAUTHENTICATED', 403: 'PERMISSION_DENIED', 404: 'NOT_FOUND',
  429: 'RESOURCE_EXHAUSTED', 500: 'INTERNAL', 503: 'UNAVAILABLE',
};
const FAULT_ERRORS = {
  400: ['Request contains an invalid argument.', 'INVALID_ARGUMENT'],
  401: ['Auth error from APNS or Web Push Service', 'THIRD_PARTY_AUTH_ERROR'],
  403: ['SenderId mismatch', 'SENDER_ID_MISMATCH'],
  404: ['Requested entity was not found.', 'UNREGISTERED'],
  429: ['Quota exceeded for quota metric \'Send requests\'.', 'QUOTA_EXCEEDED'],
  500: ['Internal error encountered.', 'INTERNAL'],
  503: ['The service is currently unavailable.', 'UNAVAILABLE'],
};

/* Fields of a v1 Message and its parts that Google knows (others are rejected). */
const MESSAGE_FIELDS = new Set(['name', 'data', 'notification', 'android', 'webpush', 'apns',
                                'fcm_options', 'token', 'topic', 'condition']);
const NOTIFICATION_FIELDS = new Set(['title', 'body', 'image']);
const ANDROID_FIELDS = new Set(['collapse_key', 'priority', 'ttl', 'restricted_package_name', 'data',
                                'notification', 'fcm_options', 'direct_boot_ok', 'bandwidth_constrained_ok',
                                'restricted_satellite_ok']);
const APNS_FIELDS = new Set(['headers', 'payload', 'fcm_options', 'live_activity_token']);
const WEBPUSH_FIELDS = new Set(['headers', 'data', 'notification', 'fcm_options']);

class FcmSim extends HttpSim {
  constructor(core) {
    const sa = core.keys.fcmServiceAccount;
    super(core, 'fcm', {
      project_id: sa.project_id,
      client_email: sa.client_email,
      private_key_id: sa.private_key_id,
      token_path: '/token',
      expires_in: 3599,
      unregistered: [],              /* tokens -> 404 UNREGISTERED */
      sender_id_mismatch: [],        /* tokens -> 403 SENDER_ID_MISMATCH */
      log_requests: true,
    });
    this.publicKey = core.keys.fcmPublic;
    this.accessTokens = new Map();   /* token -> expiry ms */
  }

  freshStats() {
    return newStats({ tokens_issued: 0, token_errors: 0, messages: 0, error_codes: {} });
  }

  /* Actions: {"revoke_tokens": true} forgets every access token issued. */
  configAction(k, v) {
    if (k !== 'revoke_tokens') return false;
    if (v) this.accessTokens.clear();
    return true;
  }

  async start(ports) {
    const l = await startListener('tls', ports.fcm ?? 0, this.handle, { keys: this.core.keys });
    this.servers = l.servers;
    this.port = l.port;
    return { fcm: l.port };
  }

  faultKeys(ex) {
    const keys = [ex.path];
    if (ex.body && ex.body.length < 65536) keys.push(ex.body.toString('utf8'));
    return keys;
  }

  faultBody(status, ex) {
    if (ex.path === this.cfg.token_path) {
      return status >= 500 ? { error: 'internal_failure', error_description: 'Backend Error' }
        : { error: 'invalid_grant', error_description: 'Simulated failure' };
    }
    const [message, code] = FAULT_ERRORS[status] || [`Simulated ${status}`, 'UNSPECIFIED_ERROR'];
    return googleError(status, message, [{ '@type': FCM_ERROR, errorCode: code }]);
  }

  process(ex) {
    if (ex.path === this.cfg.token_path) return this.token(ex);
    const m = SEND_RE.exec(ex.path);
    if (!m) {
      return this.json(ex, 404, googleError(404, `Requested path ${ex.path.split('?')[0]} was not found.`));
    }
    if (ex.method !== 'POST') {
      return this.json(ex, 405, googleError(405, `Method ${ex.method} is not allowed.`, undefined, 'METHOD_NOT_ALLOWED'));
    }
    return this.send(ex, decodeURIComponent(m[1]));
  }

  /* ---- OAuth token endpoint ---- */

  oauthError(ex, status, error, description, info) {
    this.stats.token_errors++;
    this.json(ex, status, { error, error_description: description }, { ...info, oauth_error: error });
  }

  token(ex) {
    if (ex.method !== 'POST') return this.oauthError(ex, 405, 'invalid_request', 'Use POST.');
    const ct = String(ex.headers['content-type'] || '');
    if (!ct.toLowerCase().startsWith('application/x-www-form-urlencoded')) {
      return this.oauthError(ex, 400, 'invalid_request', 'Content-Type must be application/x-www-form-urlencoded.');
    }
    const form = new URLSearchParams(ex.body ? ex.body.toString('utf8') : '');
    const grant = form.get('grant_type');
    if (!grant) return this.oauthError(ex, 400, 'invalid_request', 'Missing required parameter: grant_type');
    if (grant !== GRANT_TYPE) return this.oauthError(ex, 400, 'unsupported_grant_type', `Invalid grant_type: ${grant}`);
    const assertion = form.get('assertion');
    if (!assertion) return this.oauthError(ex, 400, 'invalid_request', 'Missing required parameter: assertion');

    let p;
    try {
      p = parseJwt(assertion);
    } catch (e) {
      return this.oauthError(ex, 400, 'invalid_grant', `Invalid JWT: ${e.message}`);
    }
    const info = { jwt: { header: p.header, claims: p.claims } };
    const c = p.claims;
    if (p.header.alg !== 'RS256') return this.oauthError(ex, 400, 'invalid_grant', `Invalid JWT: alg must be RS256, not ${p.header.alg}`, info);
    if (p.header.kid !== undefined && p.header.kid !== this.cfg.private_key_id) {
      return this.oauthError(ex, 400, 'invalid_grant', 'Invalid JWT Signature.', info);
    }
    if (!verifyJwt(p, 'RS256', this.publicKey)) return this.oauthError(ex, 400, 'invalid_grant', 'Invalid JWT Signature.', info);
    if (c.iss !== this.cfg.client_email) return this.oauthError(ex, 400, 'invalid_grant', 'Invalid grant: account not found', info);
    const host = this.port;
    const path = this.cfg.token_path;
    const auds = [`https://127.0.0.1:${host}${path}`, `https://localhost:${host}${path}`];
    if (!auds.includes(c.aud)) {
      return this.oauthError(ex, 400, 'invalid_grant',
                             `Invalid JWT: Failed audience check. The right audience is ${auds[0]}`, info);
    }
    const now = Math.floor(Date.now() / 1000);
    if (!Number.isInteger(c.iat) || !Number.isInteger(c.exp)) {
      return this.oauthError(ex, 400, 'invalid_grant', 'Invalid JWT: iat and exp must be integers.', info);
    }
    if (c.exp - c.iat > 3600 || c.exp <= now || c.iat > now + 60 || c.exp < c.iat) {
      return this.oauthError(ex, 400, 'invalid_grant',
                             'Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe. Check your iat and exp values in the JWT claim.', info);
    }
    const scopes = typeof c.scope === 'string' ? c.scope.split(/\s+/) : [];
    if (!scopes.some((s) => FCM_SCOPES.includes(s))) {
      return this.oauthError(ex, 400, 'invalid_scope',
                             'Invalid OAuth scope or ID token audience provided: firebase.messaging scope missing.', info);
    }
    const tok = 'ya29.' + crypto.randomBytes(48).toString('base64url');
    const expiresIn = this.cfg.expires_in;
    this.accessTokens.set(tok, Date.now() + expiresIn * 1000);
    this.stats.tokens_issued++;
    info.access_token = tok;
    this.json(ex, 200, { access_token: tok, expires_in: expiresIn, token_type: 'Bearer' }, info,
              { 'cache-control': 'no-cache, no-store, max-age=0, must-revalidate', pragma: 'no-cache' });
  }

  /* ---- messages:send ---- */

  fcmFail(ex, status, message, errorCode, info, extraDetails) {
    const details = [...(extraDetails || [])];
    if (errorCode) details.push({ '@type': FCM_ERROR, errorCode });
    const code = errorCode || STATUS_NAMES[status];
    const ec = this.stats.error_codes;
    ec[code] = (ec[code] || 0) + 1;
    this.json(ex, status, googleError(status, message, details), { ...info, error_code: code });
  }

  /* A JSON-mapping error: Google answers with BadRequest details only. */
  badField(ex, field, description, info) {
    this.fcmFail(ex, 400, description, null, info,
                 [{ '@type': BAD_REQUEST, fieldViolations: [{ field, description }] }]);
  }

  send(ex, project) {
    const info = { project };
    const auth = ex.headers.authorization;
    const m = auth ? /^Bearer\s+(\S+)$/i.exec(auth) : null;
    if (!m) {
      return this.fcmFail(ex, 401, 'Request is missing required authentication credential. Expected OAuth 2 access token, login cookie or other valid authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project.', null, info);
    }
    const exp = this.accessTokens.get(m[1]);
    if (exp === undefined || exp <= Date.now()) {
      info.auth = exp === undefined ? 'unknown or revoked access token' : 'expired access token';
      return this.fcmFail(ex, 401, 'Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project.', null, info);
    }
    if (project !== this.cfg.project_id) {
      return this.fcmFail(ex, 403, `Permission 'cloudmessaging.messages.create' denied on resource '//cloudresourcemanager.googleapis.com/projects/${project}' (or it may not exist).`, null, info);
    }
    let req;
    try {
      req = JSON.parse(ex.body ? ex.body.toString('utf8') : '');
    } catch (e) {
      return this.badField(ex, '', `Invalid JSON payload received. ${e.message}`, info);
    }
    if (!isObject(req)) return this.badField(ex, '', 'Invalid JSON payload received. Expected an object.', info);
    for (const k of Object.keys(req)) {
      if (k !== 'message' && k !== 'validate_only') {
        return this.badField(ex, k, `Invalid JSON payload received. Unknown name "${k}": Cannot find field.`, info);
      }
    }
    const msg = req.message;
    if (!isObject(msg)) return this.fcmFail(ex, 400, 'Request contains an invalid argument.', 'INVALID_ARGUMENT', info);
    info.message = msg;
    const bad = checkMessage(msg);
    if (bad) return this.badField(ex, bad.field, bad.description, info);

    const targets = ['token', 'topic', 'condition'].filter((k) => msg[k] !== undefined);
    if (targets.length === 0) return this.fcmFail(ex, 400, 'Recipient of the message is not set.', 'INVALID_ARGUMENT', info);
    if (targets.length > 1) {
      return this.badField(ex, 'message', `Invalid value at 'message' (oneof), oneof field 'target' is already set. Cannot set '${targets[1]}'`, info);
    }
    const target = targets[0];
    const value = msg[target];
    if (typeof value !== 'string') return this.badField(ex, `message.${target}`, `Invalid value at 'message.${target}' (TYPE_STRING), ${JSON.stringify(value)}`, info);
    info.target = { [target]: value };
    if (target === 'token' && !/^[A-Za-z0-9_:-]{1,4096}$/.test(value)) {
      return this.fcmFail(ex, 400, 'The registration token is not a valid FCM registration token', 'INVALID_ARGUMENT', info);
    }
    if (target === 'topic' && !/^(\/topics\/)?[a-zA-Z0-9-_.~%]{1,900}$/.test(value)) {
      return this.fcmFail(ex, 400, 'Invalid topic name', 'INVALID_ARGUMENT', info);
    }

    const size = payloadSize(msg);
    const limit = target === 'token' ? 4096 : 2048;
    info.payload_size = size;
    if (size > limit) {
      return this.fcmFail(ex, 400, `Message payload is too big (${size} bytes > ${limit}).`, 'INVALID_ARGUMENT', info);
    }
    if (target === 'token') {
      if (this.cfg.unregistered.includes(value)) {
        return this.fcmFail(ex, 404, 'Requested entity was not found.', 'UNREGISTERED', info);
      }
      if (this.cfg.sender_id_mismatch.includes(value)) {
        return this.fcmFail(ex, 403, 'SenderId mismatch', 'SENDER_ID_MISMATCH', info);
      }
    }
    this.stats.messages++;
    const id = req.validate_only === true ? 'fake_message_id'
      : `0:${Date.now()}%${crypto.randomBytes(8).toString('hex')}`;
    const name = `projects/${project}/messages/${id}`;
    info.name = name;
    if (req.validate_only === true) info.validate_only = true;
    this.json(ex, 200, { name }, info);
  }
}

function googleError(code, message, details, status) {
  const error = { code, message, status: status || STATUS_NAMES[code] || 'UNKNOWN' };
  if (details && details.length) error.details = details;
  return { error };
}

/* First JSON-mapping problem in a message: { field, description } or null. */
function checkMessage(msg) {
  const unknown = (obj, known, where) => {
    for (const k of Object.keys(obj)) {
      if (!known.has(k)) {
        return { field: `${where}.${k}`, description: `Invalid JSON payload received. Unknown name "${k}" at '${where}': Cannot find field.` };
      }
    }
    return null;
  };
  const stringMap = (obj, where) => {
    if (!isObject(obj)) return { field: where, description: `Invalid value at '${where}' (type.googleapis.com/google.protobuf.Map), ${JSON.stringify(obj)}` };
    let i = 0;
    for (const [k, v] of Object.entries(obj)) {
      if (typeof v !== 'string') {
        const field = `${where}[${i}].value`;
        return { field, description: `Invalid value at '${field}' (TYPE_STRING), ${JSON.stringify(v)}` };
      }
      if (where === 'message.data' && /^(from|notification|message_type)$|^(google|gcm)[.]/.test(k)) {
        return { field: where, description: `Invalid data payload key: ${k}` };
      }
      i++;
    }
    return null;
  };
  const object = (v, where) => (isObject(v) ? null
    : { field: where, description: `Invalid value at '${where}', ${JSON.stringify(v)}: expected an object` });

  let bad = unknown(msg, MESSAGE_FIELDS, 'message');
  if (bad) return bad;
  if (msg.data !== undefined && (bad = stringMap(msg.data, 'message.data'))) return bad;
  if (msg.notification !== undefined) {
    if ((bad = object(msg.notification, 'message.notification'))) return bad;
    if ((bad = unknown(msg.notification, NOTIFICATION_FIELDS, 'message.notification'))) return bad;
    for (const [k, v] of Object.entries(msg.notification)) {
      if (typeof v !== 'string') return { field: `message.notification.${k}`, description: `Invalid value at 'message.notification.${k}' (TYPE_STRING), ${JSON.stringify(v)}` };
    }
  }
  if (msg.android !== undefined) {
    const a = msg.android;
    if ((bad = object(a, 'message.android'))) return bad;
    if ((bad = unknown(a, ANDROID_FIELDS, 'message.android'))) return bad;
    if (a.data !== undefined && (bad = stringMap(a.data, 'message.android.data'))) return bad;
    if (a.ttl !== undefined && (typeof a.ttl !== 'string' || !/^\d+(\.\d{1,9})?s$/.test(a.ttl))) {
      return { field: 'message.android.ttl', description: `Invalid value at 'message.android.ttl' (type.googleapis.com/google.protobuf.Duration), ${JSON.stringify(a.ttl)}` };
    }
    if (a.priority !== undefined && !/^(normal|high)$/i.test(String(a.priority))) {
      return { field: 'message.android.priority', description: `Invalid value at 'message.android.priority' (type.googleapis.com/google.firebase.fcm.v1.AndroidMessagePriority), ${JSON.stringify(a.priority)}` };
    }
    if (a.notification !== undefined && (bad = object(a.notification, 'message.android.notification'))) return bad;
  }
  if (msg.apns !== undefined) {
    if ((bad = object(msg.apns, 'message.apns'))) return bad;
    if ((bad = unknown(msg.apns, APNS_FIELDS, 'message.apns'))) return bad;
    if (msg.apns.headers !== undefined && (bad = stringMap(msg.apns.headers, 'message.apns.headers'))) return bad;
    if (msg.apns.payload !== undefined && (bad = object(msg.apns.payload, 'message.apns.payload'))) return bad;
  }
  if (msg.webpush !== undefined) {
    if ((bad = object(msg.webpush, 'message.webpush'))) return bad;
    if ((bad = unknown(msg.webpush, WEBPUSH_FIELDS, 'message.webpush'))) return bad;
    if (msg.webpush.headers !== undefined && (bad = stringMap(msg.webpush.headers, 'message.webpush.headers'))) return bad;
    if (msg.webpush.data !== undefined && (bad = stringMap(msg.webpush.data, 'message.webpush.data'))) return bad;
  }
  if (msg.fcm_options !== undefined && (bad = object(msg.fcm_options, 'message.fcm_options'))) return bad;
  return null;
}

/* Bytes FCM counts against the limit: everything but the target and name. */
function payloadSize(msg) {
  const { token, topic, condition, name, ...rest } = msg;
  return Buffer.byteLength(JSON.stringify(rest));
}

module.exports = { FcmSim };
