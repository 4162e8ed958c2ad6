#!/usr/bin/env bash
# The main job, from nothing: install picas and the local server, start the
# server on disk, create the database with its views, add example tokens,
# let pilots drain them, and print the count per state and the Fauxton URL.
# The server keeps running afterwards so that you can look around; stop it
# with: .venv/bin/picas server stop --data-dir .picas/data
#   PICAS_DEMO_DIR   where the config and data go   [default: .picas]
#   PICAS_DEMO_PORT  port on 127.0.0.1              [default: 5984]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh

demo_dir=${PICAS_DEMO_DIR:-$PWD/.picas}
port=${PICAS_DEMO_PORT:-5984}
mkdir -p "$demo_dir"
export PATH="$PWD/.venv/bin:$PATH"
export PICAS_CONFIG="$demo_dir/conf.yml"
unset PICAS_URL PICAS_DATABASE PICAS_USERNAME PICAS_PASSWORD PICAS_PROFILE

if [ ! -f "$PICAS_CONFIG" ]; then
  # A random admin password, kept only in the 0600 config file.
  python3 -c 'import secrets; print(secrets.token_urlsafe(18))' |
    picas --url "http://127.0.0.1:$port" --database demo --username admin \
      init --password-stdin --no-check
fi
picas server start --data-dir "$demo_dir/data"
picas db create
picas tokens add examples/demo-tokens.yml
picas tokens add --grid n=1..200 --tag demo --command 'echo "token {n}"; sleep 0.0$(( {n} % 5 ))'

echo "==> draining with 4 pilots"
pids=()
for i in 1 2 3 4; do
  picas pilot --workdir "$demo_dir/work" --max-time 600 &
  pids+=($!)
done
wait "${pids[@]}"

picas status
echo
echo "Fauxton: http://127.0.0.1:$port/_utils/#database/demo/_design/Monitor/_view/todo"
echo "  (log in as admin; the password is in $PICAS_CONFIG)"
