#!/usr/bin/env bash
# Builds gitops-health (kstatus from sigs.k8s.io/cli-utils and Argo CD's Lua engine,
# gopher-lua, both from the Go module proxy) into the cache, once per change of its
# sources, and prints the binary's path. Progress goes to stderr; only the path to stdout.
# Facts: cli-utils v0.37.2 needs go >= 1.25 (go.mod says so after `go mod tidy`);
# the module graph is small (apimachinery, no client-go): ~20 s to build cold.
set -euo pipefail
here="$(cd "$(dirname "$0")/gitops-health" && pwd)"
cache="${FACET_CACHE:-$HOME/.cache/facet-e2e}"
key="$(cat "$here/go.mod" "$here/go.sum" "$here/main.go" | sha256sum | cut -c1-12)"
bin="$cache/gitops-health-$key/gitops-health"
if [ ! -x "$bin" ]; then
  echo "building gitops-health into $bin" >&2
  mkdir -p "$(dirname "$bin")"
  (cd "$here" && GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod go build -o "$bin.tmp" . >&2)
  mv "$bin.tmp" "$bin"
fi
echo "$bin"
