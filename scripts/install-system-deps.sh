#!/usr/bin/env bash
# Debian packages the tests need; installs only what is missing (CI runs this on a fresh machine).
set -euo pipefail

need=()
command -v shellcheck >/dev/null || need+=(shellcheck)   # lints the buildspec's shell
command -v chromium >/dev/null || need+=(chromium)       # the sandbox page's browser tests
[ -e /usr/share/fonts/truetype/noto/NotoColorEmoji.ttf ] || need+=(fonts-noto-color-emoji)  # emoji in its screenshots
command -v etcd >/dev/null || need+=(etcd-server)        # the real Kubernetes API server's store

if [ "${#need[@]}" -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "install-system-deps: missing ${need[*]}; run as root or install them yourself" >&2
    exit 1
  fi
  echo "install-system-deps: installing ${need[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
