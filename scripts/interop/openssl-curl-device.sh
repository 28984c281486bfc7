#!/usr/bin/env bash
# Interop check: a device scripted with the openssl CLI (CMS signatures) and curl enrolls against
# a real `pomona serve`, checks in and receives a command enqueued through the admin API.
#
# It uses a CA made here with openssl, imported into Pomona (POMONA_CA_CERT_FILE/KEY_FILE), and
# signs every request twice over: once DER with signed attributes (SHA-256), once real-device
# style (indefinite-length BER, SHA-1, no signed attributes).
set -euo pipefail
cd "$(dirname "$0")/../.."

cargo build -q -p pomona-cli --bin pomona
bin=target/debug/pomona
work=$(mktemp -d)
trap 'kill "$server_pid" 2>/dev/null || true; rm -rf "$work"' EXIT
cd "$work"

openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 30 \
  -subj "/CN=Interop CA" -addext "basicConstraints=critical,CA:TRUE" \
  -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
new_device() { # name
  openssl req -newkey rsa:2048 -nodes -keyout "$1.key" -out "$1.csr" -subj "/CN=$1" 2>/dev/null
  printf 'extendedKeyUsage=clientAuth\nkeyUsage=critical,digitalSignature,keyEncipherment\n' > "$1.ext"
  openssl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -days 30 \
    -extfile "$1.ext" -out "$1.pem" 2>/dev/null
}

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
url="http://127.0.0.1:$port"
key="interop-api-key-0123456789"
POMONA_API_KEY=$key POMONA_CA_CERT_FILE=ca.pem POMONA_CA_KEY_FILE=ca.key POMONA_LOG=warn \
  "$OLDPWD/$bin" serve --data-dir data --listen "127.0.0.1:$port" --public-url "$url" > serve.log 2>&1 &
server_pid=$!
for _ in $(seq 100); do curl -sf "$url/health" >/dev/null && break; sleep 0.1; done
curl -sf "$url/health" >/dev/null || { cat serve.log; echo "server did not start"; exit 1; }

fail() { echo "FAIL: $*"; cat serve.log; exit 1; }

# put PATH CONTENT-TYPE BODY-FILE DEVICE STYLE -> body on stdout, HTTP status in $work/status
put() {
  local sig
  if [ "$5" = real ]; then
    openssl cms -sign -binary -noattr -md sha1 -stream -nosmimecap -outform DER \
      -signer "$4.pem" -inkey "$4.key" -in "$3" -out sig.der
  else
    openssl cms -sign -binary -md sha256 -nosmimecap -outform DER \
      -signer "$4.pem" -inkey "$4.key" -in "$3" -out sig.der
  fi
  sig=$(base64 -w0 sig.der)
  curl -s -o reply.bin -w '%{http_code}' -X PUT -H "Content-Type: $2" -H "Mdm-Signature: $sig" \
    --data-binary "@$3" "$url$1" > status
  cat reply.bin
}

plist() { printf '<?xml version="1.0" encoding="UTF-8"?>\n<plist version="1.0"><dict>%s</dict></plist>\n' "$1"; }

run_device() { # name style
  local dev=$1 style=$2 udid
  new_device "$dev"
  udid="INTEROP-$(echo "$dev" | tr a-z A-Z)"
  k() { printf '<key>%s</key><string>%s</string>' "$1" "$2"; }

  plist "$(k MessageType Authenticate)$(k UDID "$udid")$(k Topic com.apple.mgmt.External.interop)$(k SerialNumber "SN-$udid")" > auth.plist
  put /mdm/checkin application/x-apple-aspen-mdm-checkin auth.plist "$dev" "$style" >/dev/null
  [ "$(cat status)" = 200 ] || fail "$dev Authenticate: $(cat status) $(cat reply.bin)"

  plist "$(k MessageType TokenUpdate)$(k UDID "$udid")$(k Topic com.apple.mgmt.External.interop)$(k PushMagic magic)<key>Token</key><data>AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=</data>" > tu.plist
  put /mdm/checkin application/x-apple-aspen-mdm-checkin tu.plist "$dev" "$style" >/dev/null
  [ "$(cat status)" = 200 ] || fail "$dev TokenUpdate: $(cat status) $(cat reply.bin)"

  plist "$(k UDID "$udid")$(k Status Idle)" > idle.plist
  out=$(put /mdm/connect application/x-apple-aspen-mdm idle.plist "$dev" "$style")
  [ "$(cat status)" = 200 ] && [ -z "$out" ] || fail "$dev first Idle: $(cat status) $out"

  cmd_uuid="INTEROP-CMD-$udid"
  plist "$(k CommandUUID "$cmd_uuid")<key>Command</key><dict>$(k RequestType ProfileList)</dict>" > cmd.plist
  code=$(curl -s -o enq.json -w '%{http_code}' -u "nanomdm:$key" -X PUT --data-binary @cmd.plist "$url/v1/enqueue/$udid?nopush=1")
  [ "$code" = 200 ] || fail "$dev enqueue: $code $(cat enq.json)"
  grep -q "\"command_uuid\":\"$cmd_uuid\"" enq.json || fail "enqueue reply: $(cat enq.json)"

  out=$(put /mdm/connect application/x-apple-aspen-mdm idle.plist "$dev" "$style")
  cmp -s reply.bin cmd.plist || fail "$dev Idle did not return the exact command: $out"

  plist "$(k UDID "$udid")$(k Status NotNow)$(k CommandUUID "$cmd_uuid")" > notnow.plist
  out=$(put /mdm/connect application/x-apple-aspen-mdm notnow.plist "$dev" "$style")
  [ -z "$out" ] || fail "$dev NotNow should return nothing: $out"

  out=$(put /mdm/connect application/x-apple-aspen-mdm idle.plist "$dev" "$style")
  cmp -s reply.bin cmd.plist || fail "$dev Idle after NotNow did not return the command"

  plist "$(k UDID "$udid")$(k Status Acknowledged)$(k CommandUUID "$cmd_uuid")<key>ProfileList</key><array/>" > ack.plist
  out=$(put /mdm/connect application/x-apple-aspen-mdm ack.plist "$dev" "$style")
  [ "$(cat status)" = 200 ] && [ -z "$out" ] || fail "$dev Ack: $(cat status) $out"

  curl -sf -H "Authorization: Bearer $key" "$url/v1/commands/$cmd_uuid" > cmd.json
  grep -q '"state":"acknowledged"' cmd.json || fail "$dev command not acknowledged: $(cat cmd.json)"

  # A tampered body with a valid signature of the original is refused with 400, not 401.
  put /mdm/connect application/x-apple-aspen-mdm idle.plist "$dev" "$style" >/dev/null
  cp idle.plist tampered.plist; sed -i 's/Idle/Idlf/' tampered.plist
  code=$(curl -s -o /dev/null -w '%{http_code}' -X PUT -H "Mdm-Signature: $(base64 -w0 sig.der)" \
    --data-binary @tampered.plist "$url/mdm/connect")
  [ "$code" = 400 ] || fail "$dev tampered body answered $code"
  echo "ok: $dev ($style signature) enrolled, received $cmd_uuid, NotNow, Ack"
}

run_device mac1 der
run_device mac2 real
echo "interop (openssl + curl device): 2 passed, 0 failed"
