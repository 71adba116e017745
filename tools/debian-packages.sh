#!/bin/sh
# Installs the Debian packages the tests need, when they are missing.
set -e
PKGS="gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user unzip chromium chromium-driver tmux"
missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" = 0 ]; then SUDO=""; elif command -v sudo >/dev/null; then SUDO="sudo"; else
    echo "llamapack: the tests need these Debian packages:$missing (run as root, or install them)" >&2
    exit 1
fi
echo "llamapack: installing Debian packages:$missing"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null
