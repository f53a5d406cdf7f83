#!/usr/bin/env bash
# Builds the fake actions/runner agent (crates/fake-runner, binary `runner-agent`) as a static
# x86_64 binary, so that it runs in a busybox container without libc, and places it at a stable
# path, which it prints: target/fake-runner/runner-agent.
#
# Usage: scripts/build-fake-runner.sh [--dev]
#   --dev  a debug build (quicker to build, larger); the default is a release build.
# Environment: FAKE_RUNNER_TARGET_DIR (default target/static) is the cargo target dir for this
# build, separate from the workspace's so that the static RUSTFLAGS never invalidate it.
# Idempotent: when nothing changed, cargo does nothing and the placed file is left untouched.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"

profile=release
case "${1:-}" in
    --dev) profile=dev ;;
    "") ;;
    *) echo "usage: $0 [--dev]" >&2; exit 2 ;;
esac

triple=x86_64-unknown-linux-gnu
target_dir="${FAKE_RUNNER_TARGET_DIR:-$repo/target/static}"
out_dir="$repo/target/fake-runner"
out="$out_dir/runner-agent"

# --target keeps RUSTFLAGS away from build scripts and proc macros (they run on the host).
RUSTFLAGS='-C target-feature=+crt-static -C strip=symbols' CARGO_TARGET_DIR="$target_dir" \
    cargo build --quiet -p fake-runner --bin runner-agent --target "$triple" --profile "$profile" >&2

profile_dir=$profile
[ "$profile" = dev ] && profile_dir=debug
built="$target_dir/$triple/$profile_dir/runner-agent"

if file "$built" 2>/dev/null | grep -q "dynamically linked"; then
    echo "error: $built is dynamically linked" >&2
    exit 1
fi

mkdir -p "$out_dir"
if ! cmp -s "$built" "$out"; then
    tmp="$(mktemp "$out_dir/.runner-agent.XXXXXX")"
    cp "$built" "$tmp"
    chmod 0755 "$tmp"
    mv -f "$tmp" "$out"
else
    touch "$out" # checked fresh: newer than the sources (see github-sim's locate_or_build_agent)
fi
echo "$out"
