#!/usr/bin/env bash
# keys.sh DIR -- test key material for the provider simulators (test/sim).
#
# Creates in DIR, once (an existing complete set is left alone):
#   ca.pem, ca.key            test CA (EC P-256), trusted by the C side via ca_file
#   server.pem, server.key    server certificate for localhost / 127.0.0.1 (SAN)
#   apns.p8, apns.pub.pem     APNS token key (EC P-256, PKCS#8), and its public key
#   fcm-sa.json               FCM service account (RSA 2048 PKCS#8 private key)
#   fcm-sa.pub.pem            its public key
#   vapid.pem, vapid.pub.pem  VAPID key (EC P-256, PKCS#8), and its public key
#   vapid.pub.b64url          VAPID public key, raw 65 bytes, base64url
#   vapid.key.b64url          VAPID private scalar, 32 bytes, base64url
# Needs bash and the openssl CLI only.  Quiet unless something fails.
set -euo pipefail

dir=${1:?usage: keys.sh DIR}
files=(ca.pem ca.key server.pem server.key apns.p8 apns.pub.pem fcm-sa.json fcm-sa.pub.pem
       vapid.pem vapid.pub.pem vapid.pub.b64url vapid.key.b64url)

complete=1
for f in "${files[@]}"; do
  [[ -s $dir/$f ]] || complete=0
done
((complete)) && exit 0

mkdir -p "$dir"
work=$(mktemp -d "$dir/.keys.XXXXXX")
trap 'rm -rf "$work"' EXIT
log=$work/openssl.log

ossl() {
  if ! openssl "$@" >>"$log" 2>&1; then
    echo "keys.sh: openssl $1 failed:" >&2
    cat "$log" >&2
    exit 1
  fi
}

b64url() { base64 -w0 | tr '+/' '-_' | tr -d '='; }

cd "$work"

# Test CA and server certificate.
ossl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out ca.key
ossl req -x509 -new -key ca.key -sha256 -days 3650 -subj "/CN=notify test CA" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
  -out ca.pem
ossl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out server.key
ossl req -new -key server.key -subj "/CN=localhost" -out server.csr
printf '%s\n' "subjectAltName=DNS:localhost,IP:127.0.0.1" "basicConstraints=CA:FALSE" \
  "keyUsage=critical,digitalSignature" "extendedKeyUsage=serverAuth" > server.ext
ossl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -set_serial "0x$(openssl rand -hex 16)" \
  -days 3650 -sha256 -extfile server.ext -out server.pem

# APNS .p8 token key.
ossl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out apns.p8
ossl pkey -in apns.p8 -pubout -out apns.pub.pem

# FCM service account.
ossl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out fcm-sa.key
ossl pkey -in fcm-sa.key -pubout -out fcm-sa.pub.pem
key_id=$(openssl rand -hex 20)
client_id=$(od -An -N8 -tu8 /dev/urandom | tr -d ' ')
pem_json=$(awk '{printf "%s\\n", $0}' fcm-sa.key)
cat > fcm-sa.json <<EOF
{
  "type": "service_account",
  "project_id": "notify-test",
  "private_key_id": "$key_id",
  "private_key": "$pem_json",
  "client_email": "notify@notify-test.iam.gserviceaccount.com",
  "client_id": "$client_id",
  "auth_uri": "https://accounts.google.com/o/oauth2/auth",
  "token_uri": "https://oauth2.googleapis.com/token",
  "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
  "client_x509_cert_url": "https://www.googleapis.com/robot/v1/metadata/x509/notify%40notify-test.iam.gserviceaccount.com",
  "universe_domain": "googleapis.com"
}
EOF

# VAPID key: PEM, and the raw forms Web Push uses.
ossl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out vapid.pem
ossl pkey -in vapid.pem -pubout -out vapid.pub.pem
openssl pkey -pubin -in vapid.pub.pem -outform DER 2>>"$log" | tail -c 65 | b64url > vapid.pub.b64url
# SEC1 DER of a P-256 key: 30 77 02 01 01 04 20 <32-byte scalar> ...
openssl ec -in vapid.pem -outform DER 2>>"$log" | head -c 39 | tail -c 32 | b64url > vapid.key.b64url

# Throwaway test keys: readable by everyone, so a server running as another
# user (postgres) can read the files a test points it at.
chmod 644 "${files[@]}"
for f in "${files[@]}"; do
  mv -f "$f" "$dir/$f"
done
