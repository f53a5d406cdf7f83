#!/usr/bin/env bash
# The main job on the embedded default: local Incus + the built-in GitHub simulator.
# Brings up Incus, starts github-sim serving the fake runner tarball, reconciles 3 runners with
# runner-manager, runs a few sample jobs in the containers, prints a summary, and tears down.
# Usage: sudo ./scripts/demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
say() { printf '\n\033[1m== %s\033[0m\n' "$*" >&2; }

say "bringing up Incus"
./scripts/incus-env.sh up

say "building runner-manager, github-sim and the fake runner"
cargo build --quiet --bin runner-manager --bin github-sim
./scripts/build-fake-runner.sh >/dev/null
BIN=$ROOT/target/debug

WORK=$(mktemp -d /tmp/runner-manager-demo.XXXXXX)
SIM_PID=""
cleanup() {
  set +e
  if [ -n "${CONFIG:-}" ] && [ -f "$CONFIG" ]; then
    say "tearing down: flushing every runner"
    "$BIN/runner-manager" --config "$CONFIG" flush --json 2>/dev/null
  fi
  [ -n "$SIM_PID" ] && kill "$SIM_PID" 2>/dev/null && wait "$SIM_PID" 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT

say "starting the GitHub simulator on the Incus bridge"
BRIDGE_IP=10.123.45.1
PORT=$(( 18000 + RANDOM % 1000 ))
"$BIN/github-sim" runner-tarball --agent "$ROOT/target/fake-runner/runner-agent" --out "$WORK" >/dev/null
TOKEN="ghp_demo$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
TARBALL=$(ls "$WORK"/actions-runner-linux-x64-*.tar.gz)
VERSION=${TARBALL##*-x64-}; VERSION=${VERSION%.tar.gz}
GITHUB_SIM_TOKEN=$TOKEN "$BIN/github-sim" --listen "$BRIDGE_IP:$PORT" --repo demo/app \
  --tarball "$TARBALL" --runner-version "$VERSION" >"$WORK/sim.log" 2>&1 &
SIM_PID=$!
SIM=http://$BRIDGE_IP:$PORT
up=""
for _ in $(seq 100); do curl -sf "$SIM/_sim/runners" >/dev/null && { up=1; break; }; sleep 0.1; done
[ -n "$up" ] || { cat "$WORK/sim.log" >&2; echo "demo: github-sim did not start" >&2; exit 1; }

CONFIG=$WORK/config.toml
cat >"$CONFIG" <<TOML
app_name = "demo"
unit = 0
state_dir = "$WORK/state"

[github]
path = "demo/app"
token_file = "$WORK/token"
api_url = "$SIM/api/v3"
web_url = "$SIM"

[lxd]
image = "busybox"
instance_type = "container"

[runners]
quantity = 3
cpu = 1
memory = "256MiB"
disk = "1GiB"
TOML
printf '%s' "$TOKEN" > "$WORK/token"; chmod 600 "$WORK/token"

say "fetching and verifying the runner binary"
"$BIN/runner-manager" --config "$CONFIG" runner-bin update

say "reconciling to 3 runners"
"$BIN/runner-manager" --config "$CONFIG" reconcile
"$BIN/runner-manager" --config "$CONFIG" status

say "enqueueing 3 sample jobs"
JOBS=()
for i in 1 2 3; do
  id=$(curl -sf -X POST "$SIM/_sim/jobs" -H 'content-type: application/json' \
    -d "{\"labels\":[\"self-hosted\",\"demo\"],\"script\":\"echo job $i on \$(hostname); uname -m\",\"timeout_seconds\":60}" | jq -r .job_id)
  JOBS+=("$id")
done
for id in "${JOBS[@]}"; do
  for _ in $(seq 300); do
    st=$(curl -sf "$SIM/_sim/jobs/$id" | jq -r .status)
    [ "$st" = completed ] && break; sleep 0.2
  done
done

say "summary"
for id in "${JOBS[@]}"; do
  curl -sf "$SIM/_sim/jobs/$id" | jq -r '"job \(.job_id): \(.status)/\(.conclusion) on \(.runner_name) exit=\(.exit_code) output: \(.output|gsub("\n";" | "))"'
done
say "reconciling again: the finished ephemeral runners are replaced"
"$BIN/runner-manager" --config "$CONFIG" reconcile
"$BIN/runner-manager" --config "$CONFIG" status
