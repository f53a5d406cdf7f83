#!/usr/bin/env bash
# A real 3-member Incus cluster on this machine, next to the standalone daemon of incus-env.sh.
#
#   ./scripts/incus-cluster.sh up            start (or create) the cluster; idempotent, fast when up
#   ./scripts/incus-cluster.sh status        members, their daemons and images
#   ./scripts/incus-cluster.sh down          stop every member (their instances stop); data kept
#   ./scripts/incus-cluster.sh kill MEMBER   SIGKILL one member's incusd (its containers keep running)
#   ./scripts/incus-cluster.sh start MEMBER  restart it; waits until calls forwarded to it work
#   ./scripts/incus-cluster.sh start-nowait MEMBER   the same, back as soon as its own socket answers
#   ./scripts/incus-cluster.sh verify        a busybox and a Debian container per member reach 10.123.45.1
#   ./scripts/incus-cluster.sh purge         down, then delete the members' data (the next up is fresh)
# As root, without systemd, without standard input. Runs `incus-env.sh up` first (the standalone
# daemon's bridge, packages and image tarballs); never stops or changes the standalone daemon.
# Concurrent runs serialise on a lock file. The steps follow shared/reference/incus-cluster.md.
#
# Facts used by the rest of the project:
#   members  m1 m2 m3, each its own incusd and INCUS_DIR /var/lib/incus-mN, address 127.0.1.N:8443,
#            all database voters (a quorum is 2 of 3), cluster.offline_threshold 11 s
#   socket   /var/lib/incus-m1/unix.socket (any member's /var/lib/incus-mN/unix.socket works)
#   storage  pool `default`: btrfs on a sparse loop file per member (/var/lib/incus-mN/disks)
#   network  default profile NIC eth0 `nictype: bridged, parent: rmclbr0`: a host bridge of this
#            script's own, 10.124.0.1/16, with its own dnsmasq (2-minute leases, router 10.124.0.1);
#            containers on every member reach host services (the GitHub simulator) on 10.123.45.1
#            through the host, as standalone ones do. Not the standalone daemon's incusbr0: nothing
#            releases the lease of a deleted cluster container there, and its /24 ran out.
#   images   `busybox`, `busybox-user`, `debian/bookworm`: the standalone daemon's images (same
#            fingerprints), imported on m1; other members copy one on their first launch of it
#   logs     /var/lib/incus-mN/incusd.log; pids /run/incus-cluster-mN.pid
set -euo pipefail
exec </dev/null
cd "$(dirname "$0")/.."

MEMBERS=(m1 m2 m3)
LOCK=/run/incus-cluster.lock
TESTS_LOCK=/run/incus-cluster-tests.lock # held by each cluster test (test_support::cluster::serial)
STANDALONE_SOCK=/var/lib/incus/unix.socket
BUILD_DIR=${INCUS_ENV_BUILD_DIR:-/var/cache/incus-env}
POOL_SIZE=5GiB
OFFLINE_THRESHOLD=11
BRIDGE=rmclbr0
BRIDGE_NET=10.124.0.1/16
DHCP_RANGE=10.124.0.10,10.124.255.250,2m
DNSMASQ_PID=/run/incus-cluster-dnsmasq.pid
DNSMASQ_LEASES=/var/lib/incus-cluster-dnsmasq.leases
BRIDGE_IP=10.123.45.1 # where containers reach the host's services (the standalone bridge's address)
IMAGES=(busybox busybox-user debian/bookworm)
INCUSD=/usr/libexec/incus/incusd

log() { printf 'incus-cluster: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
need_root() { [ "$(id -u)" -eq 0 ] || die "run as root (from a non-root shell: sudo $0 $*)"; }
now_ms() { echo $(($(date +%s%N) / 1000000)); }

take_lock() {
  exec 9>"$LOCK"
  flock -w 300 9 || die "another incus-cluster.sh run holds $LOCK"
}

# Per member paths: mdir m1 -> /var/lib/incus-m1, and so on.
mnum() { printf '%s' "${1#m}"; }
mdir() { printf '/var/lib/incus-%s' "$1"; }
msock() { printf '%s/unix.socket' "$(mdir "$1")"; }
maddr() { printf '127.0.1.%s:8443' "$(mnum "$1")"; }
mpidf() { printf '/run/incus-cluster-%s.pid' "$1"; }
mlog() { printf '%s/incusd.log' "$(mdir "$1")"; }
is_member() { local m; for m in "${MEMBERS[@]}"; do [ "$m" = "$1" ] && return 0; done; return 1; }

# The incus CLI against one member.
mcli() { # mcli MEMBER ARGS...
  local m=$1
  shift
  INCUS_DIR=$(mdir "$m") timeout 120 incus "$@"
}

# GET a path on a socket; prints the body's metadata (JSON) or fails.
api() { # api SOCKET PATH [MAX_SECONDS]
  curl -sf --max-time "${3:-5}" --unix-socket "$1" "http://local$2" 2>/dev/null | jq -ce '.metadata' 2>/dev/null
}
alive() { [ -S "$1" ] && api "$1" /1.0 2 >/dev/null; }
alias_path() { printf '%s' "${1//\//%2F}"; }

# The pid of MEMBER's incusd if it runs: the pid file's process, if it is an incusd daemon (not a
# helper or a container monitor) with that member's INCUS_DIR. Else the same found by scanning.
member_pid() { # member_pid MEMBER
  local m=$1 pidf pid
  pidf=$(mpidf "$m")
  if [ -s "$pidf" ]; then
    pid=$(cat "$pidf")
    if is_member_daemon "$pid" "$m"; then
      echo "$pid"
      return 0
    fi
  fi
  for pid in $(pgrep -x incusd || true); do
    if is_member_daemon "$pid" "$m"; then
      echo "$pid"
      return 0
    fi
  done
  return 1
}
is_member_daemon() { # is_member_daemon PID MEMBER
  local pid=$1 dir arg1
  dir=$(mdir "$2")
  [ -r "/proc/$pid/cmdline" ] || return 1
  [ "$(ps -o stat= -p "$pid" 2>/dev/null | cut -c1)" = Z ] && return 1
  [ "$(tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null | head -n1)" = "$INCUSD" ] || return 1
  arg1=$(tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null | sed -n 2p)
  case $arg1 in fork* | waitready | shutdown) return 1 ;; esac
  tr '\0' '\n' <"/proc/$pid/environ" 2>/dev/null | grep -qx "INCUS_DIR=$dir"
}

# Waits for PID to exit (a zombie counts as exited: PID 1 may not reap it).
wait_gone() { # wait_gone PID SECONDS
  local pid=$1 n=$(($2 * 10))
  while [ $n -gt 0 ]; do
    kill -0 "$pid" 2>/dev/null || return 0
    [ "$(ps -o stat= -p "$pid" 2>/dev/null | cut -c1)" = Z ] && return 0
    sleep 0.1
    n=$((n - 1))
  done
  return 1
}

# ---- 1. one daemon per member, each with its own data dir -----------------------------------------
spawn_member() { # spawn_member MEMBER: starts its incusd unless it runs (does not wait)
  local m=$1 dir
  dir=$(mdir "$m")
  member_pid "$m" >/dev/null && return 0
  mkdir -p "$dir"
  chmod 0711 "$dir"
  log "$m: starting incusd (INCUS_DIR=$dir)"
  INCUS_DIR=$dir setsid nohup "$INCUSD" --group incus-admin --logfile="$(mlog "$m")" \
    </dev/null >/dev/null 2>&1 8>&- 9>&- &
  echo $! >"$(mpidf "$m")"
}

wait_member_ready() { # wait_member_ready MEMBER SECONDS
  local m=$1 s=$2
  INCUS_DIR=$(mdir "$m") timeout $((s + 5)) incus admin waitready --timeout="$s" >/dev/null 2>&1 \
    || die "$m did not become ready in ${s} s; see $(mlog "$m")"
}

# True once the member's daemon ran (it made its database), joined or not.
member_initialised() { [ -d "$(mdir "$1")/database/global" ]; }

# ---- network: the cluster's own bridge and DHCP ----------------------------------------------------
dnsmasq_running() { [ -s "$DNSMASQ_PID" ] && kill -0 "$(cat "$DNSMASQ_PID")" 2>/dev/null; }
ensure_bridge() {
  if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
    log "creating bridge $BRIDGE $BRIDGE_NET"
    ip link add "$BRIDGE" type bridge
  fi
  ip -4 addr show dev "$BRIDGE" | grep -q "inet ${BRIDGE_NET%/*}/" || ip addr add "$BRIDGE_NET" dev "$BRIDGE"
  ip link set "$BRIDGE" up
  dnsmasq_running && return 0
  log "starting dnsmasq on $BRIDGE (range ${DHCP_RANGE})"
  # DHCP only (no DNS: --port=0); the host is the router, so 10.123.45.1 is reached through it.
  dnsmasq --conf-file=/dev/null --port=0 --strict-order --bind-interfaces --except-interface=lo \
    --interface="$BRIDGE" --listen-address="${BRIDGE_NET%/*}" --dhcp-range="$DHCP_RANGE" \
    --dhcp-option=3,"${BRIDGE_NET%/*}" --dhcp-authoritative --dhcp-rapid-commit --no-ping \
    --dhcp-leasefile="$DNSMASQ_LEASES" --pid-file="$DNSMASQ_PID" 8>&- 9>&- \
    || die "dnsmasq on $BRIDGE failed to start"
}
remove_bridge() {
  if dnsmasq_running; then kill "$(cat "$DNSMASQ_PID")" 2>/dev/null || true; fi
  rm -f "$DNSMASQ_PID"
  ip link show "$BRIDGE" >/dev/null 2>&1 && ip link del "$BRIDGE"
  return 0
}
# The default profile's NIC on this script's bridge (a cluster made when it used another).
ensure_profile_nic() {
  [ "$(mcli m1 profile device get default eth0 parent 2>/dev/null)" = "$BRIDGE" ] && return 0
  log "default profile: eth0 on $BRIDGE"
  mcli m1 profile device set default eth0 parent "$BRIDGE" >/dev/null \
    || die "setting the default profile's eth0 parent to $BRIDGE failed"
}

# ---- 2. bootstrap m1 -----------------------------------------------------------------------------
bootstrap_m1() {
  log "m1: bootstrapping the cluster on $(maddr m1) (pool default: btrfs $POOL_SIZE, NIC on $BRIDGE)"
  mcli m1 admin init --preseed >/dev/null <<YAML || die "m1: preseed failed; see $(mlog m1)"
config:
  core.https_address: $(maddr m1)
storage_pools:
- name: default
  driver: btrfs
  config:
    size: $POOL_SIZE
profiles:
- name: default
  devices:
    root:
      type: disk
      path: /
      pool: default
    eth0:
      type: nic
      nictype: bridged
      parent: $BRIDGE
      name: eth0
cluster:
  server_name: m1
  enabled: true
YAML
}

# Cluster-wide settings, only once clustering is enabled (on an unclustered 6.0.4 server the
# threshold fails and the rest of a preseed is dropped).
cluster_settings() {
  [ "$(mcli m1 config get cluster.offline_threshold 2>/dev/null)" = "$OFFLINE_THRESHOLD" ] && return 0
  mcli m1 config set cluster.offline_threshold "$OFFLINE_THRESHOLD" >/dev/null \
    || die "setting cluster.offline_threshold failed"
}

# The members the cluster knows (server_name of each), read on m1.
known_members() { api "$(msock m1)" '/1.0/cluster/members?recursion=1' 10 | jq -r '.[].server_name'; }

# ---- 3. join m2 and m3 ----------------------------------------------------------------------------
join_member() { # join_member MEMBER
  local m=$1 token pid
  if member_initialised "$m"; then
    # It has a database of its own but the cluster does not know it: a join that failed half-way.
    log "$m: has data but is not a member; wiping it to join again"
    if pid=$(member_pid "$m"); then
      kill -KILL "$pid" 2>/dev/null || true
      wait_gone "$pid" 10 || die "$m: pid $pid does not exit"
    fi
    wipe_member "$m"
  fi
  spawn_member "$m"
  wait_member_ready "$m" 60
  mcli m1 cluster revoke-token "$m" >/dev/null 2>&1 || true
  token=$(mcli m1 cluster add "$m" --quiet) || die "m1: no join token for $m"
  log "$m: joining on $(maddr "$m")"
  mcli "$m" admin init --preseed >/dev/null <<YAML || die "$m: join failed; see $(mlog "$m")"
cluster:
  enabled: true
  server_name: $m
  server_address: $(maddr "$m")
  cluster_token: $token
  member_config:
  - entity: storage-pool
    name: default
    key: size
    value: $POOL_SIZE
YAML
}

# ---- 4. images, the standalone daemon's ------------------------------------------------------------
# Each alias names the image the standalone daemon's alias names (incus-env.sh keeps those current):
# imported from incus-env.sh's tarball of that fingerprint, else exported from the standalone daemon.
sync_image() { # sync_image ALIAS
  local alias=$1 want have f tarball='' tmp=''
  want=$(api "$STANDALONE_SOCK" "/1.0/images/aliases/$(alias_path "$alias")" | jq -r '.target') \
    || die "the standalone daemon has no image $alias (run ./scripts/incus-env.sh up)"
  have=$(api "$(msock m1)" "/1.0/images/aliases/$(alias_path "$alias")" | jq -r '.target' || true)
  [ "$have" = "$want" ] && return 0
  if ! api "$(msock m1)" "/1.0/images/$want" >/dev/null; then
    for f in "$BUILD_DIR"/*.tar.gz; do
      [ -s "$f" ] || continue
      # A unified image's fingerprint is the sha256 of its tarball; sizes first (cheap).
      [ "$(stat -c %s "$f")" = "$(api "$STANDALONE_SOCK" "/1.0/images/$want" | jq -r '.size')" ] || continue
      [ "$(sha256sum "$f" | cut -d' ' -f1)" = "$want" ] && { tarball=$f; break; }
    done
    if [ -z "$tarball" ]; then
      tmp=$(mktemp -d)
      log "exporting image $alias from the standalone daemon"
      timeout 300 incus image export "$want" "$tmp/image" >/dev/null || die "exporting $alias failed"
      tarball=$(ls "$tmp"/image*)
    fi
    log "m1: importing image $alias ($tarball)"
    mcli m1 image import "$tarball" >/dev/null || die "importing $alias failed"
    [ -n "$tmp" ] && rm -rf "$tmp"
  fi
  if [ -n "$have" ] && [ "$have" != null ]; then
    mcli m1 image alias delete "$alias" >/dev/null 2>&1 || true
    mcli m1 image alias create "$alias" "$want" >/dev/null
    mcli m1 image delete "$have" >/dev/null 2>&1 || true
  else
    mcli m1 image alias create "$alias" "$want" >/dev/null
  fi
}

# ---- ready check: a few curl calls, so `up` on a running cluster stays well under a second --------
cluster_ready() {
  local m1s want have urls=() a
  m1s=$(msock m1)
  for m in "${MEMBERS[@]}"; do alive "$(msock "$m")" || return 1; done
  for a in "${IMAGES[@]}"; do urls+=("http://local/1.0/images/aliases/$(alias_path "$a")"); done
  want=$(curl -sf --max-time 5 --unix-socket "$STANDALONE_SOCK" "${urls[@]}" 2>/dev/null \
    | jq -rs '[.[].metadata.target] | join(" ")') || return 1
  have=$(curl -sf --max-time 5 --unix-socket "$m1s" http://local/1.0 \
    'http://local/1.0/cluster/members?recursion=1' http://local/1.0/storage-pools/default \
    http://local/1.0/profiles/default "${urls[@]}" 2>/dev/null \
    | jq -rs --argjson n $((4 + ${#IMAGES[@]})) --arg th "$OFFLINE_THRESHOLD" --arg br "$BRIDGE" \
      --argjson members "$(printf '%s\n' "${MEMBERS[@]}" | jq -Rn '[inputs]')" '
      if length == $n and all(.[]; .type == "sync")
        and .[0].metadata.config["cluster.offline_threshold"] == $th
        and ([.[1].metadata[] | select(.status == "Online") | .server_name] | sort) == ($members | sort)
        and .[3].metadata.devices.root.pool == "default" and .[3].metadata.devices.eth0.parent == $br
      then [.[4:][].metadata.target] | join(" ") else empty end' 2>/dev/null) || return 1
  [ -n "$have" ] && [ "$have" = "$want" ]
}

# ---- commands -----------------------------------------------------------------------------------------
cmd_up() {
  need_root up
  ./scripts/incus-env.sh up # the packages and the image tarballs
  ensure_bridge
  cluster_ready && return 0
  # A cluster test may have killed a member on purpose (it restarts it itself): wait for the
  # running one to end first (test_support::cluster::serial holds this lock), then repair.
  exec 8>"$TESTS_LOCK"
  if ! flock -n 8; then
    log "not ready while a cluster test runs: waiting for it to end ($TESTS_LOCK)"
    flock -w 900 8 || log "a cluster test holds $TESTS_LOCK for 15 minutes; repairing anyway"
  fi
  take_lock
  cluster_ready && return 0
  local started m fresh=''
  started=$(now_ms)
  command -v mkfs.btrfs >/dev/null || die "btrfs-progs missing (incus-env.sh up installs it)"
  # Start every member that has data at once: a restarted cluster needs its quorum to answer.
  for m in "${MEMBERS[@]}"; do member_initialised "$m" && spawn_member "$m"; done
  spawn_member m1
  wait_member_ready m1 90
  # Not clustered yet: a new machine, or a bootstrap that failed before clustering was enabled.
  if [ "$(api "$(msock m1)" /1.0/cluster 10 | jq -r '.enabled')" != true ]; then
    fresh=1
    bootstrap_m1
  fi
  cluster_settings
  ensure_profile_nic
  for m in "${MEMBERS[@]:1}"; do
    if known_members | grep -qx "$m"; then
      member_pid "$m" >/dev/null || spawn_member "$m"
      wait_member_ready "$m" 90
    else
      fresh=1
      join_member "$m"
    fi
  done
  for a in "${IMAGES[@]}"; do sync_image "$a"; done
  wait_all_online 60
  wait_forwarding 60
  cluster_ready || die "the cluster is up but not complete; see $0 status"
  log "cluster up in $(($(now_ms) - started)) ms: members ${MEMBERS[*]}, socket $(msock m1)"
  # A new cluster: check once that containers on every member reach the host on the bridge.
  [ -z "$fresh" ] || verify_network
}

wait_all_online() { # wait_all_online SECONDS
  local n=$(($1 * 5)) online
  while [ $n -gt 0 ]; do
    online=$(api "$(msock m1)" '/1.0/cluster/members?recursion=1' 5 \
      | jq -r '[.[] | select(.status == "Online")] | length' 2>/dev/null || echo 0)
    [ "$online" = "${#MEMBERS[@]}" ] && return 0
    sleep 0.2
    n=$((n - 1))
  done
  die "not every member is Online after $1 s; see $0 status"
}

# Until calls forwarded to every member work (a member just started answers "Server isn't
# ready yet" for a few seconds while it already reads Online).
wait_forwarding() { # wait_forwarding SECONDS
  local m other n
  for m in "${MEMBERS[@]}"; do
    other=m1
    [ "$m" = m1 ] && other=m2
    n=$(($1 * 5))
    until forwarded_ok "$other" "$m"; do
      n=$((n - 1))
      [ $n -gt 0 ] || die "calls forwarded to $m still fail after $1 s; see $(mlog "$m")"
      sleep 0.2
    done
  done
}

cmd_status() {
  local m pid rc=0 sock=''
  for m in "${MEMBERS[@]}"; do
    if pid=$(member_pid "$m"); then
      if alive "$(msock "$m")"; then
        echo "$m: incusd pid $pid, $(maddr "$m"), socket $(msock "$m")"
        [ -n "$sock" ] || sock=$(msock "$m")
      else
        echo "$m: incusd pid $pid NOT answering on $(msock "$m")"
        rc=1
      fi
    else
      echo "$m: not running"
      rc=1
    fi
  done
  if [ -n "$sock" ]; then
    api "$sock" '/1.0/cluster/members?recursion=1' 10 \
      | jq -r '.[] | "member \(.server_name) \(.url) \(.status) roles=\(.roles | join(",")) groups=\(.groups // [] | join(",")) \(.message)"' \
      || { echo "cluster: members not readable (no quorum?)"; rc=1; }
    api "$sock" '/1.0/images?recursion=1' 10 \
      | jq -r '.[] | "image \(.aliases | map(.name) | join(",")) \(.fingerprint[0:12])"' || true
    api "$sock" '/1.0/instances?recursion=1' 10 | jq -r '"cluster: \(length) instance(s)"' || true
  fi
  if [ $rc -eq 0 ] && cluster_ready; then echo "cluster: ready"; else echo "cluster: NOT ready (run as root: $0 up)"; rc=1; fi
  return $rc
}

# SIGKILL of one member's daemon, as a crash would: its containers keep running under their monitors.
cmd_kill() { # cmd_kill MEMBER
  local m=$1 pid
  need_root kill
  take_lock
  pid=$(member_pid "$m") || { log "$m: not running"; return 0; }
  log "$m: SIGKILL to incusd pid $pid"
  kill -KILL "$pid"
  wait_gone "$pid" 10 || die "$m: pid $pid does not exit"
  rm -f "$(mpidf "$m")"
}

# Restarts a member and waits until the cluster forwards calls to it: right after a restart its
# status reads Online but forwarded calls fail with "Server isn't ready yet" for a few seconds.
cmd_start() { # cmd_start MEMBER [nowait]
  local m=$1 started other n
  need_root start
  take_lock
  member_initialised "$m" || die "$m has no data: run $0 up"
  started=$(now_ms)
  spawn_member "$m"
  wait_member_ready "$m" 90
  if [ "${2:-}" = nowait ]; then
    log "$m: ready on its own socket $(($(now_ms) - started)) ms after start (forwarded calls not waited for)"
    return 0
  fi
  other=m1
  [ "$m" = m1 ] && other=m2
  n=300
  while [ $n -gt 0 ]; do
    if forwarded_ok "$other" "$m" && forwarded_ok "$m" "$other"; then
      log "$m: usable again $(($(now_ms) - started)) ms after start"
      return 0
    fi
    sleep 0.2
    n=$((n - 1))
  done
  die "$m: calls forwarded to it still fail after 60 s; see $(mlog "$m")"
}

# A call made on FROM's socket that FROM forwards to member TO answers (not "Server isn't ready yet").
forwarded_ok() { # forwarded_ok FROM TO
  local to=$2 body
  body=$(curl -s --max-time 5 --unix-socket "$(msock "$1")" \
    "http://local/1.0/resources?target=$to" 2>/dev/null) || return 1
  [ "$(jq -r '.type' <<<"$body" 2>/dev/null)" = sync ] || return 1
  body=$(curl -s --max-time 5 --unix-socket "$(msock "$1")" \
    "http://local/1.0/instances?recursion=1&target=$to" 2>/dev/null) || return 1
  [ "$(jq -r '.type' <<<"$body" 2>/dev/null)" = sync ]
}

# Stops every member, one after the other (m3, m2, then m1): `incus admin shutdown` stops a member's
# instances, then its daemon. Measured: the first ones exit in under a second; the last one stops its
# instances, then waits for a quorum that is gone: once its instances are stopped it gets 2 s, then
# SIGKILL (it ignores SIGTERM while waiting). Mounts and loop devices a killed daemon leaves go too.
cmd_down() {
  need_root down
  take_lock
  local started m i running=()
  started=$(now_ms)
  # A killed member's containers run on without their daemon: start it so it stops them.
  for m in "${MEMBERS[@]}"; do
    if ! member_pid "$m" >/dev/null && member_initialised "$m" && [ -n "$(member_monitors "$m")" ]; then
      spawn_member "$m"
    fi
  done
  for m in "${MEMBERS[@]}"; do member_pid "$m" >/dev/null && running+=("$m"); done
  for ((i = ${#running[@]} - 1; i >= 0; i--)); do
    if [ "$i" -eq 0 ]; then stop_member "${running[$i]}" 2; else stop_member "${running[$i]}" 20; fi
  done
  for m in "${MEMBERS[@]}"; do release_mounts "$m"; done
  remove_bridge
  log "cluster down in $(($(now_ms) - started)) ms"
}

# The pids of the container monitors of MEMBER's instances.
member_monitors() { pgrep -f "^\[lxc monitor\] $(mdir "$1")/containers " || true; }

stop_member() { # stop_member MEMBER GRACE: shutdown, instances stopped, then GRACE s before SIGKILL
  local m=$1 grace=$2 pid sd='' n
  pid=$(member_pid "$m") || return 0
  if INCUS_DIR=$(mdir "$m") timeout 60 incus admin waitready --timeout=30 >/dev/null 2>&1; then
    log "$m: shutting down (pid $pid; its instances stop first)"
    INCUS_DIR=$(mdir "$m") timeout 40 incus admin shutdown --timeout 30 >/dev/null 2>&1 9>&- &
    sd=$!
    n=300
    while [ $n -gt 0 ] && [ -n "$(member_monitors "$m")" ] && ! wait_gone "$pid" 0; do
      sleep 0.1
      n=$((n - 1))
    done
  fi
  if ! wait_gone "$pid" "$grace"; then
    log "$m: still running (waiting for a quorum that is gone): SIGKILL to pid $pid"
    kill -KILL "$pid" 2>/dev/null || true
    wait_gone "$pid" 10 || log "$m: pid $pid does not exit"
  fi
  [ -z "$sd" ] || { kill "$sd" 2>/dev/null || true; wait "$sd" 2>/dev/null || true; }
  rm -f "$(mpidf "$m")"
}

# Unmounts what a member's daemon left mounted when it was killed (pool, shmounts, guestapi) and
# detaches its loop device, unless its daemon runs or its containers do.
release_mounts() { # release_mounts MEMBER
  local m=$1 dir mnt loop
  dir=$(mdir "$m")
  member_pid "$m" >/dev/null && return 0
  [ -z "$(member_monitors "$m")" ] || { log "$m: containers still running; leaving its mounts"; return 0; }
  awk -v d="$dir/" 'index($2, d) == 1 {print $2}' /proc/mounts | sort -r | while read -r mnt; do
    umount "$mnt" 2>/dev/null || log "$m: could not unmount $mnt"
  done
  for loop in $(losetup -nO NAME -j "$dir/disks/default.img" 2>/dev/null); do
    losetup -d "$loop" 2>/dev/null || true
  done
}

wipe_member() { # wipe_member MEMBER: its data dir, once its daemon, mounts and loop device are gone
  local m=$1 dir
  dir=$(mdir "$m")
  [ -d "$dir" ] || return 0
  release_mounts "$m"
  awk -v d="$dir/" 'index($2, d) == 1 {found = 1} END {exit !found}' /proc/mounts \
    && die "$m: $dir still has mounts; not deleting it"
  rm -rf "$dir"
}

cmd_purge() {
  cmd_down
  local m
  for m in "${MEMBERS[@]}"; do
    log "$m: deleting $(mdir "$m")"
    wipe_member "$m"
  done
}

# ---- 5. network check: containers on every member get a lease from the standalone dnsmasq and reach
# a TCP listener on the host's bridge address. No shell runs in the guests: wget and curl directly.
verify_network() {
  local started dir port srv m img name names=() launches=() token fails=0 p
  started=$(now_ms)
  dir=$(mktemp -d)
  token=cluster-ok-$$
  printf '%s\n' "$token" >"$dir/ok"
  port=$((20000 + $$ % 10000))
  # Bounded: a failed check (die) leaves nothing running for long.
  timeout 300 busybox httpd -f -p "$BRIDGE_IP:$port" -h "$dir" 8>&- 9>&- &
  srv=$!
  for m in "${MEMBERS[@]}"; do
    for img in busybox debian/bookworm; do
      name=icl-verify-$m-${img%%/*}
      names+=("$name")
      (mcli m1 delete -f "$name" >/dev/null 2>&1 || true
        mcli m1 launch "$img" "$name" --ephemeral --target "$m" >/dev/null 2>&1 \
          || log "$name: launch on $m failed") 9>&- &
      launches+=($!)
    done
  done
  for p in "${launches[@]}"; do wait "$p" || true; done
  for name in "${names[@]}"; do
    check_container "$name" "$port" "$token" || fails=$((fails + 1))
  done
  launches=()
  for name in "${names[@]}"; do
    mcli m1 delete -f "$name" >/dev/null 2>&1 9>&- &
    launches+=($!)
  done
  for p in "${launches[@]}"; do wait "$p" || true; done
  kill "$srv" 2>/dev/null || true
  wait "$srv" 2>/dev/null || true
  rm -rf "$dir"
  [ $fails -eq 0 ] || die "network check: $fails of ${#names[@]} containers could not reach $BRIDGE_IP"
  log "network check: ${#names[@]} containers (busybox and debian on ${MEMBERS[*]}) reached $BRIDGE_IP:$port in $(($(now_ms) - started)) ms"
}

check_container() { # check_container NAME PORT TOKEN
  local name=$1 port=$2 token=$3 n=150 addr='' loc got
  while [ $n -gt 0 ]; do
    addr=$(api "$(msock m1)" "/1.0/instances/$name/state" 5 \
      | jq -r '[.network.eth0.addresses[]? | select(.family == "inet") | .address][0] // empty' 2>/dev/null || true)
    [ -n "$addr" ] && break
    sleep 0.2
    n=$((n - 1))
  done
  loc=$(api "$(msock m1)" "/1.0/instances/$name" 5 | jq -r '.location' || true)
  [ -n "$addr" ] || { log "$name (on $loc): no IPv4 address from $BRIDGE's dnsmasq after 30 s"; return 1; }
  case $name in
    *busybox) got=$(mcli m1 exec "$name" -- timeout 5 wget -q -O - "http://$BRIDGE_IP:$port/ok" 2>&1 || true) ;;
    *) got=$(mcli m1 exec "$name" -- curl -sf --max-time 5 "http://$BRIDGE_IP:$port/ok" 2>&1 || true) ;;
  esac
  if [ "$got" != "$token" ]; then
    log "$name (on $loc, $addr): could not reach $BRIDGE_IP:$port: $got"
    return 1
  fi
}

cmd_verify() {
  need_root verify
  cluster_ready || die "the cluster is not up: run $0 up"
  take_lock
  verify_network
}

member_arg() { # member_arg COMMAND MEMBER
  [ -n "${2:-}" ] || die "usage: $0 $1 MEMBER (one of ${MEMBERS[*]})"
  is_member "$2" || die "unknown member $2 (one of ${MEMBERS[*]})"
}

case ${1:-} in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  kill) member_arg kill "${2:-}"; cmd_kill "$2" ;;
  start) member_arg start "${2:-}"; cmd_start "$2" ;;
  start-nowait) member_arg start-nowait "${2:-}"; cmd_start "$2" nowait ;;
  verify) cmd_verify ;;
  purge) cmd_purge ;;
  *) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
