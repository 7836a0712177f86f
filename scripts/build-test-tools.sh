#!/usr/bin/env bash
# Builds the Kubernetes test tools once into a cache outside the repository,
# keyed by version, and prints a bin directory holding both. A second run costs nothing.
#   kube-apiserver  from the k8s.io/kubernetes module (a throwaway module whose
#                   go.mod replaces each k8s.io/* staging module, which upstream
#                   points at ./staging, with its published v0.x release)
#   helm            go install helm.sh/helm/v3/cmd/helm (no replace directives);
#                   the same version the Dockerfile pins
# etcd comes from Debian's etcd-server package (scripts/install-system-deps.sh).
set -euo pipefail

KUBE_VERSION="${KUBE_VERSION:-v1.31.14}"
HELM_VERSION="${HELM_VERSION:-v3.16.2}"
CACHE="${ERP_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/erp-chatops-tools}"
KUBE_DIR="$CACHE/kube-apiserver-$KUBE_VERSION-r2"  # r2: version stamped into the binary
HELM_DIR="$CACHE/helm-$HELM_VERSION-r3"  # r3: default Kubernetes version stamped, as helm's Makefile does
BIN="$CACHE/bin-$KUBE_VERSION-$HELM_VERSION-r3"

log() { echo "build-test-tools: $*" >&2; }

if [ ! -x "$HELM_DIR/helm" ]; then
  log "building helm $HELM_VERSION (once)"
  mkdir -p "$HELM_DIR"
  kube_minor="${KUBE_VERSION#v1.}"; kube_minor="${kube_minor%%.*}"
  flags="-s -X helm.sh/helm/v3/internal/version.version=${HELM_VERSION}"
  for pkg in helm.sh/helm/v3/pkg/chartutil helm.sh/helm/v3/pkg/lint/rules; do
    flags="$flags -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=${kube_minor}"
  done
  GOBIN="$HELM_DIR" GOFLAGS=-buildvcs=false go install -ldflags "$flags" "helm.sh/helm/v3/cmd/helm@${HELM_VERSION}"
fi

if [ ! -x "$KUBE_DIR/kube-apiserver" ]; then
  log "building kube-apiserver $KUBE_VERSION (once; takes several minutes)"
  mkdir -p "$KUBE_DIR"
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' EXIT
  staging_version="v0.${KUBE_VERSION#v1.}"
  upstream_mod="$(go mod download -json "k8s.io/kubernetes@${KUBE_VERSION}" \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')"
  {
    echo "module erp-chatops/kube-apiserver-build"
    echo
    echo "go 1.22"
    echo
    echo "require k8s.io/kubernetes ${KUBE_VERSION}"
    echo
    # Every "k8s.io/x => ./staging/src/k8s.io/x" upstream becomes the published k8s.io/x release.
    grep -oE '^\s*k8s\.io/[a-z0-9-]+ => \./staging/src/k8s\.io/[a-z0-9-]+' "$upstream_mod" \
      | awk -v v="$staging_version" '{print "replace " $1 " => " $1 " " v}'
  } > "$work/go.mod"
  printf '//go:build tools\n\npackage tools\n\nimport _ "k8s.io/kubernetes/cmd/kube-apiserver"\n' > "$work/tools.go"
  (
    cd "$work"
    GOFLAGS=-mod=mod go mod tidy
    minor="${KUBE_VERSION#v1.}"; minor="${minor%%.*}"
    stamp="-X k8s.io/component-base/version.gitVersion=${KUBE_VERSION} -X k8s.io/component-base/version.gitMajor=1"
    stamp="$stamp -X k8s.io/component-base/version.gitMinor=${minor} -X k8s.io/component-base/version.gitTreeState=clean"
    GOFLAGS=-mod=mod CGO_ENABLED=0 go build -trimpath -ldflags "-s $stamp" -o "$KUBE_DIR/kube-apiserver.partial" \
      k8s.io/kubernetes/cmd/kube-apiserver
    mv "$KUBE_DIR/kube-apiserver.partial" "$KUBE_DIR/kube-apiserver"
  )
fi

mkdir -p "$BIN"
ln -sf "$KUBE_DIR/kube-apiserver" "$BIN/kube-apiserver"
ln -sf "$HELM_DIR/helm" "$BIN/helm"
echo "$BIN"
