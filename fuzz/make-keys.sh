#!/usr/bin/env bash
# Regenerates fuzz/keys/: a throwaway test CA and a leaf it issued, fixed so that the committed
# seeds (signed MachineInfo, encrypted DEP token) verify and decrypt in the targets. Test material
# only; nothing trusts it outside the fuzz targets. Run from fuzz/, then rerun make-seeds.sh.
set -euo pipefail
cd "$(dirname "$0")/keys"
openssl req -x509 -newkey rsa:2048 -nodes -keyout ca-key.pem -out ca-cert.pem -days 36500 \
  -subj "/CN=Pomona Fuzz Test CA" -addext "basicConstraints=critical,CA:true" \
  -addext "keyUsage=critical,digitalSignature,keyEncipherment,keyCertSign,cRLSign" 2>/dev/null
openssl req -newkey rsa:2048 -nodes -keyout leaf-key.pem -out leaf.csr \
  -subj "/CN=Pomona Fuzz Test Device" 2>/dev/null
openssl x509 -req -in leaf.csr -CA ca-cert.pem -CAkey ca-key.pem -set_serial 2 -days 36500 \
  -out leaf-cert.pem 2>/dev/null
rm leaf.csr
