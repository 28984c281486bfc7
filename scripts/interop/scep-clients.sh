#!/usr/bin/env bash
# Interop check: real SCEP clients from Debian against `pomona serve`.
#   - scepclient (package `scep`) obtains a certificate with the right challenge; a wrong one is
#     refused with badRequest.
#   - certmonger's scep-submit reads the CA capabilities (-c) and certificate (-C).
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build -q -p pomona --bin pomona
bin="$PWD/target/debug/pomona"
scep_submit=/usr/lib/certmonger/scep-submit
work=$(mktemp -d)
trap 'kill "$server_pid" 2>/dev/null || true; rm -rf "$work"' EXIT
cd "$work"

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
url="http://127.0.0.1:$port"
POMONA_API_KEY=interop-api-key-0123456789 POMONA_SCEP_CHALLENGE=interop-secret POMONA_LOG=warn \
  "$bin" serve --data-dir data --listen "127.0.0.1:$port" --public-url "$url" > serve.log 2>&1 &
server_pid=$!
for _ in $(seq 100); do curl -sf "$url/health" >/dev/null && break; sleep 0.1; done
fail() { echo "FAIL: $*"; cat serve.log; exit 1; }
passed=0

mkdir good && (cd good && timeout 60 scepclient -server-url "$url/scep" -challenge interop-secret \
  -private-key key.pem -certificate cert.pem -cn interop-good > out.log 2>&1) || true
[ -s good/cert.pem ] || fail "scepclient got no certificate: $(cat good/out.log)"
curl -sf "$url/scep?operation=GetCACert" -o ca.der
openssl x509 -inform DER -in ca.der -out ca.pem
openssl verify -CAfile ca.pem good/cert.pem >/dev/null || fail "issued certificate does not chain to the CA"
openssl x509 -in good/cert.pem -noout -ext extendedKeyUsage | grep -q "Client Authentication" \
  || fail "issued certificate lacks client-auth usage"
echo "ok: scepclient enrolled with the right challenge"; passed=$((passed+1))

mkdir bad && (cd bad && timeout 60 scepclient -server-url "$url/scep" -challenge wrong \
  -private-key key.pem -certificate cert.pem -cn interop-bad > out.log 2>&1) || true
[ ! -s bad/cert.pem ] || fail "scepclient got a certificate with a wrong challenge"
grep -q "badRequest" bad/out.log || fail "wrong challenge not answered with badRequest: $(cat bad/out.log)"
echo "ok: scepclient with a wrong challenge refused (badRequest)"; passed=$((passed+1))

caps=$("$scep_submit" -u "$url/scep" -c) || fail "scep-submit -c failed"
for cap in POSTPKIOperation SHA-256 AES SCEPStandard Renewal; do
  grep -qx "$cap" <<<"$caps" || fail "GetCACaps lacks $cap: $caps"
done
echo "ok: certmonger scep-submit -c reads the capabilities"; passed=$((passed+1))

"$scep_submit" -u "$url/scep" -C > cacerts.pem || fail "scep-submit -C failed"
openssl x509 -in cacerts.pem -noout -fingerprint -sha256 > a.txt
openssl x509 -in ca.pem -noout -fingerprint -sha256 > b.txt
cmp -s a.txt b.txt || fail "scep-submit -C returned a different CA certificate"
echo "ok: certmonger scep-submit -C reads the CA certificate"; passed=$((passed+1))

echo "interop (scep clients): $passed passed, 0 failed"
