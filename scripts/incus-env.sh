#!/usr/bin/env bash
# The real Incus (and optionally Debian's LXD 5.0) daemon that every test and the demo use.
#
#   ./scripts/incus-env.sh up         install if needed, start incusd, pool, bridge, profile, images
#   ./scripts/incus-env.sh status     what is running
#   ./scripts/incus-env.sh down       `incus admin shutdown`, then stop the pid we started
#   ./scripts/incus-env.sh restart    restart incusd only (SIGTERM: instances keep running)
#   ./scripts/incus-env.sh lxd-up | lxd-down | lxd-status   Debian's LXD 5.0 on its own socket and bridge
# As root (from a non-root shell, prefix with sudo). `up --debian` is accepted: Debian is always built.
# Works on a fresh Debian 12 without systemd, without standard input. Idempotent: a second `up`
# only checks and exits (well under a second); the first builds the Debian image (about 2 minutes,
# cached in $BUILD_DIR). Concurrent runs serialise on a lock file.
# The steps follow a measured recipe (numbered alike below); run `status` to see what is up.
#
# Facts used by the rest of the project:
#   socket   /var/lib/incus/unix.socket (Incus), /var/lib/lxd/unix.socket (LXD)
#   bridge   incusbr0 10.123.45.1/24 without NAT (containers reach host services on 10.123.45.1)
#            lxdbr0   10.123.46.1/24 without NAT (LXD)
#   images   `busybox` (static busybox, ~1 MB, writable /tmp), `busybox-user` (the same plus an
#            unprivileged user `runner`, uid 1001), `debian/bookworm` (debootstrap minbase with
#            systemd as PID 1, udev, networkd DHCP on eth0, dash as /bin/sh, user `ubuntu` uid 1000,
#            hostname templates: like the server images operators run)
#   https    127.0.0.1:18443 (Incus), 127.0.0.1:18444 (LXD): loopback only, for the TLS client tests
set -euo pipefail
exec </dev/null

BUILD_DIR=${INCUS_ENV_BUILD_DIR:-/var/cache/incus-env}
LOCK=/run/incus-env.lock
INCUS_SOCK=/var/lib/incus/unix.socket
INCUS_PID=/run/incusd.pid
INCUS_LOG=/var/log/incus/incus.log
LXD_SOCK=/var/lib/lxd/unix.socket
LXD_PID=/run/lxd.pid
LXD_LOG=/var/log/lxd/lxd.log
INCUS_HTTPS=127.0.0.1:18443
LXD_HTTPS=127.0.0.1:18444
# Bump when the image content changes: `up` then rebuilds and re-aliases the image.
BUSYBOX_RECIPE=2
DEBIAN_RECIPE=3
DEBIAN_ALIAS=debian/bookworm
# The bridges' DHCP lease time (dnsmasq's minimum is 2 minutes; clients renew at half of it).
DHCP_EXPIRY=3m
export DEBIAN_FRONTEND=noninteractive

log() { printf 'incus-env: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# GET a path on a daemon socket; prints the body's metadata (JSON) or fails.
api() { # api SOCKET PATH
  curl -sf --max-time 5 --unix-socket "$1" "http://local$2" 2>/dev/null | jq -ce '.metadata' 2>/dev/null
}
alive() { [ -S "$1" ] && api "$1" /1.0 >/dev/null; }

need_root() { [ "$(id -u)" -eq 0 ] || die "run as root (from a non-root shell: sudo $0 $*)"; }

take_lock() {
  exec 9>"$LOCK"
  command -v flock >/dev/null || return 0
  flock -w 300 9 || die "another incus-env.sh run holds $LOCK"
}

# ---- 1-2. packages ---------------------------------------------------------------------------------
# The machine's own Debian mirror (the main archive, not -security).
debian_mirror() {
  local mirror
  mirror=$(awk '/^URIs:/ && $2 !~ /security/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
  [ -n "$mirror" ] || mirror=$(awk '$1=="deb" && $2 !~ /security/ {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
  printf '%s' "${mirror:-http://deb.debian.org/debian}"
}

add_backports() {
  grep -rqs bookworm-backports /etc/apt/sources.list /etc/apt/sources.list.d/ && return 0
  local mirror
  mirror=$(debian_mirror)
  log "adding bookworm-backports from $mirror"
  printf 'Types: deb\nURIs: %s\nSuites: bookworm-backports\nComponents: main\nSigned-By: %s\n' \
    "$mirror" /usr/share/keyrings/debian-archive-keyring.gpg >/etc/apt/sources.list.d/bookworm-backports.sources
  APT_UPDATED=
}

APT_UPDATED=
apt_install() { # apt_install [-t suite] pkg...
  if [ -z "$APT_UPDATED" ]; then
    timeout 300 apt-get update -q >/dev/null || die "apt-get update failed"
    APT_UPDATED=1
  fi
  timeout 600 apt-get install -y -q --no-install-recommends -o Dpkg::Options::=--force-confold "$@" >/dev/null \
    || die "apt-get install $* failed"
}

install_incus() {
  local missing=()
  [ -x /usr/libexec/incus/incusd ] || missing+=(incus-base)
  command -v incus >/dev/null || missing+=(incus-client)
  command -v dnsmasq >/dev/null || missing+=(dnsmasq-base)
  [ -x /bin/busybox ] && /bin/busybox --list 2>/dev/null | grep -qx udhcpc && file_is_static /bin/busybox \
    || missing+=(busybox-static)
  command -v mkfs.btrfs >/dev/null || missing+=(btrfs-progs)
  command -v curl >/dev/null || missing+=(curl)
  command -v jq >/dev/null || missing+=(jq)
  command -v nft >/dev/null || missing+=(nftables)
  command -v flock >/dev/null || missing+=(util-linux)
  command -v debootstrap >/dev/null || missing+=(debootstrap) # the Debian image
  command -v shellcheck >/dev/null || missing+=(shellcheck)   # the scripts' lint test
  [ ${#missing[@]} -eq 0 ] && return 0
  log "installing ${missing[*]}"
  add_backports
  apt_install -t bookworm-backports "${missing[@]}"
}

# A dynamically linked busybox would not run inside the image (no libc there).
file_is_static() { ! LC_ALL=C ldd "$1" >/dev/null 2>&1; }

# ---- 3. subordinate ids ----------------------------------------------------------------------------
fix_subids() {
  grep -qs '^root:' /etc/subuid || usermod --add-subuids 1000000-1000999999 root
  grep -qs '^root:' /etc/subgid || usermod --add-subgids 1000000-1000999999 root
  local f
  for f in /etc/subuid /etc/subgid; do # keep only the first root range (LXD's postinst appends one)
    if [ "$(grep -c '^root:' "$f")" -gt 1 ]; then
      log "keeping a single root range in $f"
      awk -F: '!($1=="root" && seen++)' "$f" >"$f.new" && cat "$f.new" >"$f" && rm -f "$f.new"
    fi
  done
}

# ---- 4. daemon ---------------------------------------------------------------------------------------
# Prints the pid of a live (non-zombie) process of that exact name, if one: a busy daemon may answer slowly,
# and a second one must never be started beside it.
running() { # running NAME
  local pid args
  for pid in $(pgrep -x "$1" || true); do
    [ "$(ps -o stat= -p "$pid" 2>/dev/null | cut -c1)" = Z ] && continue
    # A process that is gone by the time it is read (a helper that just exited) is not the
    # daemon: taking it for one would wait for a daemon that was never started.
    args=$(tr '\0' '\n' 2>/dev/null <"/proc/$pid/cmdline") || continue
    [ -n "$args" ] || continue
    # incusd's helpers keep its process name: a container's `[lxc monitor]` (which outlives a
    # daemon stopped by SIGTERM) and `incusd forkfile|forkexec|...`. They are not the daemon.
    case $(printf '%s\n' "$args" | head -n1) in "["*) continue ;; esac
    case $(printf '%s\n' "$args" | sed -n 2p) in fork*) continue ;; esac
    # incus-cluster.sh's members are incusd too, each with its own INCUS_DIR: not this daemon.
    tr '\0' '\n' <"/proc/$pid/environ" 2>/dev/null | grep -q '^INCUS_DIR=/var/lib/incus-' && continue
    kill -0 "$pid" 2>/dev/null || continue
    echo "$pid"
    return 0
  done
  return 1
}

start_incusd() {
  alive "$INCUS_SOCK" && return 0
  if running incusd >/dev/null; then
    log "incusd is running but not answering yet; waiting"
  else
    log "starting incusd"
    mkdir -p "$(dirname "$INCUS_LOG")"
    setsid nohup /usr/libexec/incus/incusd --group incus-admin --logfile="$INCUS_LOG" \
      </dev/null >/dev/null 2>&1 9>&- &
    echo $! >"$INCUS_PID"
  fi
  timeout 70 incus admin waitready --timeout=60 || die "incusd did not become ready; see $INCUS_LOG"
}

# ---- 5-6. pool, bridge, default profile ----------------------------------------------------------------
# $1 = CLI (incus|lxc), $2 = bridge name, $3 = bridge address, $4 = pool driver (btrfs falls back to dir)
setup_daemon() {
  local cli=$1 br=$2 addr=$3 driver=$4 ext
  if ! $cli storage show default >/dev/null 2>&1; then
    log "$cli: creating storage pool default ($driver)"
    if [ "$driver" != btrfs ] || ! $cli storage create default btrfs size=8GiB >/dev/null 2>&1; then
      $cli storage create default dir >/dev/null
    fi
  fi
  if ! $cli network show "$br" >/dev/null 2>&1; then
    log "$cli: creating bridge $br $addr (no NAT)"
    $cli network create "$br" ipv4.address="$addr" ipv4.nat=false ipv6.address=none >/dev/null
  fi
  # Short DHCP leases: the cluster's containers (incus-cluster.sh) lease from this bridge's
  # dnsmasq too, and nothing releases their leases when they are deleted; with the default hour
  # a day of tests would exhaust the /24 (253 leases) and new containers get no address.
  if [ "$($cli network get "$br" ipv4.dhcp.expiry 2>/dev/null)" != "$DHCP_EXPIRY" ]; then
    $cli network set "$br" ipv4.dhcp.expiry="$DHCP_EXPIRY" >/dev/null
  fi
  ext=$($cli profile device show default 2>/dev/null || true)
  if ! grep -q '^root:' <<<"$ext"; then
    $cli profile device add default root disk path=/ pool=default >/dev/null
  fi
  if ! grep -q '^eth0:' <<<"$ext"; then
    $cli profile device add default eth0 nic network="$br" name=eth0 >/dev/null
  fi
}

# HTTPS on loopback only, so the client's TLS mode (client certificate + pinned server certificate)
# is tested against the real daemon.
https_on_loopback() { # https_on_loopback CLI ADDRESS
  [ -n "$($1 config get core.https_address 2>/dev/null)" ] && return 0
  log "$1: listening for HTTPS on $2"
  $1 config set core.https_address "$2" >/dev/null
}

# ---- 7. busybox image -------------------------------------------------------------------------------
build_busybox() { # build_busybox ALIAS [user]: with "user", also an unprivileged user `runner`
  local alias=$1 with_user=${2:-} w=$BUILD_DIR/$1 r
  r=$w/rootfs
  rm -rf "$w"
  mkdir -p "$r"
  (
    cd "$r"
    mkdir -p bin sbin etc/init.d proc sys dev root run var/log usr/share/udhcpc tmp
    chmod 1777 tmp
    chmod 0700 root
    cp /bin/busybox bin/
    for a in $(bin/busybox --list); do [ -e "bin/$a" ] || ln -s busybox "bin/$a"; done
    # `incus stop` sends SIGPWR: exiting on it makes a graceful stop take <1 s.
    printf '%s\n' '#!/bin/sh' "trap 'exit 0' PWR TERM INT" '/etc/init.d/rcS' \
      'while :; do sleep 3600 & wait $!; done' >sbin/init
    # /tmp and /run stay on the (writable) rootfs: a tmpfs mounted after boot would hide files
    # pushed right after start.
    printf '%s\n' '#!/bin/sh' 'ip link set lo up' \
      '[ -e /sys/class/net/eth0 ] && ip link set eth0 up && udhcpc -i eth0 -b -t 5 -T 1 -s /usr/share/udhcpc/default.script >/dev/null 2>&1 &' \
      >etc/init.d/rcS
    # shellcheck disable=SC2016 # the script's own variables, expanded when it runs
    printf '%s\n' '#!/bin/sh' 'case "$1" in' '  deconfig) ip addr flush dev "$interface" ;;' \
      '  bound|renew) ip addr flush dev "$interface"; ip addr add "$ip/${mask:-24}" dev "$interface"' \
      '    [ -n "$router" ] && ip route replace default via ${router%% *} dev "$interface"' \
      '    : > /etc/resolv.conf; for d in $dns; do echo "nameserver $d" >> /etc/resolv.conf; done ;;' \
      'esac' >usr/share/udhcpc/default.script
    chmod +x sbin/init etc/init.d/rcS usr/share/udhcpc/default.script
    echo 'root:x:0:0:root:/root:/bin/sh' >etc/passwd
    echo 'root:x:0:' >etc/group
    if [ "$with_user" = user ]; then
      echo 'runner:x:1001:1001:runner:/home/runner:/bin/sh' >>etc/passwd
      echo 'runner:x:1001:' >>etc/group
      mkdir -p home/runner
      chown 1001:1001 home/runner
    fi
    printf '127.0.0.1 localhost\n' >etc/hosts
    : >etc/resolv.conf
  )
  printf 'architecture: %s\ncreation_date: %s\nproperties:\n  os: busybox\n  release: "%s"\n  description: busybox (incus-env recipe %s)\n  recipe: "%s"\n' \
    "$(uname -m)" "$(date +%s)" "$(/bin/busybox | head -1 | awk '{print $2}' | tr -d v)" \
    "$BUSYBOX_RECIPE" "$BUSYBOX_RECIPE" >"$w/metadata.yaml"
  tar -C "$w" --numeric-owner -czf "$BUILD_DIR/$alias.tar.gz" metadata.yaml rootfs
  rm -rf "$w"
}

# The alias as a URL path segment (`debian/bookworm` -> `debian%2Fbookworm`).
alias_path() { printf '%s' "${1//\//%2F}"; }

image_current() { # image_current SOCKET ALIAS RECIPE: the alias names an image of that recipe
  local fp
  fp=$(api "$1" "/1.0/images/aliases/$(alias_path "$2")" | jq -r '.target') || return 1
  [ "$(api "$1" "/1.0/images/$fp" | jq -r '.properties.recipe // empty')" = "$3" ]
}

import_tarball() { # import_tarball CLI SOCKET ALIAS TARBALL RECIPE
  local cli=$1 sock=$2 alias=$3 tarball=$4 recipe=$5 old fp
  old=$(api "$sock" "/1.0/images/aliases/$(alias_path "$alias")" | jq -r '.target' || true)
  log "$cli: importing image $alias (recipe $recipe)"
  # A unified image's fingerprint is the sha256 of its tarball.
  fp=$(sha256sum "$tarball" | cut -d' ' -f1)
  api "$sock" "/1.0/images/$fp" >/dev/null || $cli image import "$tarball" >/dev/null
  if [ -n "$old" ] && [ "$old" != null ]; then
    # Move the alias: instances created meanwhile keep working, the old image goes.
    $cli image alias delete "$alias" >/dev/null 2>&1 || true
    $cli image alias create "$alias" "$fp" >/dev/null
    [ "$old" = "$fp" ] || $cli image delete "$old" >/dev/null 2>&1 || true
  else
    $cli image alias create "$alias" "$fp" >/dev/null
  fi
}

import_busybox() { # import_busybox CLI SOCKET [ALIAS user]
  local cli=$1 sock=$2 alias=${3:-busybox} with_user=${4:-}
  image_current "$sock" "$alias" "$BUSYBOX_RECIPE" && return 0
  mkdir -p "$BUILD_DIR"
  build_busybox "$alias" "$with_user"
  import_tarball "$cli" "$sock" "$alias" "$BUILD_DIR/$alias.tar.gz" "$BUSYBOX_RECIPE"
}

# ---- 8. Debian bookworm image, like the server images operators run -------------------------------
# systemd as PID 1 with udev, systemd-networkd (DHCP on eth0) and systemd-resolved, dash as /bin/sh, an unprivileged
# user `ubuntu` (uid 1000) with a home, an empty machine-id (each instance makes its own, so each
# gets its own DHCP lease), and image templates that write /etc/hostname and /etc/hosts from the
# instance name on create and copy. The tarball is cached in $BUILD_DIR under its recipe number:
# it is built once (debootstrap, 60-90 s) and rebuilt only when DEBIAN_RECIPE changes.
build_debian() { # build_debian TARBALL
  local out=$1 d=$BUILD_DIR/debian.build r mirror started
  r=$d/rootfs
  command -v debootstrap >/dev/null || apt_install debootstrap
  mirror=$(debian_mirror)
  started=$(date +%s)
  log "building image $DEBIAN_ALIAS (recipe $DEBIAN_RECIPE): debootstrap from $mirror (60-90 s)"
  rm -rf "$d"
  mkdir -p "$d/templates"
  # procps (ps, pkill), curl and systemd-resolved (DNS from DHCP) are in every server image too.
  timeout 900 debootstrap --variant=minbase \
    --include=systemd-sysv,dbus,udev,iproute2,procps,curl,systemd-resolved bookworm "$r" "$mirror" \
    >"$BUILD_DIR/debootstrap.log" 2>&1 \
    || { tail -n 20 "$BUILD_DIR/debootstrap.log" >&2; die "debootstrap failed; see $BUILD_DIR/debootstrap.log"; }
  # Without udev, networkd leaves eth0 `pending`: udev is in the package list above.
  printf '[Match]\nName=eth0\n\n[Network]\nDHCP=yes\n' >"$r/etc/systemd/network/eth0.network"
  chroot "$r" systemctl enable systemd-networkd systemd-resolved >/dev/null 2>&1 \
    || die "enabling systemd-networkd failed"
  # No console login in a container: nobody reads it.
  chroot "$r" systemctl mask console-getty.service >/dev/null 2>&1 || true
  chroot "$r" useradd --create-home --uid 1000 --user-group --shell /bin/bash ubuntu \
    || die "adding user ubuntu failed"
  [ "$(readlink -f "$r/bin/sh")" = "$r/usr/bin/dash" ] || die "/bin/sh is not dash in the Debian image"
  # debootstrap copies the host's: the templates write the instance's own.
  printf 'localhost\n' >"$r/etc/hostname"
  printf '127.0.0.1 localhost\n' >"$r/etc/hosts"
  ln -sfn ../run/systemd/resolve/stub-resolv.conf "$r/etc/resolv.conf"
  # Empty: systemd makes one per instance at first boot (networkd's DHCP client id derives from it).
  : >"$r/etc/machine-id"
  rm -f "$r/var/lib/dbus/machine-id"
  rm -rf "$r"/var/cache/apt/archives/*.deb "$r"/var/lib/apt/lists/* "$r"/var/log/*.log
  printf '{{ instance.name }}\n' >"$d/templates/hostname.tpl"
  printf '%s\n' '127.0.0.1 localhost' '127.0.1.1 {{ instance.name }}' \
    '::1 localhost ip6-localhost ip6-loopback' 'ff02::1 ip6-allnodes' 'ff02::2 ip6-allrouters' \
    >"$d/templates/hosts.tpl"
  cat >"$d/metadata.yaml" <<YAML
architecture: $(uname -m)
creation_date: $(date +%s)
properties:
  os: debian
  release: bookworm
  variant: default
  description: Debian bookworm minbase with systemd (incus-env recipe $DEBIAN_RECIPE)
  recipe: "$DEBIAN_RECIPE"
templates:
  /etc/hostname:
    when:
    - create
    - copy
    template: hostname.tpl
  /etc/hosts:
    when:
    - create
    - copy
    template: hosts.tpl
YAML
  tar -C "$d" --numeric-owner -czf "$out.tmp" metadata.yaml templates rootfs
  mv -f "$out.tmp" "$out"
  rm -rf "$d"
  log "built $out in $(($(date +%s) - started)) s"
}

import_debian() { # import_debian CLI SOCKET
  local cli=$1 sock=$2 tarball=$BUILD_DIR/debian-bookworm-recipe$DEBIAN_RECIPE.tar.gz f
  image_current "$sock" "$DEBIAN_ALIAS" "$DEBIAN_RECIPE" && return 0
  mkdir -p "$BUILD_DIR"
  if [ ! -s "$tarball" ]; then
    for f in "$BUILD_DIR"/debian-bookworm*.tar.gz; do [ -e "$f" ] && rm -f "$f"; done
    build_debian "$tarball"
  fi
  import_tarball "$cli" "$sock" "$DEBIAN_ALIAS" "$tarball" "$DEBIAN_RECIPE"
}

# ---- commands ----------------------------------------------------------------------------------------
# Ready = daemon answers, HTTPS on, pool, bridge, profile devices, and each ALIAS=RECIPE image
# alias naming an image of that recipe. Two curl and two jq runs only: `up` on a ready machine
# must stay well under a second.
daemon_ready() { # daemon_ready SOCKET BRIDGE ALIAS=RECIPE...
  local sock=$1 br=$2 spec fps fp urls=() want=() got
  shift 2
  [ -S "$sock" ] || return 1
  for spec in "$@"; do
    urls+=("http://local/1.0/images/aliases/$(alias_path "${spec%=*}")")
    want+=("${spec##*=}")
  done
  fps=$(curl -sf --max-time 5 --unix-socket "$sock" http://local/1.0 http://local/1.0/storage-pools/default \
    "http://local/1.0/networks/$br" http://local/1.0/profiles/default "${urls[@]}" \
    2>/dev/null | jq -rs --argjson n $((4 + $#)) 'if length == $n and all(.[]; .type == "sync")
      and .[0].metadata.config["core.https_address"] and .[3].metadata.devices.root and .[3].metadata.devices.eth0
      then [.[4:][].metadata.target] | join(" ") else empty end' 2>/dev/null) || return 1
  [ -n "$fps" ] || return 1
  urls=()
  for fp in $fps; do urls+=("http://local/1.0/images/$fp"); done
  got=$(curl -sf --max-time 5 --unix-socket "$sock" "${urls[@]}" 2>/dev/null \
    | jq -rs '[.[].metadata.properties.recipe // "none"] | join(" ")' 2>/dev/null) || return 1
  [ "$got" = "${want[*]}" ]
}
incus_ready() {
  daemon_ready "$INCUS_SOCK" incusbr0 "busybox=$BUSYBOX_RECIPE" "busybox-user=$BUSYBOX_RECIPE" \
    "$DEBIAN_ALIAS=$DEBIAN_RECIPE"
}

cmd_up() {
  for a in "$@"; do
    case $a in
      --debian) ;; # the Debian image is always built now; the option stays accepted
      *) die "unknown option $a" ;;
    esac
  done
  if incus_ready && command -v shellcheck >/dev/null; then
    return 0 # fast path: nothing to do
  fi
  need_root up
  take_lock
  install_incus
  fix_subids
  start_incusd
  setup_daemon incus incusbr0 10.123.45.1/24 btrfs
  https_on_loopback incus "$INCUS_HTTPS"
  import_busybox incus "$INCUS_SOCK"
  # The same with an unprivileged `runner` user, for the non-root install path.
  import_busybox incus "$INCUS_SOCK" busybox-user user
  import_debian incus "$INCUS_SOCK"
  incus_ready || die "incus is up but not complete; see $0 status"
  log "incus ready: socket $INCUS_SOCK, bridge incusbr0 10.123.45.1/24, images busybox, busybox-user, $DEBIAN_ALIAS"
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

stop_daemon() { # stop_daemon NAME SOCKET PIDFILE NFT_TABLE SHUTDOWN_CMD...
  local name=$1 sock=$2 pidf=$3 table=$4 pid=
  shift 4
  [ -s "$pidf" ] && pid=$(cat "$pidf")
  if alive "$sock"; then
    log "$name: shutting down (instances are stopped first)"
    timeout 120 "$@" >/dev/null 2>&1 || log "$name: shutdown command failed"
  fi
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    if ! wait_gone "$pid" 30; then
      log "$name: pid $pid still running, sending SIGTERM"
      kill -TERM "$pid" 2>/dev/null || true
      wait_gone "$pid" 10 || { log "$name: sending SIGKILL to $pid"; kill -KILL "$pid" 2>/dev/null || true; }
    fi
  fi
  rm -f "$pidf"
  nft delete table inet "$table" 2>/dev/null || true
  log "$name: stopped"
}

cmd_down() {
  need_root down
  take_lock
  stop_daemon incus "$INCUS_SOCK" "$INCUS_PID" incus incus admin shutdown --timeout 60
}

# Restarts the daemon alone, as a crash or an upgrade would: SIGTERM makes incusd exit without
# stopping instances (SIGPWR and `incus admin shutdown` stop them, and ephemeral ones are then
# deleted), the containers keep running under their monitors, and the new daemon picks them up.
# API calls in flight at that moment fail: other users of the daemon see that too.
cmd_restart() {
  need_root restart
  take_lock
  local pid='' started
  [ -s "$INCUS_PID" ] && pid=$(cat "$INCUS_PID")
  if [ -z "$pid" ] || ! kill -0 "$pid" 2>/dev/null; then
    pid=$(running incusd || true)
  fi
  started=$(date +%s%N)
  if [ -n "$pid" ]; then
    log "incus: restarting: SIGTERM to pid $pid (instances keep running)"
    kill -TERM "$pid" 2>/dev/null || true
    if ! wait_gone "$pid" 30; then
      log "incus: pid $pid still running after 30 s, sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      wait_gone "$pid" 10 || die "incusd pid $pid does not exit"
    fi
  else
    log "incus: not running; starting it"
  fi
  rm -f "$INCUS_PID"
  start_incusd
  incus_ready || die "incus restarted but is not complete; see $0 status"
  log "incus: restarted in $(( ($(date +%s%N) - started) / 1000000 )) ms"
}

cmd_status() {
  local rc=0
  if alive "$INCUS_SOCK"; then
    api "$INCUS_SOCK" /1.0 | jq -r '"incus: running, \(.environment.server) \(.environment.server_version), driver \(.environment.driver), storage \(.environment.storage)"'
    [ -s "$INCUS_PID" ] && echo "incus: pid $(cat "$INCUS_PID") (started by this script)"
    if incus_ready; then
      echo "incus: pool, bridge, profile and images ready"
    else
      echo "incus: NOT complete (run as root: $0 up)"
      rc=1
    fi
    api "$INCUS_SOCK" '/1.0/instances?recursion=0' | jq -r '"incus: \(length) instance(s)"'
  else
    echo "incus: not running (run as root: $0 up)"
    rc=1
  fi
  if alive "$LXD_SOCK"; then
    api "$LXD_SOCK" /1.0 | jq -r '"lxd: running, \(.environment.server) \(.environment.server_version), storage \(.environment.storage)"'
  fi
  return $rc
}

# ---- Debian's LXD 5.0 (bookworm main) ------------------------------------------------------------------
lxd_ready() { daemon_ready "$LXD_SOCK" lxdbr0 "busybox=$BUSYBOX_RECIPE"; }

cmd_lxd_up() {
  lxd_ready && return 0
  need_root lxd-up
  take_lock
  install_incus # busybox, btrfs-progs, jq, curl...
  if ! command -v lxd >/dev/null || ! command -v lxc >/dev/null; then
    log "installing Debian's lxd 5.0"
    apt_install lxd lxd-client dnsmasq-base
  fi
  fix_subids # lxd's postinst appends a second root range, which breaks every Incus container start
  if ! alive "$LXD_SOCK" && ! running lxd >/dev/null; then
    log "starting lxd"
    mkdir -p "$(dirname "$LXD_LOG")"
    setsid nohup lxd --group lxd --logfile="$LXD_LOG" </dev/null >/dev/null 2>&1 9>&- &
    echo $! >"$LXD_PID"
  fi
  timeout 70 lxd waitready --timeout=60 || die "lxd did not become ready; see $LXD_LOG"
  export LXD_DIR=/var/lib/lxd
  setup_daemon lxc lxdbr0 10.123.46.1/24 dir # leaves the loop devices to Incus
  https_on_loopback lxc "$LXD_HTTPS"
  import_busybox lxc "$LXD_SOCK"
  lxd_ready || die "lxd is up but not complete"
  log "lxd ready: socket $LXD_SOCK, bridge lxdbr0 10.123.46.1/24, image busybox"
}

cmd_lxd_down() {
  need_root lxd-down
  take_lock
  LXD_DIR=/var/lib/lxd stop_daemon lxd "$LXD_SOCK" "$LXD_PID" lxd lxd shutdown --timeout 60
}

case ${1:-} in
  up) shift; cmd_up "$@" ;;
  down) cmd_down ;;
  restart) cmd_restart ;;
  status) cmd_status ;;
  lxd-up) cmd_lxd_up ;;
  lxd-down) cmd_lxd_down ;;
  lxd-status) if lxd_ready; then echo "lxd: ready"; else echo "lxd: not ready (run as root: $0 lxd-up)"; exit 1; fi ;;
  *) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
