#!/usr/bin/env bash
# Publishes what the buildspec installs on CodeBuild's stock image, which has neither erp-chatops nor helm:
#   s3://$BUCKET/tools/erp-chatops-<version>-wheelhouse.tar.gz   erp-chatops and every wheel it needs
#   s3://$BUCKET/tools/<helm archive's name>                       helm's release archive, as given
# and records where they are and their SHA-256 in SSM under /erp/<env>/tools/..., which the buildspec
# reads (env.parameter-store) and verifies before it installs anything.
#   usage: scripts/publish-ci-tools.sh BUCKET ENVIRONMENT HELM_ARCHIVE [HELM_SHA256]
# HELM_ARCHIVE is helm's linux-amd64 release tarball (get.helm.sh); give its published checksum as
# HELM_SHA256 and this refuses a file that does not match it.
# WHEELHOUSE=FILE publishes the wheelhouse in FILE instead of building one (the one published to dev, so
# prod installs the very same bytes); it must be there. KEEP_WHEELHOUSE=FILE keeps the one built here in FILE.
set -euo pipefail
bucket="${1:?bucket}" environment="${2:?environment (dev, prod)}" helm_archive="${3:?helm release archive}"
expected_helm="${4:-}"
root="$(cd "$(dirname "$0")/.." && pwd)"
python="${PYTHON:-python3}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

helm_sha="$(sha256sum "$helm_archive" | cut -d' ' -f1)"
if [ -n "$expected_helm" ] && [ "$helm_sha" != "$expected_helm" ]; then
  echo "publish-ci-tools: $helm_archive has sha256 $helm_sha, not the published $expected_helm" >&2
  exit 1
fi

bundle_file="${WHEELHOUSE:-}" keep="${KEEP_WHEELHOUSE:-}"
case "$bundle_file" in -*) bundle_file="./$bundle_file" ;; esac  # a name, never an option
case "$keep" in -*) keep="./$keep" ;; esac
if [ -n "$bundle_file" ] && [ ! -f "$bundle_file" ]; then  # never a fresh build in its place: other bytes
  echo "publish-ci-tools: WHEELHOUSE=$bundle_file is not a file (build one with KEEP_WHEELHOUSE=$bundle_file)" >&2
  exit 1
fi
if [ -n "$bundle_file" ]; then
  # read to its end: a file cut short can still list the wheel, and would be published with its checksum
  listing="$(tar -tzf "$bundle_file" 2>/dev/null)" || listing=""
  wheel="$(printf '%s\n' "$listing" | sed -nE 's|^(\./)?(erp_chatops-[^/]+\.whl)$|\2|p')"
  if [ -z "$wheel" ] || [ "$(printf '%s\n' "$wheel" | wc -l)" -ne 1 ]; then
    echo "publish-ci-tools: $bundle_file is not one whole wheelhouse with one erp_chatops wheel; is it this script's?" >&2
    exit 1
  fi
else
  # a clean copy of the package (no build/ from an earlier run leaks into the wheel)
  mkdir -p "$work/src" "$work/wheels"
  cp -r "$root/pyproject.toml" "$root/README.md" "$root/bot" "$root/handlers" "$work/src/"
  find "$work/src" -name __pycache__ -prune -exec rm -rf {} +
  "$python" -m pip wheel --quiet --no-deps --wheel-dir "$work/wheels" "$work/src"
  wheel="$(find "$work/wheels" -name 'erp_chatops-*.whl' -printf '%f\n')"
  # every dependency as a wheel for the build image, whatever machine publishes: CPython 3.11 (the buildspec's
  # runtime-versions) on x86_64 Linux (standard:7.0, glibc 2.35), binary wheels only
  "$python" -m pip download --quiet --only-binary=:all: --implementation cp --python-version 3.11 \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --dest "$work/wheels" "$work/wheels/$wheel"
  tar -czf "$work/wheelhouse.tar.gz" -C "$work/wheels" .
  if [ -n "$keep" ]; then  # kept whole or not at all: a copy cut short is never taken for one
    cp "$work/wheelhouse.tar.gz" "$keep.partial.$$"
    mv -T "$keep.partial.$$" "$keep"
  fi
  bundle_file="$work/wheelhouse.tar.gz"
fi
version="$(echo "$wheel" | sed -E 's/^erp_chatops-([^-]+)-.*/\1/')"
bundle="erp-chatops-$version-wheelhouse.tar.gz"
bundle_sha="$(sha256sum "$bundle_file" | cut -d' ' -f1)"

aws s3 cp --only-show-errors "$bundle_file" "s3://$bucket/tools/$bundle"
aws s3 cp --only-show-errors "$helm_archive" "s3://$bucket/tools/$(basename "$helm_archive")"
put() { aws ssm put-parameter --overwrite --type String --name "/erp/$environment/tools/$1" --value "$2" >/dev/null; }
put bucket "$bucket"
put erp-chatops/key "tools/$bundle"
put erp-chatops/sha256 "$bundle_sha"
put helm/key "tools/$(basename "$helm_archive")"
put helm/sha256 "$helm_sha"
echo "published erp-chatops $version ($bundle_sha) and $(basename "$helm_archive") ($helm_sha) for $environment"
