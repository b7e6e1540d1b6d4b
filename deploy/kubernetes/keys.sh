#!/bin/sh
# keys.sh [REDRAIN]: print a keys.json with fresh keys for the Secret
# redrain-keys of redrain.yaml (serve --keys): token key 1, a random draw
# salt, admin key "ops", and the key of client app 1 (add one "APP:HEX" per
# app that signs /v1 requests). REDRAIN is the redrain binary (default:
# redrain on PATH).
#
#   deploy/kubernetes/keys.sh > keys.json
#   kubectl -n redrain create secret generic redrain-keys --from-file=keys.json
#   shred -u keys.json   # after handing the ops and app keys to their owners
set -eu
rr=${1:-redrain}
token=$("$rr" keygen --id 1)
admin=$("$rr" keygen --id ops)
app=$("$rr" keygen --id 1)
salt=$("$rr" keygen --id salt)
cat <<JSON
{
  "token_keys": ["$token"],
  "active_token_key": 1,
  "draw_salt": "${salt#salt:}",
  "admin_keys": ["$admin"],
  "app_keys": ["$app"]
}
JSON
