#!/usr/bin/env bash
# selftest.sh -- proves the provider simulators on their own: makes keys,
# starts sim.js in a temp dir, drives every simulator with curl and
# client.js (JWT/VAPID signing, RFC 8291 encryption, raw SMTP), and checks
# the answers, the request log, the counters and the fault rules.
# Prints PASS/FAIL per check; exits non-zero when any check fails.
#   test/sim/selftest.sh [-v]      (-v: print response bodies of failures)
# The P_<port name> variables are set by an eval of the state file:
# shellcheck disable=SC2154
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d /tmp/notify-simtest.XXXXXX)
keys=$tmp/keys
verbose=${1:-}
pass=0
fail=0
simpid=

cleanup() {
  [[ -n $simpid ]] && kill "$simpid" 2>/dev/null
  [[ -n ${evpid:-} ]] && kill "$evpid" 2>/dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT

ok() { echo "PASS $1"; pass=$((pass + 1)); }
bad() { echo "FAIL $1${2:+: $2}"; fail=$((fail + 1)); }
# check NAME EXPECTED ACTUAL
check() { if [[ $3 == "$2" ]]; then ok "$1"; else bad "$1" "expected [$2], got [$3]"; fi; }
# like NAME REGEX ACTUAL
like() { if [[ $3 =~ $2 ]]; then ok "$1"; else bad "$1" "expected /$2/, got [${3:0:300}]"; fi; }

# req CURL-ARGS...: sets STATUS (HTTP code) and BODY
req() {
  local out
  out=$(curl -s -w '\n%{http_code}' "$@")
  RC=$?
  STATUS=${out##*$'\n'}
  BODY=${out%$'\n'*}
  [[ -n $verbose ]] && echo "    -> $STATUS $BODY" >&2
  return 0
}
# One long-lived node process answers JSON look-ups and runs client.js
# commands (a node start per look-up would cost ~0.1 s each).  Protocol, raw
# bytes both ways: request "KIND LEN1 LEN2 ...\n" then the fields; answer
# "LEN\n" then LEN bytes.  KIND j: fields expr, json; KIND c: client argv.
# LC_ALL=C makes bash count and read bytes.
export LC_ALL=C
EVAL_JS='
const C = require(process.argv[1]);
let buf = Buffer.alloc(0);
async function serve(kind, fields) {
  if (kind === "c") return C.run(fields);
  let j;
  try { j = JSON.parse(fields[1]); } catch (e) { j = fields[1]; }
  const r = new Function("j", "return (" + fields[0] + ");")(j);
  return typeof r === "string" ? r : JSON.stringify(r);
}
let busy = false;
async function pump() {
  while (!busy) {
    const nl = buf.indexOf(10);
    if (nl < 0) return;
    const [kind, ...lens] = buf.subarray(0, nl).toString().split(" ");
    const sizes = lens.map(Number);
    if (buf.length < nl + 1 + sizes.reduce((a, b) => a + b, 0)) return;
    let off = nl + 1;
    const fields = sizes.map((n) => buf.subarray(off, (off += n)).toString("utf8"));
    buf = buf.subarray(off);
    busy = true;
    let out;
    try { out = await serve(kind, fields); } catch (e) { out = "ERROR: " + e.message; }
    const b = Buffer.from(String(out ?? ""));
    process.stdout.write(b.length + "\n");
    process.stdout.write(b);
    busy = false;
  }
}
process.stdin.on("data", (c) => { buf = Buffer.concat([buf, c]); pump(); });'
coproc EV { exec node -e "$EVAL_JS" "$here/client.js"; }
evpid=$EV_PID
exec {ev_in}>&"${EV[1]}" {ev_out}<&"${EV[0]}"    # plain fds: visible in pipelines too
ev() {
  local head=$1 f len='' ans=''
  shift
  for f in "$@"; do head+=" ${#f}"; done
  printf '%s\n' "$head" >&"$ev_in"
  for f in "$@"; do printf '%s' "$f" >&"$ev_in"; done
  IFS= read -r len <&"$ev_out"
  ((len > 0)) && IFS= read -r -N "$len" ans <&"$ev_out"
  printf '%s' "$ans"
}
# j EXPR: evaluate a JS expression on the JSON in stdin (bound to j)
j() {
  local data=
  IFS= read -r -d '' data
  ev j "$1" "$data"
}
# client ARGS...: what "node client.js ARGS..." would print
client() { ev c "$@"; }
ctl() { curl -s -X "$1" "http://127.0.0.1:$P_control$2" ${3:+-H 'content-type: application/json' -d "$3"}; }
lastlog() { ctl GET "/log?sim=$1&tail=1${2:+&event=$2}" | j 'j.entries[0]'; }

"$here/keys.sh" "$keys" || { echo "FAIL keys.sh"; exit 1; }
for f in ca.pem server.pem apns.p8 fcm-sa.json vapid.pem vapid.pub.b64url; do
  [[ -s $keys/$f ]] || bad "keys.sh made $f"
done
ok "keys.sh"

node "$here/sim.js" --keys "$keys" --state "$tmp/state.json" --log "$tmp/log.jsonl" --quiet &
simpid=$!
for _ in $(seq 100); do [[ -s $tmp/state.json ]] && break; sleep 0.05; done
[[ -s $tmp/state.json ]] || { echo "FAIL sim.js did not write its state file"; exit 1; }
# Sets P_webhook_http, P_apns, ... P_control from the state file.
eval "$(j 'Object.entries(j.ports).map(([k,v])=>`P_${k}=${v}`).join("\n")' < "$tmp/state.json")"
check "state file pid" "$simpid" "$(j 'j.pid' < "$tmp/state.json")"

CA=(--cacert "$keys/ca.pem")
H2=(--http2 "${CA[@]}")

# ---------------------------------------------------------------- webhook
echo "== webhook"
req -d '{"a":1}' -H 'content-type: application/json' -H 'x-notify-id: 41' "http://127.0.0.1:$P_webhook_http/hooks/a"
check "webhook http 200" 200 "$STATUS"
like "webhook answer" '^\{"ok":true,"id":"[0-9]+"\}$' "$BODY"
check "webhook https h2" "2 200" "$(curl -s -o /dev/null -w '%{http_version} %{http_code}' "${H2[@]}" -d '{}' "https://localhost:$P_webhook_https/hooks/b")"
check "webhook https http/1.1" "1.1 200" "$(curl -s -o /dev/null -w '%{http_version} %{http_code}' --http1.1 "${CA[@]}" -d '{}' "https://127.0.0.1:$P_webhook_https/hooks/b")"
check "webhook h2c prior knowledge" "2 200" "$(curl -s -o /dev/null -w '%{http_version} %{http_code}' --http2-prior-knowledge -d '{}' "http://127.0.0.1:$P_webhook_h2c/hooks/c")"
req "http://127.0.0.1:$P_webhook_http/hooks/a"
check "webhook GET -> 405" 405 "$STATUS"
req -d '{"a":2}' -H 'x-notify-id: 41' "http://127.0.0.1:$P_webhook_http/hooks/a"
entry=$(lastlog webhook)
check "webhook log records x-notify-id" 41 "$(j 'j.headers["x-notify-id"]' <<<"$entry")"
check "webhook log has parsed body" 2 "$(j 'j.json.a' <<<"$entry")"
stats=$(ctl GET /stats)
check "webhook duplicate x-notify-id counted" 1 "$(j 'j.sims.webhook.duplicate_ids' <<<"$stats")"
check "webhook per-path count" 3 "$(j 'j.sims.webhook.paths["/hooks/a"]' <<<"$stats")"

ctl POST /config '{"webhook":{"secret":"s3cret"}}' >/dev/null
body='{"event":"signed"}'
t=$(date +%s)
sig=$(printf '%s' "$t.$body" | openssl dgst -sha256 -hmac s3cret -hex | sed 's/^.* //')
req -d "$body" -H "x-notify-signature: t=$t,v1=$sig" "http://127.0.0.1:$P_webhook_http/signed"
check "webhook good signature" 200 "$STATUS"
req -d "$body" -H "x-notify-signature: t=$t,v1=${sig/a/b}0" "http://127.0.0.1:$P_webhook_http/signed"
check "webhook bad signature -> 401" 401 "$STATUS"
req -d '{"event":"tampered"}' -H "x-notify-signature: t=$t,v1=$sig" "http://127.0.0.1:$P_webhook_http/signed"
check "webhook signature over other body -> 401" 401 "$STATUS"
req -d "$body" "http://127.0.0.1:$P_webhook_http/signed"
check "webhook missing signature with secret -> 401" 401 "$STATUS"
ctl POST /config '{"webhook":{"secret":null}}' >/dev/null

ctl POST /faults '{"sim":"webhook","match":"/flaky","status":503,"headers":{"retry-after":"2"},"count":1}' >/dev/null
hdr=$(curl -s -D - -o /dev/null -d '{}' "http://127.0.0.1:$P_webhook_http/flaky")
like "fault 503 with retry-after" '503.*[Rr]etry-[Aa]fter: 2' "$(tr -d '\r' <<<"$hdr" | tr '\n' ' ')"
req -d '{}' "http://127.0.0.1:$P_webhook_http/flaky"
check "fault count exhausted -> 200" 200 "$STATUS"
ctl POST /faults '{"sim":"webhook","match":"/drop","drop":true,"count":1}' >/dev/null
req -d '{}' "http://127.0.0.1:$P_webhook_http/drop"
check "fault drop (h1: no answer)" 52 "$RC"
ctl POST /faults '{"sim":"webhook","match":"/drop2","drop":true,"count":1}' >/dev/null
req --http2-prior-knowledge -d '{}' "http://127.0.0.1:$P_webhook_h2c/drop2"
like "fault drop (h2: stream reset)" '^(16|92|56)$' "$RC"
ctl POST /faults '{"sim":"webhook","match":"/slow","delay_ms":300,"count":1}' >/dev/null
took=$(curl -s -o /dev/null -w '%{time_total}' -d '{}' "http://127.0.0.1:$P_webhook_http/slow")
like "fault delay_ms" '^0\.[3-9]|^[1-9]' "$took"
ctl POST /faults '{"sim":"webhook","match":"/held","delay_ms":60000}' >/dev/null
curl -s -o /dev/null --max-time 0.3 -d '{}' "http://127.0.0.1:$P_webhook_http/held"
curl -s -o /dev/null --max-time 0.3 --http2-prior-knowledge -d '{}' "http://127.0.0.1:$P_webhook_h2c/held"
sleep 0.1
check "held request whose client left -> 499" "2 true" "$(ctl GET /stats | j 'j.sims.webhook.status["499"]+" "+(Object.values(j.sims.webhook.status).reduce((a,b)=>a+b)===j.sims.webhook.requests)')"
check "faults listed" 5 "$(ctl GET /faults | j 'j.faults.length')"
ctl DELETE /faults >/dev/null
check "faults cleared" 0 "$(ctl GET /faults | j 'j.faults.length')"

# ---------------------------------------------------------------- apns
echo "== apns"
TOK=$(printf '0123456789abcdef%.0s' 1 2 3 4)
JWT=$(client apns-jwt --keys "$keys")
A="https://127.0.0.1:$P_apns/3/device"
apns() { req "${H2[@]}" -H 'apns-topic: com.example.app' -H 'apns-push-type: alert' "$@"; }
AUTH=(-H "authorization: bearer $JWT")
PAY='{"aps":{"alert":{"title":"Hi","body":"there"}}}'
id=$(j 'require("crypto").randomUUID()' <<<'{}')
hdr=$(curl -s -D - -o /dev/null "${H2[@]}" -H 'apns-topic: com.example.app' -H 'apns-push-type: alert' "${AUTH[@]}" -H "apns-id: $id" -d "$PAY" "$A/$TOK" | tr -d '\r')
like "apns 200" '^HTTP/2 200' "$hdr"
like "apns echoes apns-id" "apns-id: $id" "$hdr"
apns -d "$PAY" "$A/$TOK"
check "apns missing token" "403 MissingProviderToken" "$STATUS $(j 'j.reason' <<<"$BODY")"
apns -H "authorization: bearer $(client apns-jwt --keys "$keys" --key "$keys/vapid.pem")" -d "$PAY" "$A/$TOK"
check "apns wrong signing key" "403 InvalidProviderToken" "$STATUS $(j 'j.reason' <<<"$BODY")"
apns -H "authorization: bearer $(client apns-jwt --keys "$keys" --kid ZZZ123ZZZZ)" -d "$PAY" "$A/$TOK"
check "apns wrong kid" "403 InvalidProviderToken" "$STATUS $(j 'j.reason' <<<"$BODY")"
apns -H "authorization: bearer $(client apns-jwt --keys "$keys" --team XXX999XXXX)" -d "$PAY" "$A/$TOK"
check "apns wrong team" "403 InvalidProviderToken" "$STATUS $(j 'j.reason' <<<"$BODY")"
apns -H "authorization: bearer $(client apns-jwt --keys "$keys" --age 3700)" -d "$PAY" "$A/$TOK"
check "apns token older than an hour" "403 ExpiredProviderToken" "$STATUS $(j 'j.reason' <<<"$BODY")"
apns "${AUTH[@]}" -d "$PAY" "$A/not-a-token"
check "apns bad device token" "400 BadDeviceToken" "$STATUS $(j 'j.reason' <<<"$BODY")"
req "${H2[@]}" "${AUTH[@]}" -d "$PAY" "$A/$TOK"
check "apns missing topic" "400 MissingTopic" "$STATUS $(j 'j.reason' <<<"$BODY")"
req "${H2[@]}" "${AUTH[@]}" -H 'apns-topic: com.other.app' -d "$PAY" "$A/$TOK"
check "apns wrong topic" "400 DeviceTokenNotForTopic" "$STATUS $(j 'j.reason' <<<"$BODY")"
req "${H2[@]}" "${AUTH[@]}" -H 'apns-topic: com.example.app' -H 'apns-push-type: background' -d '{"aps":{"content-available":1}}' "$A/$TOK"
check "apns background needs priority 5" "400 BadPriority" "$STATUS $(j 'j.reason' <<<"$BODY")"
req "${H2[@]}" "${AUTH[@]}" -H 'apns-topic: com.example.app' -H 'apns-push-type: background' -H 'apns-priority: 5' -d '{"aps":{"content-available":1}}' "$A/$TOK"
check "apns background priority 5" 200 "$STATUS"
req "${H2[@]}" "${AUTH[@]}" -H 'apns-topic: com.example.app.voip' -H 'apns-push-type: voip' -d "$PAY" "$A/$TOK"
check "apns voip topic suffix" 200 "$STATUS"
apns "${AUTH[@]}" -H 'apns-priority: 7' -d "$PAY" "$A/$TOK"
check "apns bad priority" "400 BadPriority" "$STATUS $(j 'j.reason' <<<"$BODY")"
apns "${AUTH[@]}" -H 'apns-id: NOT-A-UUID' -d "$PAY" "$A/$TOK"
check "apns bad apns-id" "400 BadMessageId" "$STATUS $(j 'j.reason' <<<"$BODY")"
apns "${AUTH[@]}" -H "apns-collapse-id: $(printf 'x%.0s' {1..65})" -d "$PAY" "$A/$TOK"
check "apns collapse id > 64 bytes" "400 BadCollapseId" "$STATUS $(j 'j.reason' <<<"$BODY")"
apns "${AUTH[@]}" -H 'apns-expiration: soon' -d "$PAY" "$A/$TOK"
check "apns bad expiration" "400 BadExpirationDate" "$STATUS $(j 'j.reason' <<<"$BODY")"
apns "${AUTH[@]}" -H 'apns-topic: com.example.app' -d "$PAY" "$A/$TOK"
check "apns duplicate header" "400 DuplicateHeaders" "$STATUS $(j 'j.reason' <<<"$BODY")"
apns "${AUTH[@]}" -X POST "$A/$TOK"
check "apns empty payload" "400 PayloadEmpty" "$STATUS $(j 'j.reason' <<<"$BODY")"
big=$(j 'JSON.stringify({aps:{alert:"x".repeat(4100)}})' <<<'{}')
apns "${AUTH[@]}" -d "$big" "$A/$TOK"
check "apns payload > 4096" "413 PayloadTooLarge" "$STATUS $(j 'j.reason' <<<"$BODY")"
ctl POST /config "{\"apns\":{\"unregistered\":[\"$TOK\"]}}" >/dev/null
apns "${AUTH[@]}" -d "$PAY" "$A/$TOK"
check "apns unregistered -> 410" "410 Unregistered" "$STATUS $(j 'j.reason' <<<"$BODY")"
like "apns 410 has timestamp" '^[0-9]{13}$' "$(j 'j.timestamp' <<<"$BODY")"
ctl POST /config '{"apns":{"unregistered":[]}}' >/dev/null
curl -s -o /dev/null --http1.1 "${CA[@]}" -d "$PAY" "$A/$TOK"
check "apns refuses HTTP/1.1" 1 "$(($? != 0))"
ctl POST /faults '{"sim":"apns","match":"'"$TOK"'","status":503,"count":1}' >/dev/null
apns "${AUTH[@]}" -d "$PAY" "$A/$TOK"
check "apns fault default body" "503 ServiceUnavailable" "$STATUS $(j 'j.reason' <<<"$BODY")"
before=$(ctl GET /stats | j 'j.sims.apns.premature_streams')
client apns-burst --keys "$keys" --port "$P_apns" --token "$TOK" --count 3 >/dev/null
after=$(ctl GET /stats | j 'j.sims.apns.premature_streams')
like "apns premature streams detected" '^[1-9]' "$((after - before))"
client apns-burst --keys "$keys" --port "$P_apns" --token "$TOK" --count 3 --warm >"$tmp/burst"; echo >>"$tmp/burst"
check "apns warmed-up burst is clean" "$after" "$(ctl GET /stats | j 'j.sims.apns.premature_streams')"
check "apns warmed-up burst all 200" 4 "$(grep -c '^200' "$tmp/burst")"
check "apns log has jwt claims" DEF123GHIJ "$(lastlog apns | j 'j.jwt.iss')"

# ---------------------------------------------------------------- fcm
echo "== fcm"
F="https://127.0.0.1:$P_fcm"
TOKEN_URI="$F/token"
token() { req "${H2[@]}" --data-urlencode 'grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer' --data-urlencode "assertion=$1" "$TOKEN_URI"; }
token "$(client fcm-assertion --keys "$keys" --aud "$TOKEN_URI")"
check "fcm token endpoint" 200 "$STATUS"
AT=$(j 'j.access_token' <<<"$BODY")
like "fcm access token" '^ya29\.' "$AT"
check "fcm expires_in" 3599 "$(j 'j.expires_in' <<<"$BODY")"
token "$(client fcm-assertion --keys "$keys" --aud "https://localhost:$P_fcm/token")"
check "fcm aud with localhost" 200 "$STATUS"
token "$(client fcm-assertion --keys "$keys" --aud https://oauth2.googleapis.com/token)"
check "fcm wrong aud" "400 invalid_grant" "$STATUS $(j 'j.error' <<<"$BODY")"
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$tmp/other.key" 2>/dev/null
token "$(client fcm-assertion --keys "$keys" --aud "$TOKEN_URI" --key "$tmp/other.key")"
check "fcm bad assertion signature" "400 invalid_grant" "$STATUS $(j 'j.error' <<<"$BODY")"
token "$(client fcm-assertion --keys "$keys" --aud "$TOKEN_URI" --scope https://www.googleapis.com/auth/userinfo.email)"
check "fcm wrong scope" "400 invalid_scope" "$STATUS $(j 'j.error' <<<"$BODY")"
token "$(client fcm-assertion --keys "$keys" --aud "$TOKEN_URI" --lifetime 7200)"
check "fcm assertion lifetime > 1h" "400 invalid_grant" "$STATUS $(j 'j.error' <<<"$BODY")"
S="$F/v1/projects/notify-test/messages:send"
send() { req "${H2[@]}" -H "authorization: Bearer $AT" -H 'content-type: application/json' -d "$1" "${2:-$S}"; }
send '{"message":{"token":"fcm-token-1","notification":{"title":"Hi","body":"there"},"data":{"k":"v"},"android":{"ttl":"3600s","priority":"high"}}}'
check "fcm send" 200 "$STATUS"
like "fcm message name" '^projects/notify-test/messages/0:[0-9]+%[0-9a-f]+$' "$(j 'j.name' <<<"$BODY")"
send '{"message":{"token":"fcm-token-1","data":{"n":1}}}'
check "fcm non-string data" "400 INVALID_ARGUMENT" "$STATUS $(j 'j.error.status' <<<"$BODY")"
check "fcm non-string data detail" "type.googleapis.com/google.rpc.BadRequest message.data[0].value" "$(j 'j.error.details[0]["@type"]+" "+j.error.details[0].fieldViolations[0].field' <<<"$BODY")"
send '{"message":{"token":"fcm-token-1","topic":"news"}}'
check "fcm two targets" 400 "$STATUS"
send '{"message":{"notification":{"title":"x"}}}'
check "fcm no target" "400 INVALID_ARGUMENT" "$STATUS $(j 'j.error.details[0].errorCode' <<<"$BODY")"
send '{"message":{"token":"fcm-token-1","colour":"red"}}'
check "fcm unknown field" "400 INVALID_ARGUMENT" "$STATUS $(j 'j.error.status' <<<"$BODY")"
send '{"message":{"token":"fcm-token-1","android":{"ttl":3600}}}'
check "fcm android.ttl must be a duration string" 400 "$STATUS"
send "{\"message\":{\"token\":\"fcm-token-1\",\"data\":{\"big\":\"$(printf 'x%.0s' {1..4100})\"}}}"
check "fcm payload > 4096" 400 "$STATUS"
ctl POST /config '{"fcm":{"unregistered":["fcm-gone"]}}' >/dev/null
send '{"message":{"token":"fcm-gone","notification":{"title":"x"}}}'
check "fcm unregistered" "404 NOT_FOUND UNREGISTERED" "$STATUS $(j 'j.error.status+" "+j.error.details[0].errorCode' <<<"$BODY")"
check "fcm FcmError type" "type.googleapis.com/google.firebase.fcm.v1.FcmError" "$(j 'j.error.details[0]["@type"]' <<<"$BODY")"
send '{"message":{"token":"fcm-token-1"}}' "$F/v1/projects/other-project/messages:send"
check "fcm wrong project" "403 PERMISSION_DENIED" "$STATUS $(j 'j.error.status' <<<"$BODY")"
check "fcm http/1.1 works" 200 "$(curl -s -o /dev/null -w '%{http_code}' --http1.1 "${CA[@]}" -H "authorization: Bearer $AT" -d '{"message":{"topic":"news","data":{"a":"b"}}}' "$S")"
req "${H2[@]}" -H 'authorization: Bearer ya29.forged' -d '{"message":{"token":"t"}}' "$S"
check "fcm unknown access token" "401 UNAUTHENTICATED" "$STATUS $(j 'j.error.status' <<<"$BODY")"
ctl POST /config '{"fcm":{"revoke_tokens":true,"expires_in":5}}' >/dev/null
send '{"message":{"token":"fcm-token-1","data":{"a":"b"}}}'
check "fcm revoked token -> 401" "401 UNAUTHENTICATED" "$STATUS $(j 'j.error.status' <<<"$BODY")"
token "$(client fcm-assertion --keys "$keys" --aud "$TOKEN_URI")"
check "fcm configurable expires_in" 5 "$(j 'j.expires_in' <<<"$BODY")"
AT=$(j 'j.access_token' <<<"$BODY")
send '{"message":{"token":"fcm-token-1","data":{"a":"b"}}}'
check "fcm new token works" 200 "$STATUS"

# ---------------------------------------------------------------- twilio
echo "== twilio"
SID=AC0123456789abcdef0123456789abcdef
TW="https://127.0.0.1:$P_twilio/2010-04-01/Accounts/$SID/Messages.json"
sms() { req "${CA[@]}" -u "$SID:f0e1d2c3b4a5968778695a4b3c2d1e0f" "$@" "$TW"; }
sms --data-urlencode 'To=+15551230001' --data-urlencode 'From=+15557654321' --data-urlencode 'Body=Hello from notify' \
    --data-urlencode "StatusCallback=http://127.0.0.1:$P_webhook_http/twilio-status"
check "twilio send 201" 201 "$STATUS"
like "twilio sid" '^SM[0-9a-f]{32}$' "$(j 'j.sid' <<<"$BODY")"
check "twilio status/segments/error_code" 'queued 1 null' "$(j 'j.status+" "+j.num_segments+" "+j.error_code' <<<"$BODY")"
sms --data-urlencode 'To=+15551230001' --data-urlencode 'From=+15557654321' --data-urlencode "Body=$(printf 'a%.0s' {1..161})"
check "twilio GSM-7 161 chars = 2 segments" 2 "$(j 'j.num_segments' <<<"$BODY")"
sms --data-urlencode 'To=+15551230001' --data-urlencode 'From=+15557654321' --data-urlencode "Body=$(printf 'ж%.0s' {1..71})"
check "twilio UCS-2 71 chars = 2 segments" 2 "$(j 'j.num_segments' <<<"$BODY")"
sms --data-urlencode 'To=+15551230001' --data-urlencode 'MessagingServiceSid=MG0123456789abcdef0123456789abcdef' --data-urlencode 'Body=hi'
check "twilio messaging service -> accepted" "201 accepted" "$STATUS $(j 'j.status' <<<"$BODY")"
req "${CA[@]}" -u "$SID:wrong" --data-urlencode 'To=+15551230001' --data-urlencode 'From=+15557654321' --data-urlencode 'Body=x' "$TW"
check "twilio bad auth" "401 20003" "$STATUS $(j 'j.code' <<<"$BODY")"
like "twilio error more_info" 'https://www.twilio.com/docs/errors/20003' "$BODY"
req "${CA[@]}" -u "SK0123456789abcdef0123456789abcdef:sim-api-key-secret" --data-urlencode 'To=+15551230001' --data-urlencode 'From=+15557654321' --data-urlencode 'Body=x' "$TW"
check "twilio API key auth" 201 "$STATUS"
sms --data-urlencode 'To=555-1234' --data-urlencode 'From=+15557654321' --data-urlencode 'Body=x'
check "twilio To not E.164" "400 21211" "$STATUS $(j 'j.code' <<<"$BODY")"
sms --data-urlencode 'From=+15557654321' --data-urlencode 'Body=x'
check "twilio To missing" "400 21604" "$STATUS $(j 'j.code' <<<"$BODY")"
sms --data-urlencode 'To=+15551230001' --data-urlencode 'From=+15557654321'
check "twilio Body missing" "400 21602" "$STATUS $(j 'j.code' <<<"$BODY")"
ctl POST /config '{"twilio":{"stopped":["+15550000001"],"landline":["+15550000002"]}}' >/dev/null
sms --data-urlencode 'To=+15550000001' --data-urlencode 'From=+15557654321' --data-urlencode 'Body=x'
check "twilio STOPped recipient" "400 21610" "$STATUS $(j 'j.code' <<<"$BODY")"
sms --data-urlencode 'To=+15550000002' --data-urlencode 'From=+15557654321' --data-urlencode 'Body=x'
check "twilio landline" "400 21614" "$STATUS $(j 'j.code' <<<"$BODY")"
sleep 0.2
cb=$(ctl GET '/log?sim=webhook' | j 'j.entries.filter(e=>e.path==="/twilio-status").map(e=>new URLSearchParams(e.body).get("MessageStatus")).join(",")')
check "twilio status callbacks" "sent,delivered" "$cb"
cbh=$(ctl GET '/log?sim=webhook' | j 'j.entries.filter(e=>e.path==="/twilio-status")[0].headers["x-twilio-signature"]')
like "twilio callback signed" '^[A-Za-z0-9+/]{27}=$' "$cbh"

# ---------------------------------------------------------------- webpush
echo "== webpush"
check "RFC 8291 appendix A vector" ok "$(client rfc8291-vector)"
req "${CA[@]}" -X POST "https://127.0.0.1:$P_webpush/subscribe"
check "webpush subscribe" 201 "$STATUS"
SUB=$BODY
check "webpush subscription shape" "87 22" "$(j 'j.keys.p256dh.length+" "+j.keys.auth.length' <<<"$SUB")"
EP=$(j 'j.endpoint' <<<"$SUB")
like "webpush endpoint" "^https://127.0.0.1:$P_webpush/push/" "$EP"
out=$(client webpush-send --keys "$keys" --sub "$SUB" --text '{"title":"Hello","body":"wörld"}' --urgency high --topic news1)
check "webpush send 201" 201 "${out%% *}"
entry=$(lastlog webpush)
check "webpush decrypted plaintext" '{"title":"Hello","body":"wörld"}' "$(j 'j.plaintext' <<<"$entry")"
check "webpush vapid sub logged" "mailto:ops@example.com" "$(j 'j.vapid.sub' <<<"$entry")"
check "webpush no TTL -> 400" 400 "$(client webpush-send --keys "$keys" --sub "$SUB" --text x --no-ttl | cut -d' ' -f1)"
check "webpush bad urgency -> 400" 400 "$(client webpush-send --keys "$keys" --sub "$SUB" --text x --urgency asap | cut -d' ' -f1)"
check "webpush wrong aud -> 401" 401 "$(client webpush-send --keys "$keys" --sub "$SUB" --text x --aud https://push.example.net | cut -d' ' -f1)"
check "webpush bad sub claim -> 401" 401 "$(client webpush-send --keys "$keys" --sub "$SUB" --text x --sub-claim ops@example.com | cut -d' ' -f1)"
check "webpush corrupted body -> 400" 400 "$(client webpush-send --keys "$keys" --sub "$SUB" --text x --corrupt | cut -d' ' -f1)"
VAPID=$(client vapid --keys "$keys" --aud "https://127.0.0.1:$P_webpush")
head -c 5000 /dev/urandom > "$tmp/big.bin"
req "${H2[@]}" -H "authorization: $VAPID" -H 'ttl: 60' -H 'content-encoding: aes128gcm' --data-binary "@$tmp/big.bin" "$EP"
check "webpush body > 4096 -> 413" 413 "$STATUS"
req "${H2[@]}" -H 'ttl: 60' -X POST "$EP"
check "webpush no VAPID -> 401" 401 "$STATUS"
req "${H2[@]}" -H "authorization: $VAPID" -H 'ttl: 0' -X POST "$EP"
check "webpush without payload" 201 "$STATUS"
req "${CA[@]}" -H 'content-type: application/json' -d "{\"applicationServerKey\":\"$(cat "$keys/vapid.pub.b64url")\"}" "https://127.0.0.1:$P_webpush/subscribe"
RSUB=$BODY
check "webpush restricted sub, right key" 201 "$(client webpush-send --keys "$keys" --sub "$RSUB" --text x | cut -d' ' -f1)"
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$tmp/other-vapid.pem" 2>/dev/null
check "webpush restricted sub, other key -> 403" 403 "$(client webpush-send --keys "$keys" --sub "$RSUB" --text x --key "$tmp/other-vapid.pem" | cut -d' ' -f1)"
ctl POST /config "{\"webpush\":{\"expire\":[\"$EP\"]}}" >/dev/null
check "webpush expired subscription -> 410" 410 "$(client webpush-send --keys "$keys" --sub "$SUB" --text x | cut -d' ' -f1)"
req "${H2[@]}" -H "authorization: $VAPID" -H 'ttl: 60' -X POST "https://127.0.0.1:$P_webpush/push/unknown"
check "webpush unknown subscription -> 404" 404 "$STATUS"

# ---------------------------------------------------------------- smtp
echo "== smtp"
msg() {
  printf '%s\r\n' "Date: $(date -R)" "Message-ID: <$1@notify.test>" "From: Notify <noreply@notify.test>" \
    "To: <$2>" "Subject: =?UTF-8?B?$(printf 'Grüße' | base64)?=" "MIME-Version: 1.0" \
    "Content-Type: text/plain; charset=utf-8" "Content-Transfer-Encoding: 8bit" "" "Hello ${2%@*}" ".leading dot" "bye"
}
msg m1 alice@example.com > "$tmp/m1.eml"
curl -s --ssl-reqd "${CA[@]}" -u notify:secret-pass --mail-from noreply@notify.test --mail-rcpt alice@example.com \
  -T "$tmp/m1.eml" "smtp://localhost:$P_smtp"
check "smtp STARTTLS + AUTH + send" 0 "$?"
entry=$(lastlog smtp message)
check "smtp envelope" "noreply@notify.test alice@example.com" "$(j 'j.mail_from+" "+j.rcpt.join(",")' <<<"$entry")"
check "smtp tls/starttls/auth logged" "true true notify" "$(j 'j.tls+" "+j.starttls+" "+j.auth_user' <<<"$entry")"
check "smtp subject decoded (RFC 2047)" "Grüße" "$(j 'j.subject' <<<"$entry")"
check "smtp no problems" "[]" "$(j 'j.problems' <<<"$entry")"
check "smtp dot-unstuffing" ".leading dot" "$(j 'j.text.split("\r\n")[1]' <<<"$entry")"
curl -s "${CA[@]}" -u notify:secret-pass --mail-from noreply@notify.test --mail-rcpt bob@example.com \
  -T "$tmp/m1.eml" "smtps://localhost:$P_smtps"
check "smtps implicit TLS send" 0 "$?"
check "smtps logged without starttls" "smtps true false" "$(lastlog smtp message | j 'j.port+" "+j.tls+" "+j.starttls')"
curl -s --ssl-reqd "${CA[@]}" -u notify:wrong --mail-from noreply@notify.test --mail-rcpt alice@example.com \
  -T "$tmp/m1.eml" "smtp://localhost:$P_smtp"
check "smtp bad password (curl 67)" 67 "$?"
ctl POST /config '{"smtp":{"bouncing":["ghost@example.com"],"greylisted":["slow@example.com"]}}' >/dev/null
curl -s --ssl-reqd "${CA[@]}" -u notify:secret-pass --mail-from noreply@notify.test --mail-rcpt ghost@example.com \
  -T "$tmp/m1.eml" "smtp://localhost:$P_smtp"
check "smtp bouncing rcpt (curl 55)" 55 "$?"
check "smtp bounce is 550 5.1.1" "550" "$(lastlog smtp reply | j 'j.code+(j.text.startsWith("5.1.1")?"":" wrong text")')"
curl -s --ssl-reqd "${CA[@]}" -u notify:secret-pass --mail-from noreply@notify.test --mail-rcpt slow@example.com \
  -T "$tmp/m1.eml" "smtp://localhost:$P_smtp"
check "smtp greylisted first try fails" 55 "$?"
check "smtp greylist is 451 4.7.1" "451" "$(lastlog smtp reply | j 'j.code+(j.text.startsWith("4.7.1")?"":" wrong text")')"
curl -s --ssl-reqd "${CA[@]}" -u notify:secret-pass --mail-from noreply@notify.test --mail-rcpt slow@example.com \
  -T "$tmp/m1.eml" "smtp://localhost:$P_smtp"
check "smtp greylisted retry passes" 0 "$?"
ctl POST /faults '{"sim":"smtp","stage":"data","match":"carol@","code":452,"count":1}' >/dev/null
curl -s --ssl-reqd "${CA[@]}" -u notify:secret-pass --mail-from noreply@notify.test --mail-rcpt carol@example.com \
  -T "$tmp/m1.eml" "smtp://localhost:$P_smtp"
check "smtp fault at data stage (curl 8: reply after DATA not 250)" 8 "$?"
check "smtp fault code logged" 452 "$(lastlog smtp reply | j 'j.code')"
out=$(client smtp-chat --port "$P_smtp" "EHLO client.test" "AUTH PLAIN $(printf '\0notify\0secret-pass' | base64)" "MAIL FROM:<a@b.c>" QUIT)
like "smtp AUTH before STARTTLS -> 530" '530 5\.7\.0 Must issue a STARTTLS command first' "$out"
like "smtp MAIL before STARTTLS -> 530" '530 5\.7\.0 Must issue a STARTTLS command first.*221' "$(tr '\n' ' ' <<<"$out")"
out=$(client smtp-chat --port "$P_smtp" --ca "$keys/ca.pem" "EHLO client.test" STARTTLS "EHLO client.test" "AUTH LOGIN" \
  "$(printf notify | base64)" "$(printf secret-pass | base64)" \
  "MAIL FROM:<noreply@notify.test>" "RCPT TO:<dave@example.com>" DATA "Subject: bare" "" "no headers" "." \
  "MAIL FROM:<noreply@notify.test>" "RCPT TO:<erin@example.com>" DATA "Subject: two" "" "second" "..dotted" "." QUIT)
like "smtp AUTH LOGIN over STARTTLS" '235 2\.7\.0' "$out"
check "smtp two messages queued" 2 "$(grep -c '^250 2.0.0 OK: queued' <<<"$out")"
msgs=$(ctl GET '/log?sim=smtp&event=message&tail=2')
check "smtp connection reuse (same conn, index 1,2)" "true 1,2" "$(j 'String(j.entries[0].conn===j.entries[1].conn)+" "+j.entries.map(e=>e.message_index).join(",")' <<<"$msgs")"
like "smtp missing headers reported" 'missing date header.*missing message-id header' "$(j 'j.entries[0].problems.join(";")' <<<"$msgs")"
check "smtp dot-unstuffing (chat)" ".dotted" "$(j 'j.entries[1].text.split("\r\n")[1]' <<<"$msgs")"
like "smtp EHLO advertises STARTTLS, not AUTH, before TLS" 'STARTTLS' "$(client smtp-chat --port "$P_smtp" "EHLO x" QUIT | grep -v AUTH | tr '\n' ' ')"

# ---------------------------------------------------------------- control
echo "== control"
stats=$(ctl GET /stats)
check "stats per sim" "webhook,apns,fcm,twilio,webpush,smtp" "$(j 'Object.keys(j.sims).join(",")' <<<"$stats")"
check "no internal errors" 0 "$(j 'j.internal_errors' <<<"$stats")"
like "config rejects unknown setting" 'unknown setting' "$(ctl POST /config '{"apns":{"topik":"x"}}')"
like "fault rejects junk" 'unknown fault field' "$(ctl POST /faults '{"sim":"apns","stauts":500}')"
seq_before=$(ctl GET /stats | j 'j.log.last_seq')
ctl POST /reset >/dev/null
check "reset clears log" 0 "$(ctl GET "/log?since=0" | j 'j.entries.length')"
check "reset restores settings" '[]' "$(ctl GET /config | j 'j.smtp.bouncing')"
check "log seq keeps growing" 1 "$(($(ctl GET /stats | j 'j.log.last_seq') >= seq_before))"
like "log file written" '"sim":"smtp"' "$(tail -n 50 "$tmp/log.jsonl")"
kill -TERM "$simpid"
wait "$simpid"
check "SIGTERM exits 0" 0 "$?"
simpid=
check "state file removed on exit" 0 "$([[ -e $tmp/state.json ]] && echo 1 || echo 0)"

echo "== $pass passed, $fail failed"
((fail == 0))
