#!/usr/bin/env bash
# Builds (once) and prints the path of a current nats-server 2.12.x for the chaos suite's compat
# matrix: `DWCP_NATS_SERVER=$(scripts/nats-server-current.sh) npm run test:chaos`.
#
# - Picks the newest v2.12.<patch> release (no -RC, no -fips) the Go module proxy lists and that
#   `go install` builds; DWCP_NATS_SERVER_VERSION=v2.12.N pins one instead.
# - Caches the binary as ${XDG_CACHE_HOME:-$HOME/.cache}/dwcp/nats-server-<version>, so a second
#   CI run (cache restored) skips the build; offline, the newest cached 2.12.x is used.
# - Only the path goes to stdout; progress and the build time go to stderr.
set -euo pipefail

GO="${GO:-/usr/local/go/bin/go}"
[ -x "$GO" ] || GO="$(command -v go || true)"
CACHE_DIR="${XDG_CACHE_HOME:-$HOME/.cache}/dwcp"
MODULE="github.com/nats-io/nats-server/v2"
SERIES="${DWCP_NATS_SERVER_SERIES:-2.12}"
mkdir -p "$CACHE_DIR"

log() { echo "nats-server-current: $*" >&2; }

newest_cached() {
  ls -1 "$CACHE_DIR" 2>/dev/null | sed -n "s/^nats-server-v\(${SERIES//./\\.}\.[0-9]*\)$/\1/p" | sort -t. -k3,3n | tail -1
}

candidates() {
  if [ -n "${DWCP_NATS_SERVER_VERSION:-}" ]; then
    echo "$DWCP_NATS_SERVER_VERSION"
    return
  fi
  [ -n "$GO" ] || return 0
  # Newest first; releases only.
  GOFLAGS=-mod=mod "$GO" list -m -versions "$MODULE" 2>/dev/null | tr ' ' '\n' |
    grep -E "^v${SERIES//./\\.}\.[0-9]+$" | sort -t. -k3,3nr || true
}

mapfile -t versions < <(candidates)
if [ "${#versions[@]}" -eq 0 ]; then
  cached="$(newest_cached)"
  if [ -n "$cached" ]; then
    log "module proxy unreachable; using cached v$cached"
    echo "$CACHE_DIR/nats-server-v$cached"
    exit 0
  fi
  log "no v$SERIES.x release listed by the module proxy and none cached in $CACHE_DIR"
  log "needs Go (set GO=/path/to/go) and access to proxy.golang.org, or DWCP_NATS_SERVER_VERSION"
  exit 1
fi

for v in "${versions[@]}"; do
  target="$CACHE_DIR/nats-server-$v"
  if [ -x "$target" ]; then
    log "cached $v"
    echo "$target"
    exit 0
  fi
  [ -n "$GO" ] || { log "go not found (set GO=)"; exit 1; }
  gobin="$(mktemp -d)"
  log "building $v with $("$GO" version | cut -d' ' -f3) (go install, GOFLAGS=-mod=mod)"
  started=$(date +%s)
  if GOBIN="$gobin" GOFLAGS=-mod=mod CGO_ENABLED=0 "$GO" install "$MODULE@$v" >&2; then
    mv "$gobin/nats-server" "$target.tmp" && mv "$target.tmp" "$target"
    rm -rf "$gobin"
    log "built $v in $(( $(date +%s) - started )) s: $("$target" --version)"
    echo "$target"
    exit 0
  fi
  rm -rf "$gobin"
  log "$v did not build; trying the previous patch"
done
log "no v$SERIES.x release built"
exit 1
