#!/usr/bin/env bash
# Interop check: real SCEP clients from Debian against `pomona serve`.
#   - scepclient (package `scep`) obtains a certificate with the right challenge; a wrong one is
#     refused with badRequest.
#   - certmonger's scep-submit reads the CA capabilities (-c) and certificate (-C).
#   - certmonger (the strictest OpenSSL-3 client: AES-256 envelope, SHA-256, verifies the reply's
#     signer) enrolls end to end through its daemon on a private session bus; a wrong challenge
#     ends in CA_REJECTED. certmonger cannot tell a lone CA certificate from an RA certificate in
#     GetCACert, so it is given the CA with `-N` (as its manual advises for troubleshooting).
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build -q -p pomona-cli --bin pomona
bin="$PWD/target/debug/pomona"
scep_submit=/usr/lib/certmonger/scep-submit
work=$(mktemp -d)
server_pid=""; cm_pid=""; bus_pid=""
# Stop the daemons and wait for them before removing their files (certmonger may still be
# writing into its directory while it exits); cleanup never changes the script's result.
cleanup() {
  kill "$server_pid" $cm_pid $bus_pid 2>/dev/null || true
  for p in "$server_pid" $cm_pid $bus_pid; do wait "$p" 2>/dev/null || true; done
  rm -rf "$work" 2>/dev/null || { sleep 1; rm -rf "$work" 2>/dev/null || true; }
}
trap cleanup EXIT
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

# A full certmonger enrollment, its state kept in the scratch directory.
export CERTMONGER_CONFIG_DIR="$work/cm" CERTMONGER_REQUESTS_DIR="$work/cm/requests" \
  CERTMONGER_CAS_DIR="$work/cm/cas" CERTMONGER_LOCAL_CA_DIR="$work/cm/local" HOME="$work/home"
mkdir -p "$CERTMONGER_REQUESTS_DIR" "$CERTMONGER_CAS_DIR" "$CERTMONGER_LOCAL_CA_DIR" "$HOME"
bus=$(dbus-daemon --session --fork --print-address=1 --print-pid=1 --nopidfile)
DBUS_SESSION_BUS_ADDRESS=$(sed -n 1p <<<"$bus"); bus_pid=$(sed -n 2p <<<"$bus")
export DBUS_SESSION_BUS_ADDRESS
certmonger -s -n -d 1 > certmonger.log 2>&1 &
cm_pid=$!
for _ in $(seq 50); do getcert list-cas -s >/dev/null 2>&1 && break; sleep 0.2; done
getcert add-scep-ca -s -c pomona -u "$url/scep" -N "$work/ca.pem" >/dev/null || fail "getcert add-scep-ca"
wait_status() { # request-id wanted-regex
  local s=""
  for _ in $(seq 60); do
    s=$(getcert list -s -i "$1" | sed -n 's/^\s*status: //p')
    grep -qE "$2" <<<"$s" && return 0
    sleep 0.5
  done
  echo "certmonger request $1 ended in '$s'"; getcert list -s -i "$1"; cat certmonger.log | tail -20
  return 1
}
getcert request -s -c pomona -I good -f "$work/cm.crt" -k "$work/cm.key" -N CN=certmonger-device \
  -L interop-secret >/dev/null || fail "getcert request"
wait_status good MONITORING || fail "certmonger enrollment"
openssl verify -CAfile ca.pem "$work/cm.crt" >/dev/null || fail "certmonger's certificate does not chain"
echo "ok: certmonger enrolled end to end"; passed=$((passed+1))
getcert request -s -c pomona -I bad -f "$work/cm-bad.crt" -k "$work/cm-bad.key" -N CN=certmonger-bad \
  -L wrong >/dev/null || fail "getcert request (bad)"
wait_status bad CA_REJECTED || fail "certmonger with a wrong challenge was not rejected"
echo "ok: certmonger with a wrong challenge rejected (CA_REJECTED)"; passed=$((passed+1))

echo "interop (scep clients): $passed passed, 0 failed"
