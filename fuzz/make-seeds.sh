#!/usr/bin/env bash
# Writes the seed corpora under fuzz/corpus/ (committed; run again only to change them).
# Tokens are signed with keys/signing-key.pem, the fixed key of the fuzz targets' JWK set, and
# carry the client ids and times of grantkeeper_provider::fuzzing (CLIENT_ID, NOW).
set -euo pipefail
cd "$(dirname "$0")"

KEY=keys/signing-key.pem
KID=fuzz-rs256
WEB=fuzz-web.apps.googleusercontent.com
ANDROID=fuzz-android.apps.googleusercontent.com
NOW=1750000000
SUB=110169484474386276334

b64url() { base64 -w0 | tr '+/' '-_' | tr -d '='; }

# A compact JWS of a header and a payload (JSON text), signed RS256.
jws() {
  local message
  message="$(printf '%s' "$1" | b64url).$(printf '%s' "$2" | b64url)"
  printf '%s.%s' "$message" "$(printf '%s' "$message" | openssl dgst -sha256 -sign "$KEY" | b64url)"
}

# seed FILE MODE-BYTE (octal) CONTENT...: the mode byte, then the rest as given.
seed() {
  local file=$1 mode=$2
  shift 2
  mkdir -p "$(dirname "$file")"
  { printf "\\$mode"; printf '%s' "$@"; } >"$file"
}

# Raw token (mode 0) and signed HEADER 0x00 PAYLOAD (mode 3).
parts() {
  local file=$1 header=$2 payload=$3
  mkdir -p "$(dirname "$file")"
  { printf '\003%s' "$header"; printf '\000'; printf '%s' "$payload"; } >"$file"
}

header="{\"alg\":\"RS256\",\"kid\":\"$KID\",\"typ\":\"JWT\"}"
id_token="{\"iss\":\"https://accounts.google.com\",\"azp\":\"$WEB\",\"aud\":\"$WEB\",\
\"sub\":\"$SUB\",\"email\":\"ada@example.com\",\"email_verified\":true,\
\"at_hash\":\"HK6E_P6Dh8Y93mRNtsDB1Q\",\"name\":\"Ada Lovelace\",\
\"picture\":\"https://lh3.googleusercontent.com/a/photo\",\"given_name\":\"Ada\",\
\"family_name\":\"Lovelace\",\"locale\":\"en\",\"iat\":$((NOW - 10)),\"exp\":$((NOW + 3590))}"
mobile_token="{\"iss\":\"accounts.google.com\",\"azp\":\"$ANDROID\",\"aud\":[\"$WEB\"],\
\"sub\":\"$SUB\",\"email\":\"ada@example.com\",\"email_verified\":\"true\",\"hd\":\"example.com\",\
\"iat\":$((NOW - 100)).5,\"exp\":$((NOW + 3500))}"

for target in id_token_parse id_token_verify; do
  seed "corpus/$target/google-id-token" 000 "$(jws "$header" "$id_token")"
  parts "corpus/$target/google-id-token-parts" "$header" "$id_token"
  parts "corpus/$target/mobile-id-token-parts" "$header" "$mobile_token"
done

risc="https://schemas.openid.net/secevent/risc/event-type"
oauth="https://schemas.openid.net/secevent/oauth/event-type"
iss_sub="{\"subject_type\":\"iss-sub\",\"iss\":\"https://accounts.google.com/\",\"sub\":\"$SUB\"}"
set_claims() {
  printf '{"iss":"https://accounts.google.com/","aud":"%s","iat":%s,"jti":"%s","events":{"%s":%s}}' \
    "$WEB" "$((NOW - 20))" "$1" "$2" "$3"
}
seed corpus/security_event/account-disabled 000 "$(jws "$header" \
  "$(set_claims 756E69717565206964656E746966696572 "$risc/account-disabled" \
    "{\"subject\":$iss_sub,\"reason\":\"hijacking\"}")")"
parts corpus/security_event/sessions-revoked-by-email "$header" \
  "$(set_claims jti-2 "$risc/sessions-revoked" \
    '{"subject":{"subject_type":"id_token_claims","email":"ada@example.com"}}')"
# SHA-512(SHA-512(token)), as Google names a revoked token.
hash=$(printf '1//0abcdefghijklmnop' | openssl dgst -sha512 -binary | openssl dgst -sha512 -binary | b64url)
parts corpus/security_event/token-revoked-by-hash "$header" \
  "$(set_claims jti-3 "$oauth/token-revoked" \
    '{"subject":{"subject_type":"oauth_token","token_type":"refresh_token","token_identifier_alg":"hash_base64_sha512_sha512","token":"'"$hash"'"}}')"
parts corpus/security_event/token-revoked-by-prefix "$header" \
  "$(set_claims jti-4 "$oauth/token-revoked" \
    '{"subject":{"subject_type":"oauth_token","token_type":"refresh_token","token_identifier_alg":"prefix","token":"1//0abcdefghijklmnop"}}')"
parts corpus/security_event/verification "$header" \
  "$(set_claims jti-5 "$risc/verification" '{"state":"hello"}')"

# authcode_body: mode % 3 picks raw, form or JSON; bit 2 puts a query platform before a 0x00.
code="4/0AanRRrsB3Zr1tSx9xJTtG4N8V-wQ0kT7jM2gkQy3qTAmK1xh0nLpYqKzIuq4WoRfVIv7Ug"
seed corpus/authcode_body/raw 000 "$code"
seed corpus/authcode_body/form 001 "authCode=${code//\//%2F}&platform=android"
seed corpus/authcode_body/json 002 "{\"code\":\"$code\",\"platform\":\"ios\"}"
{ printf '\006web'; printf '\000'; printf '%s\n' "$code"; } >corpus/authcode_body/raw-with-query

mkdir -p corpus/config_toml corpus/client_secret_json
cat >corpus/config_toml/full.toml <<'EOF'
[server]
addr = "0.0.0.0:8080"
public_url = "https://app.example.com"
allowed_origins = ["https://app.example.com", "http://localhost:3000"]
session_ttl = "30d"
demo_page = false

[provider]
client_id = "1234567890-abc.apps.googleusercontent.com"
client_secret = "GOCSPX-fuzz-seed-not-a-secret"
web_redirect_uri = "postmessage"
mobile_redirect_uri = "com.example.app:/oauth2redirect"
authorized_parties = ["1234567890-android.apps.googleusercontent.com"]
google_quirks = true

[store]
url = "sqlite://grantkeeper.db"
max_connections = 16
statement_timeout = "30s"

[vault]
master_key_file = "master.key"

[broker]
min_ttl = 300
refresh_concurrency = 64
upstream_rate = 50.0

[events]
webhook_url = "https://hooks.example.com/grantkeeper"
webhook_secret = "fuzz-seed-webhook-secret"

[limits]
authcode_per_minute = 10
authcode_burst = 20
v1_per_second = 50
v1_burst = 200
request_timeout = "30s"
proxy_body_limit = 33554432
trusted_proxies = ["10.0.0.0/8", "192.0.2.7"]
EOF
cat >corpus/config_toml/minimal.toml <<'EOF'
[provider]
client_secret_file = "client_secret.json"

[vault]
master_key_file = "master.key"
EOF
cat >corpus/client_secret_json/web.json <<'EOF'
{"web":{"client_id":"1234567890-abc.apps.googleusercontent.com","project_id":"grantkeeper-demo","auth_uri":"https://accounts.google.com/o/oauth2/auth","token_uri":"https://oauth2.googleapis.com/token","auth_provider_x509_cert_url":"https://www.googleapis.com/oauth2/v1/certs","client_secret":"GOCSPX-fuzz-seed-not-a-secret","redirect_uris":["https://app.example.com/callback"],"javascript_origins":["https://app.example.com"]}}
EOF
cat >corpus/client_secret_json/installed.json <<'EOF'
{"installed":{"client_id":"1234567890-def.apps.googleusercontent.com","project_id":"grantkeeper-demo","auth_uri":"https://accounts.google.com/o/oauth2/auth","token_uri":"https://oauth2.googleapis.com/token","client_secret":"GOCSPX-fuzz-seed-not-a-secret-2","redirect_uris":["http://localhost"]}}
EOF
