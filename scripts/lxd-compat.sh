#!/usr/bin/env bash
# Runs the `lxd` crate's integration suite against Debian's LXD 5.0 (and then Incus, for comparison).
# LXD runs beside Incus on its own socket (/var/lib/lxd/unix.socket) and bridge (lxdbr0, 10.123.46.1/24);
# incus-env.sh keeps /etc/subuid and /etc/subgid at one root range, which Incus needs.
# Usage: sudo ./scripts/lxd-compat.sh [extra cargo test args]     (LXD is left running; stop it with
#        sudo ./scripts/incus-env.sh lxd-down)
set -euo pipefail
exec </dev/null
cd "$(dirname "$0")/.."
./scripts/incus-env.sh lxd-up
echo "== lxd crate against $(curl -sf --max-time 5 --unix-socket /var/lib/lxd/unix.socket http://lxd/1.0 \
  | jq -r '.metadata.environment | "\(.server) \(.server_version)"')"
env -u INCUS_SOCKET -u INCUS_DIR LXD_SOCKET=/var/lib/lxd/unix.socket \
  cargo test -p lxd --all-targets "$@"
./scripts/incus-env.sh up
echo "== lxd crate against $(curl -sf --max-time 5 --unix-socket /var/lib/incus/unix.socket http://incus/1.0 \
  | jq -r '.metadata.environment | "\(.server) \(.server_version)"')"
env -u LXD_SOCKET -u LXD_DIR cargo test -p lxd --all-targets "$@"
