#!/usr/bin/env bash
# The main job, from nothing: install picas and the local server, start the
# server on disk, create the database (open to its members only) with its
# views, add example tokens, let pilots drain them as a plain member, and
# print the count per state, the Fauxton URL and how to go on.
# The server keeps running afterwards so that you can look around; stop it
# with `picas server stop` (after `. .picas/env`, as the demo says at the end).
#   PICAS_DEMO_DIR   where the config, data and env file go   [default: .picas]
#   PICAS_DEMO_PORT  port on 127.0.0.1                        [default: 5984]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh

demo_dir=${PICAS_DEMO_DIR:-$PWD/.picas}
port=${PICAS_DEMO_PORT:-5984}
mkdir -p "$demo_dir"
demo_dir=$(cd "$demo_dir" && pwd)
export PATH="$PWD/.venv/bin:$PATH"
export PICAS_CONFIG="$demo_dir/conf.yml"
unset PICAS_URL PICAS_DATABASE PICAS_USERNAME PICAS_PASSWORD PICAS_PROFILE PICAS_SERVER_DATA

has_profile() {
  python - "$PICAS_CONFIG" "$1" <<'EOF'
import sys, yaml
try:
    data = yaml.safe_load(open(sys.argv[1])) or {}
except FileNotFoundError:
    data = {}
sys.exit(0 if sys.argv[2] in (data.get("profiles") or {}) else 1)
EOF
}

# Random passwords, kept only in the 0600 config file: the server admin in
# the default profile, and the pilots' user, a plain member, in "pilot".
new_password() { python -c 'import secrets; print(secrets.token_urlsafe(18))'; }
if ! has_profile default; then
  new_password | picas --url "http://127.0.0.1:$port" --database demo --username admin \
    init --password-stdin --no-check
fi
if ! has_profile pilot; then
  new_password | picas --profile pilot --url "http://127.0.0.1:$port" --database demo \
    --username pilot init --password-stdin --no-check
fi

picas server start --data-dir "$demo_dir/data"
python - <<'EOF'
# The pilots' user: not an admin, only a member of the demo database.
from picas import config, errors

admin = config.load().transport()
pilot = config.load(profile="pilot")
path = ["_users", f"org.couchdb.user:{pilot.username}"]
user = {"name": pilot.username, "password": pilot.password, "roles": [], "type": "user"}
try:
    admin.request("PUT", path, json=user)
except errors.Conflict:  # there from an earlier run: give it the password of the config
    admin.request("PUT", path, json={**user, "_rev": admin.request("GET", path)["_rev"]})
print(f"pilots run as user '{pilot.username}', a member of the database, not an admin")
EOF
picas db create --member pilot
picas tokens add examples/demo-tokens.yml
picas tokens add --grid n=1..200 --tag demo --command 'echo "token {n}"; sleep 0.0$(( {n} % 5 ))'

echo "==> draining with 4 pilots, as user 'pilot'"
pids=()
for i in 1 2 3 4; do
  picas --profile pilot pilot --workdir "$demo_dir/work" --max-time 600 &
  pids+=($!)
done
wait "${pids[@]}"

picas status

env_file="$demo_dir/env"
printf 'export PATH=%q:"$PATH" PICAS_CONFIG=%q\n' "$PWD/.venv/bin" "$PICAS_CONFIG" >"$env_file"
echo
echo "Fauxton: http://127.0.0.1:$port/_utils/#database/demo/_design/Monitor/_view/done"
echo "  (log in as admin; the password is in $PICAS_CONFIG)"
echo
echo "To go on with picas on the demo's database (see the README), in this shell:"
echo "  . $env_file"
echo "then, for example: picas tokens list --view error; picas server stop"
