#!/usr/bin/env bash
# Runs every provider end to end against the simulators under valgrind
# (memcheck, full leak check): success paths and the main failure paths.
# Fails on any memory error or any definitely/indirectly lost block.
#
#   bash test/unit/valgrind.sh
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
WORK=$(mktemp -d /tmp/notify-vg.XXXXXX)
SIM_PID=
cleanup() {
	[ -n "$SIM_PID" ] && kill "$SIM_PID" 2>/dev/null || true
	rm -rf "$WORK"
}
trap cleanup EXIT

make -s -C "$HERE" deliver >/dev/null
bash "$ROOT/test/sim/keys.sh" "$WORK/keys" >/dev/null
node "$ROOT/test/sim/sim.js" --keys "$WORK/keys" --state "$WORK/state.json" --quiet &
SIM_PID=$!
for _ in $(seq 1 100); do [ -s "$WORK/state.json" ] && break; sleep 0.1; done
CONTROL=$(node -e "console.log(require('$WORK/state.json').ports.control)")
ctl() { curl -s -X "$1" "http://127.0.0.1:$CONTROL$2" -H 'content-type: application/json' ${3:+-d "$3"} >/dev/null; }

# provider configs and messages, from the simulator's ports and keys
node - "$WORK" <<'EOF'
const fs = require('fs');
const dir = process.argv[2];
const st = JSON.parse(fs.readFileSync(`${dir}/state.json`));
const p = st.ports, k = `${dir}/keys`, ca = `${k}/ca.pem`;
const read = (f) => fs.readFileSync(`${k}/${f}`, 'utf8');
const w = (name, obj) => fs.writeFileSync(`${dir}/${name}.json`, JSON.stringify(obj));
w('apns', { team_id: 'DEF123GHIJ', key_id: 'ABC123DEFG', key: read('apns.p8'), topic: 'com.example.app',
	endpoint: `https://127.0.0.1:${p.apns}`, ca_file: ca });
w('fcm', { service_account: JSON.parse(read('fcm-sa.json')), endpoint: `https://127.0.0.1:${p.fcm}`,
	token_uri: `https://127.0.0.1:${p.fcm}/token`, ca_file: ca });
w('webpush', { vapid_private_key: read('vapid.pem'), subject: 'mailto:ops@example.com', ca_file: ca });
w('twilio', { account_sid: 'AC0123456789abcdef0123456789abcdef', auth_token: 'f0e1d2c3b4a5968778695a4b3c2d1e0f',
	from: '+15005550006', endpoint: `https://127.0.0.1:${p.twilio}`, ca_file: ca });
w('smtp', { endpoint: `smtp://127.0.0.1:${p.smtp}`, username: 'notify', password: 'secret-pass',
	from: 'shop@example.com', from_name: 'Shop', unsubscribe_url: 'https://example.com/u?r={{recipient}}', ca_file: ca });
w('webhook', { endpoint: `https://127.0.0.1:${p.webhook_https}/hook`, secret: 's3cret', ca_file: ca });
w('push', { title: 'Order shipped', body: 'On its way', badge: 1, data: { order: 42 }, collapse_id: 'o42' });
w('sms', { body: 'Order 42 shipped' });
w('mail', { subject: 'Grüße: order 42', text: 'Hello', html: '<p>Hello</p>' });
w('hook', { body: { event: 'order.shipped', order: 42 } });
EOF
SUB=$(curl -s -X POST "http://127.0.0.1:$CONTROL/webpush/subscribe")

status=0
run() {
	local name=$1; shift
	local expect=$1; shift
	local out="$WORK/$name.vg"
	set +e
	valgrind --quiet --leak-check=full --errors-for-leak-kinds=definite,indirect \
		--error-exitcode=99 --log-file="$out" "$HERE/deliver" "$@" >"$WORK/$name.out" 2>&1
	local rc=$?
	set -e
	if [ $rc -eq 99 ] || [ -s "$out" ]; then
		echo "FAIL $name: valgrind found errors"; cat "$out"; status=1
	elif [ "$expect" = sent ] && [ $rc -ne 0 ]; then
		echo "FAIL $name: not sent"; cat "$WORK/$name.out"; status=1
	else
		echo "ok   $name ($(tail -1 "$WORK/$name.out"))"
	fi
}

run apns sent apns "$WORK/apns.json" "$WORK/push.json" "$(printf 'a1%.0s' {1..32})" 20
run fcm sent fcm "$WORK/fcm.json" "$WORK/push.json" "fcm-token-0123456789abcdefghij:APA91b" 20
run webpush sent webpush "$WORK/webpush.json" "$WORK/push.json" "$SUB" 5
run twilio sent twilio "$WORK/twilio.json" "$WORK/sms.json" "+14155550100" 5
run smtp sent smtp "$WORK/smtp.json" "$WORK/mail.json" "ada@example.com" 3
run webhook sent webhook "$WORK/webhook.json" "$WORK/hook.json" "" 20

# failure paths: rejected tokens, bounces, provider errors, dropped streams
ctl POST /config '{"apns": {"unregistered": ["b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2"]}}'
run apns-unregistered failed apns "$WORK/apns.json" "$WORK/push.json" "$(printf 'b2%.0s' {1..32})" 2
ctl POST /faults '{"sim": "fcm", "status": 503, "headers": {"retry-after": "1"}, "count": 3}'
run fcm-503 failed fcm "$WORK/fcm.json" "$WORK/push.json" "fcm-token-0123456789abcdefghij:APA91b" 3
ctl POST /faults '{"sim": "smtp", "stage": "rcpt", "code": 550, "count": 1}'
run smtp-bounce failed smtp "$WORK/smtp.json" "$WORK/mail.json" "gone@example.com" 1
ctl POST /faults '{"sim": "webhook", "drop": true, "count": 5}'
run webhook-drop failed webhook "$WORK/webhook.json" "$WORK/hook.json" "" 10
run twilio-bad-number failed twilio "$WORK/twilio.json" "$WORK/sms.json" "12345" 1

exit $status
