#!/usr/bin/env bash
# Builds etcd, kube-apiserver, kube-controller-manager and helm from their Go
# modules into the cache (once per pinned version) and prints the bin directory.
# Progress goes to stderr; only the directory goes to stdout.
set -euo pipefail
K8S_VERSION="${K8S_VERSION:-v1.35.4}"
ETCD_VERSION="${ETCD_VERSION:-v3.6.16}"
HELM_VERSION="${HELM_VERSION:-v3.19.0}"
cache="${FACET_CACHE:-$HOME/.cache/facet-e2e}"
bin="$cache/kube-$K8S_VERSION-etcd-$ETCD_VERSION-helm-$HELM_VERSION/bin"
mkdir -p "$bin"
export GOFLAGS=-mod=mod GOTOOLCHAIN=local CGO_ENABLED=0

staging_version="v0.${K8S_VERSION#v1.}"
minor="$(echo "$K8S_VERSION" | cut -d. -f2)"

build_kube() {
  local src="$cache/src/kube-$K8S_VERSION"
  mkdir -p "$src/cmd/kube-apiserver" "$src/cmd/kube-controller-manager"
  {
    echo "module facet.dev/e2e/kube"
    echo "go 1.24"
    echo "require k8s.io/kubernetes $K8S_VERSION"
    for m in api apiextensions-apiserver apimachinery apiserver cli-runtime client-go cloud-provider \
      cluster-bootstrap code-generator component-base component-helpers controller-manager cri-api \
      cri-client csi-translation-lib dynamic-resource-allocation endpointslice externaljwt kms \
      kube-aggregator kube-controller-manager kube-proxy kube-scheduler kubectl kubelet metrics \
      mount-utils pod-security-admission sample-apiserver sample-cli-plugin sample-controller; do
      echo "replace k8s.io/$m => k8s.io/$m $staging_version"
    done
  } > "$src/go.mod"
  cat > "$src/cmd/kube-apiserver/main.go" <<'GO'
package main

import (
	"os"

	"k8s.io/component-base/cli"
	"k8s.io/kubernetes/cmd/kube-apiserver/app"
)

func main() { os.Exit(cli.Run(app.NewAPIServerCommand())) }
GO
  cat > "$src/cmd/kube-controller-manager/main.go" <<'GO'
package main

import (
	"os"

	"k8s.io/component-base/cli"
	"k8s.io/kubernetes/cmd/kube-controller-manager/app"
)

func main() { os.Exit(cli.Run(app.NewControllerManagerCommand())) }
GO
  local ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$K8S_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor"
  (cd "$src" && go mod tidy >&2 && \
    echo "building kube-apiserver $K8S_VERSION" >&2 && go build -ldflags "$ldflags" -o "$bin/kube-apiserver" ./cmd/kube-apiserver && \
    echo "building kube-controller-manager $K8S_VERSION" >&2 && go build -ldflags "$ldflags" -o "$bin/kube-controller-manager" ./cmd/kube-controller-manager)
}

build_etcd() {
  local src="$cache/src/etcd-$ETCD_VERSION"
  mkdir -p "$src"
  printf 'module facet.dev/e2e/etcd\ngo 1.24\nrequire go.etcd.io/etcd/server/v3 %s\n' "$ETCD_VERSION" > "$src/go.mod"
  cat > "$src/main.go" <<'GO'
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO
  (cd "$src" && go mod tidy >&2 && echo "building etcd $ETCD_VERSION" >&2 && go build -ldflags "-s -w" -o "$bin/etcd" .)
}

# `install-kube.sh helm` builds only helm (for the chart tests).
if [ "${1:-all}" != helm ]; then
  [ -x "$bin/etcd" ] || build_etcd
  [ -x "$bin/kube-apiserver" ] && [ -x "$bin/kube-controller-manager" ] || build_kube
fi
if [ ! -x "$bin/helm" ]; then
  echo "building helm $HELM_VERSION" >&2
  GOBIN="$bin" go install -ldflags "-s -w" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" >&2
fi
echo "$bin"
