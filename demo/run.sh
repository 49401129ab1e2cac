#!/usr/bin/env bash
# notify demo: builds and installs notify, starts a throwaway PostgreSQL
# cluster with notify preloaded and the local provider simulators (APNS,
# FCM, Web Push, Twilio, SMTP, webhook) on 127.0.0.1, then sends order
# notifications from a trigger on an application table and shows what
# happened, from psql's point of view and from the providers'.
#
# Everything it starts is stopped and removed when it ends.
#   bash demo/run.sh            (as root, or a user who can install into PostgreSQL)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

bash test/deps.sh
export PATH="$(pg_config --bindir):$PATH"

echo "== building and installing notify"
make -s -j2 >/dev/null
make -s install >/dev/null

WORK=$(mktemp -d /tmp/notify-demo.XXXXXX)
chmod 755 "$WORK"
PORT=$((20000 + RANDOM % 20000))
SIM_PID=
run_pg() {
	if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}
cleanup() {
	[ -n "$SIM_PID" ] && kill "$SIM_PID" 2>/dev/null || true
	run_pg pg_ctl -D "$WORK/data" -m fast stop >/dev/null 2>&1 || true
	rm -rf "$WORK"
}
trap cleanup EXIT

echo "== starting the provider simulators on 127.0.0.1"
bash test/sim/keys.sh "$WORK/keys" >/dev/null
chmod -R a+rX "$WORK/keys"
node test/sim/sim.js --keys "$WORK/keys" --state "$WORK/sim.json" --quiet &
SIM_PID=$!
for _ in $(seq 1 100); do [ -s "$WORK/sim.json" ] && break; sleep 0.1; done
port() { node -e "console.log(require('$WORK/sim.json').ports['$1'])"; }

echo "== starting a throwaway PostgreSQL cluster on port $PORT"
[ "$(id -u)" -eq 0 ] && chown postgres "$WORK"
run_pg initdb -D "$WORK/data" -A trust -U postgres >/dev/null
cat >> "$WORK/data/postgresql.conf" <<EOF
port = $PORT
listen_addresses = ''
unix_socket_directories = '$WORK'
shared_preload_libraries = 'notify'
notify.database = 'postgres'
notify.poll_interval = '500ms'
notify.backoff_base = '500ms'
EOF
run_pg pg_ctl -D "$WORK/data" -l "$WORK/server.log" -w start >/dev/null
psql_() { psql -X -q -v ON_ERROR_STOP=1 -h "$WORK" -p "$PORT" -U postgres -d postgres "$@"; }

SUB=$(curl -s -X POST "http://127.0.0.1:$(port control)/webpush/subscribe")

echo "== configuring providers, recipients, devices and templates"
psql_ \
	-v apns_key="$(cat "$WORK/keys/apns.p8")" \
	-v vapid_key="$(cat "$WORK/keys/vapid.pem")" \
	-v fcm_sa="$(cat "$WORK/keys/fcm-sa.json")" \
	-v web_sub="$SUB" \
	-v ca="$WORK/keys/ca.pem" \
	-v apns="https://127.0.0.1:$(port apns)" \
	-v fcm="https://127.0.0.1:$(port fcm)" \
	-v twilio="https://127.0.0.1:$(port twilio)" \
	-v smtp="smtp://127.0.0.1:$(port smtp)" \
	-v hook="https://127.0.0.1:$(port webhook_https)/orders" <<'SQL'
CREATE EXTENSION notify;

-- providers: production endpoints are the defaults; here they point at the simulators
SELECT notify_set_provider('apns', 'apns', jsonb_build_object(
	'team_id', 'DEF123GHIJ', 'key_id', 'ABC123DEFG', 'key', :'apns_key',
	'topic', 'com.example.app', 'endpoint', :'apns', 'ca_file', :'ca'));
SELECT notify_set_provider('fcm', 'fcm', jsonb_build_object(
	'service_account', :'fcm_sa'::jsonb, 'endpoint', :'fcm', 'token_uri', :'fcm' || '/token', 'ca_file', :'ca'));
SELECT notify_set_provider('webpush', 'webpush', jsonb_build_object(
	'vapid_private_key', :'vapid_key', 'subject', 'mailto:ops@example.com', 'ca_file', :'ca'));
SELECT notify_set_provider('twilio', 'twilio', jsonb_build_object(
	'account_sid', 'AC0123456789abcdef0123456789abcdef', 'auth_token', 'f0e1d2c3b4a5968778695a4b3c2d1e0f',
	'from', '+15005550006', 'endpoint', :'twilio', 'ca_file', :'ca'));
SELECT notify_set_provider('smtp', 'smtp', jsonb_build_object(
	'endpoint', :'smtp', 'tls', 'starttls', 'username', 'notify', 'password', 'secret-pass',
	'from', 'shop@example.com', 'from_name', 'Example Shop',
	'unsubscribe_url', 'https://shop.example.com/unsubscribe?u={{recipient}}', 'ca_file', :'ca'));
SELECT notify_set_provider('webhook', 'webhook', jsonb_build_object(
	'endpoint', :'hook', 'secret', 'whsec-demo', 'ca_file', :'ca'));

SELECT notify_upsert_recipient('ada', email => 'ada@example.com', phone => '+14155550100',
	locale => 'en', attributes => '{"first_name": "Ada"}');
SELECT notify_upsert_recipient('grace', email => 'grace@example.com', phone => '+14155550101',
	locale => 'pt-BR', attributes => '{"first_name": "Grace"}');
SELECT notify_register_device('ada', 'ios', repeat('a1', 32));
SELECT notify_register_device('ada', 'web', :'web_sub');
SELECT notify_register_device('grace', 'android', 'fcm-demo-token-0123456789abcdefghij:APA91b');
SELECT notify_set_preference('grace', 'sms', false);     -- Grace does not want SMS

SELECT notify_put_template('order_shipped', 'push',
	'{"title": "Order {{order.id}} shipped", "body": "{{first_name}}, it arrives {{eta}}", "data": {"order_id": "{{order.id}}"}, "collapse_id": "order-{{order.id}}"}');
SELECT notify_put_template('order_shipped', 'push',
	'{"title": "Pedido {{order.id}} enviado", "body": "{{first_name}}, chega {{eta}}"}', locale => 'pt');
SELECT notify_put_template('order_shipped', 'sms', '{"body": "Order {{order.id}} shipped, arriving {{eta}}."}');
SELECT notify_put_template('order_shipped', 'email',
	'{"subject": "Your order {{order.id}} is on its way", "text": "Hi {{first_name}}, it arrives {{eta}}.", "html": "<p>Hi {{first_name}},</p><p>your order <b>{{order.id}}</b> arrives {{eta}}.</p>"}');
SELECT notify_put_template('order_event', 'webhook', '{"body": {"event": "order.shipped", "order": "{{order.id}}"}}');

-- the application's own table, and a trigger that notifies inside its transaction
CREATE TABLE orders (id bigint PRIMARY KEY, customer text NOT NULL, status text NOT NULL);
CREATE FUNCTION orders_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	IF NEW.status = 'shipped' AND OLD.status IS DISTINCT FROM 'shipped' THEN
		PERFORM notify_send(NEW.customer, 'order_shipped',
			jsonb_build_object('order', jsonb_build_object('id', NEW.id), 'eta', 'tomorrow'),
			category => 'orders', idempotency_key => 'order-shipped-' || NEW.id);
		PERFORM notify_send(NEW.customer, 'order_event',
			jsonb_build_object('order', jsonb_build_object('id', NEW.id)));
	END IF;
	RETURN NEW;
END $$;
CREATE TRIGGER orders_notify AFTER UPDATE OF status ON orders
	FOR EACH ROW EXECUTE FUNCTION orders_notify();
INSERT INTO orders VALUES (1001, 'ada', 'paid'), (1002, 'grace', 'paid'), (1003, 'ada', 'paid');
SQL

echo "== shipping orders 1001 and 1002 (committed) and 1003 (rolled back)"
psql_ <<'SQL'
UPDATE orders SET status = 'shipped' WHERE id IN (1001, 1002);
BEGIN;
UPDATE orders SET status = 'shipped' WHERE id = 1003;
ROLLBACK;
SQL

for _ in $(seq 1 100); do
	[ "$(psql_ -At -c 'SELECT count(*) FROM notify.outbox')" = 0 ] && break
	sleep 0.1
done

echo
echo "== what notify did (notify_status for every notification)"
psql_ -P pager=off <<'SQL'
SELECT n.id, n.recipient, n.template, s.channel, s.provider, s.destination, s.status, s.attempts, s.last_error
  FROM notify.notifications n, notify_status(n.id) s ORDER BY n.id, s.delivery_id;
\echo '== queue health (notify.queue_stats) and latency (notify.delivery_stats)'
SELECT provider, ready, in_flight, retrying, dead, lag, delivered_1m FROM notify.queue_stats;
SELECT provider, sent, failed, success_rate, round(p50_ms::numeric, 1) AS p50_ms, round(p99_ms::numeric, 1) AS p99_ms
  FROM notify.delivery_stats;
\echo '== the workers (notify_workers())'
SELECT provider, state, batches, delivered, failed FROM notify_workers() ORDER BY provider;
SQL

echo "== what the simulated providers received"
curl -s "http://127.0.0.1:$(port control)/log?limit=1000" | node -e '
let s = ""; process.stdin.on("data", d => s += d).on("end", () => {
  for (const e of JSON.parse(s).entries) {
    if (e.status === undefined) continue;   /* connection events, not requests */
    const what = e.sim === "smtp" ? `mail to ${(e.rcpt || []).join(",")} subject "${(e.headers || {}).subject || ""}"`
      : e.sim === "twilio" ? `SMS to ${(e.json || {}).To || e.to || ""}`
      : e.sim === "webpush" ? `decrypted: ${String(e.plaintext || "").slice(0, 70)}`
      : `${e.method} ${e.path}`;
    console.log(`  ${e.sim.padEnd(8)} ${String(e.status).padEnd(4)} ${what}`);
  }
});'
echo
echo "Order 1003 was rolled back: nothing was sent for it. Grace opted out of SMS: her SMS is 'suppressed'."
