#!/usr/bin/env bash
# Regenerates the committed seed corpus fuzz/corpus/<target>/ from the engine's fixtures, the
# test keys in fuzz/keys/ and a few hand-written messages, plus the plist bombs (bomb-*).
# Needs openssl and python3. Crash inputs fixed later are added by hand as regress-* files and
# are not touched here. Run from anywhere.
set -euo pipefail
cd "$(dirname "$0")"
root=..
fx=$root/engine/src/wire/fixtures
profiles=$root/engine/tests/fixtures/profiles
k=keys
c=corpus
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for t in checkin_plist command_report mdm_signature scep machine_info dep_json dep_token \
  mobileconfig push_cert plugin_answer client_cert; do
  mkdir -p "$c/$t"
  find "$c/$t" -maxdepth 1 -type f -name 'seed-*' -delete
done
# prefix MODE OUT [IN]: write byte MODE followed by IN (or stdin) to OUT.
prefix() { { printf "\\x$1"; if [ $# -gt 2 ]; then cat "$3"; else cat; fi; } >"$2"; }

# --- plists: check-in, command report, profiles; the bombs.
python3 - "$c" <<'PY'
import plistlib, struct, sys
c = sys.argv[1]

def xml(d):
    return plistlib.dumps(d, fmt=plistlib.FMT_XML)

checkins = {
    "authenticate": {"MessageType": "Authenticate", "UDID": "00008020-000A1B2C3D4E5F60",
                     "Topic": "com.apple.mgmt.External.0", "SerialNumber": "C02XXXXXXXXX",
                     "Model": "Mac14,2", "ModelName": "MacBook Air", "OSVersion": "14.4",
                     "BuildVersion": "23E214", "ProductName": "Mac14,2"},
    "tokenupdate-user": {"MessageType": "TokenUpdate", "UDID": "U", "UserID": "501",
                         "UserShortName": "ada", "UserLongName": "Ada", "Topic": "t",
                         "Token": b"\x01\x02", "PushMagic": "m", "UnlockToken": b"\x00" * 8,
                         "AwaitingConfiguration": True, "BootstrapTokenAllowed": True},
    "userauthenticate": {"MessageType": "UserAuthenticate", "UDID": "U", "UserID": "501",
                         "DigestResponse": "x"},
    "setbootstraptoken": {"MessageType": "SetBootstrapToken", "UDID": "U",
                          "BootstrapToken": b"secret"},
    "getbootstraptoken": {"MessageType": "GetBootstrapToken", "UDID": "U"},
    "checkout": {"MessageType": "CheckOut", "UDID": "U", "Topic": "t"},
    "declarative": {"MessageType": "DeclarativeManagement", "UDID": "U",
                    "Endpoint": "tokens", "Data": b"{}"},
    "gettoken": {"MessageType": "GetToken", "UDID": "U", "TokenServiceType": "com.apple.maid"},
    "enrollmentid": {"MessageType": "Authenticate", "EnrollmentID": "E", "Topic": "t"},
}
for name, d in checkins.items():
    open(f"{c}/checkin_plist/seed-{name}.plist", "wb").write(xml(d))
open(f"{c}/checkin_plist/seed-authenticate.bplist", "wb").write(
    plistlib.dumps(checkins["authenticate"], fmt=plistlib.FMT_BINARY))

reports = {
    "idle": {"UDID": "U", "Status": "Idle"},
    "acknowledged": {"UDID": "U", "Status": "Acknowledged",
                     "CommandUUID": "0F4B1C3E-0000-4000-8000-000000000001",
                     "QueryResponses": {"OSVersion": "14.4", "IsSupervised": True,
                                        "AvailableDeviceCapacity": 12.5}},
    "error": {"UDID": "U", "Status": "Error", "CommandUUID": "c",
              "ErrorChain": [{"ErrorCode": 12021, "ErrorDomain": "MCMDMErrorDomain",
                              "LocalizedDescription": "x", "USEnglishDescription": "y"}]},
    "notnow": {"UDID": "U", "Status": "NotNow", "CommandUUID": "c"},
    "user": {"UDID": "U", "UserID": "501", "Status": "Acknowledged", "CommandUUID": "c",
             "InstalledApplicationList": [{"Identifier": "com.x", "Version": "1"}]},
}
for name, d in reports.items():
    open(f"{c}/command_report/seed-{name}.plist", "wb").write(xml(d))
open(f"{c}/command_report/seed-acknowledged.bplist", "wb").write(
    plistlib.dumps(reports["acknowledged"], fmt=plistlib.FMT_BINARY))

def ref_bomb(levels, top_dict):
    """A binary plist whose `levels` arrays each hold two references to the next one."""
    objs = []
    if top_dict:
        # 0: {MessageType: Authenticate, UDID: <array 3>}; 1,2: keys; 3..: the arrays.
        first = 3
        objs.append(bytes([0xD2, 1, 2, 4 + levels, first]))  # dict: 2 keys, then 2 values
        objs.append(b"\x5b" + b"MessageType")
        objs.append(b"\x54" + b"UDID")
    else:
        first = 0
    for i in range(levels):
        nxt = first + i + 1
        objs.append(bytes([0xA2, nxt, nxt]))
    objs.append(b"\x10\x00")  # the innermost value: integer 0
    if top_dict:
        objs.append(b"\x5c" + b"Authenticate")
    assert len(objs) < 256
    out = bytearray(b"bplist00")
    offsets = []
    for o in objs:
        offsets.append(len(out))
        out += o
    table = len(out)
    for off in offsets:
        out += struct.pack(">H", off)
    out += bytes(6) + bytes([2, 1]) + struct.pack(">QQQ", len(objs), 0, table)
    return bytes(out)

nested = (b'<?xml version="1.0" encoding="UTF-8"?>\n<plist version="1.0">'
          + b"<array>" * 50000 + b"</array>" * 50000 + b"</plist>\n")
bombs = {
    "bomb-bplist-refs30.bplist": ref_bomb(30, True),
    "bomb-bplist-refs40.bplist": ref_bomb(40, True),
    "bomb-bplist-refs40-array.bplist": ref_bomb(40, False),
    "bomb-xml-nested-array-50000.plist": nested,
}
for t in ("checkin_plist", "command_report", "mobileconfig"):
    for name, data in bombs.items():
        open(f"{c}/{t}/{name}", "wb").write(data)
# Signed MachineInfo content (mode 2: the target signs it).
mi = {"UDID": "00008020-000A1B2C3D4E5F60", "SERIAL": "C02XXXXXXXXX", "PRODUCT": "Mac14,2",
      "VERSION": "23E214", "OS_VERSION": "14.4", "LANGUAGE": "en",
      "MDM_CAN_REQUEST_SOFTWARE_UPDATE": True, "SOFTWARE_UPDATE_DEVICE_ID": "J413AP"}
open(f"{c}/machine_info/seed-content.plist", "wb").write(b"\x02" + xml(mi))
open(f"{c}/machine_info/bomb-bplist-refs40.bplist", "wb").write(
    b"\x02" + bombs["bomb-bplist-refs40.bplist"])
open(".mi.plist", "wb").write(xml(mi))
PY
for f in "$profiles"/*.mobileconfig "$profiles"/malformed/*.mobileconfig; do
  cp "$f" "$c/mobileconfig/seed-$(basename "$f")"
done
cp "$fx/checkin-body.plist" "$c/checkin_plist/seed-tokenupdate-fixture.plist"

# --- Mdm-Signature: the fixture signatures, raw (mode 0) and as header values (mode 1).
for s in sig-ber-sha1-noattr sig-der-sha256-attrs; do
  prefix 00 "$c/mdm_signature/seed-$s.der" "$fx/$s.der"
  base64 -w 76 "$fx/$s.der" | prefix 01 "$c/mdm_signature/seed-$s.header"
done

# --- MachineInfo signed by the test leaf, raw (mode 0) and as the header (mode 1).
openssl cms -sign -nodetach -binary -in .mi.plist -signer $k/leaf-cert.pem -inkey $k/leaf-key.pem \
  -outform DER -out "$tmp/mi.der"
prefix 00 "$c/machine_info/seed-signed.der" "$tmp/mi.der"
base64 -w 0 "$tmp/mi.der" | prefix 01 "$c/machine_info/seed-signed.header"
openssl smime -sign -nodetach -binary -in .mi.plist -signer $k/leaf-cert.pem \
  -inkey $k/leaf-key.pem -certfile $k/ca-cert.pem -outform DER -out "$tmp/mi2.der"
prefix 00 "$c/machine_info/seed-signed-with-chain.der" "$tmp/mi2.der"
rm .mi.plist

# --- Client certificate header: PEM, URL-escaped PEM, :base64:, bare base64.
cp "$fx/device-cert.pem" "$c/client_cert/seed-pem"
python3 -c 'import sys,urllib.parse;sys.stdout.write(urllib.parse.quote(open(sys.argv[1]).read()))' \
  "$fx/device-cert.pem" >"$c/client_cert/seed-escaped"
openssl x509 -in "$fx/device-cert.pem" -outform DER -out "$tmp/dev.der"
{ printf ':'; base64 -w 0 "$tmp/dev.der"; printf ':'; } >"$c/client_cert/seed-colon-base64"
base64 -w 0 "$tmp/dev.der" >"$c/client_cert/seed-bare-base64"

# --- DEP: API answers and server tokens.
cat >"$c/dep_json/seed-devices.json" <<'J'
{"devices":[{"serial_number":"C02XXXXXXXXX","description":"MacBook Air","model":"MacBook Air","os":"OSX","device_family":"Mac","color":"MIDNIGHT","profile_status":"empty","profile_uuid":"","profile_assign_time":"2024-01-01T00:00:00Z","device_assigned_date":"2024-01-01T00:00:00Z","device_assigned_by":"ada@example.com","op_type":"added","op_date":"2024-01-01T00:00:00Z"}],"cursor":"MTIzNDU2","fetched_until":"2024-01-01T00:00:00Z","more_to_follow":false}
J
cat >"$c/dep_json/seed-account.json" <<'J'
{"server_name":"Pomona","server_uuid":"A8A0-1","facilitator_id":"f@example.com","admin_id":"a@example.com","org_name":"Example","org_email":"it@example.com","org_phone":"+1","org_address":"1 Way","org_type":"org","org_version":"v2","org_id":"1","org_id_hash":"h","urls":[{"uri":"/session","http_method":["GET"],"limit":{"default":100,"maximum":1000}}]}
J
cat >"$c/dep_json/seed-profile.json" <<'J'
{"profile_uuid":"88F8C3B5","devices":{"C02XXXXXXXXX":"SUCCESS","C02YYYYYYYYY":"NOT_ACCESSIBLE"}}
J
printf '{"error":"EXPIRED_CURSOR"}' >"$c/dep_json/seed-error.json"
printf 'T_C_NOT_SIGNED' >"$c/dep_json/seed-error-bare"
printf 'OAuth realm="ADM", oauth_consumer_key="CK_1", oauth_nonce="n", oauth_signature="s%%3D", oauth_signature_method="HMAC-SHA1", oauth_timestamp="1", oauth_token="AT_1", oauth_version="1.0"' \
  >"$c/dep_json/seed-oauth-header"
token='{"consumer_key":"CK_1","consumer_secret":"CS_1","access_token":"AT_1","access_secret":"AS_1","access_token_expiry":"2030-01-01T00:00:00Z"}'
printf 'Content-Type: text/plain;charset=UTF-8\r\nContent-Transfer-Encoding: 7bit\r\n\r\n-----BEGIN MESSAGE-----\n%s\n-----END MESSAGE-----\n' \
  "$token" >"$tmp/token.txt"
prefix 01 "$c/dep_token/seed-plaintext" "$tmp/token.txt"
openssl smime -encrypt -aes256 -in "$tmp/token.txt" -out "$tmp/token.p7m" $k/leaf-cert.pem
prefix 00 "$c/dep_token/seed-token.p7m" "$tmp/token.p7m"

# --- Push certificates: PEM (mode 0), PKCS#12 with password `fuzz` (1) and none (2).
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$tmp/push.key" -out "$tmp/push.pem" -days 36500 \
  -subj "/UID=com.apple.mgmt.External.00000000-0000-0000-0000-000000000000/CN=APSP:fuzz" 2>/dev/null
cat "$tmp/push.pem" "$tmp/push.key" | prefix 00 "$c/push_cert/seed-pem"
openssl pkey -in "$tmp/push.key" -aes128 -passout pass:fuzz -out "$tmp/push-enc.key"
cat "$tmp/push.pem" "$tmp/push-enc.key" | prefix 00 "$c/push_cert/seed-pem-encrypted-key"
openssl pkcs12 -export -in "$tmp/push.pem" -inkey "$tmp/push.key" -passout pass:fuzz \
  -out "$tmp/push.p12"
prefix 01 "$c/push_cert/seed-fuzz.p12" "$tmp/push.p12"
openssl pkcs12 -export -in "$tmp/push.pem" -inkey "$tmp/push.key" -passout pass: \
  -out "$tmp/push-nopass.p12"
prefix 02 "$c/push_cert/seed-nopass.p12" "$tmp/push-nopass.p12"
openssl pkcs12 -export -legacy -in "$tmp/push.pem" -inkey "$tmp/push.key" -passout pass:fuzz \
  -out "$tmp/push-legacy.p12" 2>/dev/null && prefix 01 "$c/push_cert/seed-legacy.p12" "$tmp/push-legacy.p12"

# --- Plugin answers, one per shape.
i=0
for a in '{"assign":"standard"}' '{"skip":true}' '{"retry_after":3600}' '{"team":"Engineering"}' \
  '{"no_team":true}' '"release"' '{"wait":60}' '{"hold":"waiting for IT"}' '[]' null \
  '[{"id":"wifi","required":true,"install_profile":"wifi"},{"id":"acct","required":false,"account":{"username":"ada","full_name":"Ada","lock":true,"admin":false}},{"id":"pkg","required":true,"install_package":{"url":"https://x/a.pkg","manifest_url":null}},{"id":"cmd","required":true,"command":{"request_type":"Settings","parameters":{"Settings":[]}}}]' \
  '{"device":{"serial_number":"C02X","udid":"U"},"progress":{}}' \
  '{"serial_number":"C02X","model":"Mac14,2","os":"OSX","op_type":"added"}'; do
  printf '%s' "$a" >"$c/plugin_answer/seed-$i.json"
  i=$((i + 1))
done

# --- SCEP: built requests (mode 1 and up; the bytes drive the builder) and a raw stub.
printf '\x00\x30\x80\x06\x09\x2a\x86\x48\x86\xf7\x0d\x01\x07\x02\xa0\x80' >"$c/scep/seed-raw-stub"
printf '\x01\x00\x01\x00\x0bfuzz-device\x02TX\x10nonce-0123456789\x04\x00\x00' >"$c/scep/seed-pkcsreq"
printf '\x01\x01\x00\x00\x0bfuzz-device\x02TX\x10nonce-0123456789\x04\x00\x01' >"$c/scep/seed-renewal"
printf '\x01\x00\x00\x01\x05wrong\x01x\x01T\x01n\x00\x01\x00' >"$c/scep/seed-wrong-challenge"
printf '\x01\x00\x01\x00\x01x\x01T\x01n\x02\x01\x00\x10\x00\x01\x00\xff\x20\x00\x7f' >"$c/scep/seed-corrupted"
