#!/bin/sh
# Installs the Debian packages the tests need, when they are missing.
# Another apt at work (unattended-upgrades, a second `make`) is waited for, up to 10 minutes.
set -e
PKGS="gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user unzip chromium chromium-driver tmux"
LOCK_WAIT=600   # seconds
missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" = 0 ]; then SUDO=""; elif command -v sudo >/dev/null; then SUDO="sudo"; else
    echo "llamapack: the tests need these Debian packages:$missing (run as root, or install them)" >&2
    exit 1
fi

# apt-get update takes the package lists' lock, which DPkg::Lock::Timeout does not cover:
# while another apt holds it, wait and try again.
update_lists() {
    waited=0
    while ! err=$($SUDO apt-get update -qq 2>&1 >/dev/null); do
        case "$err" in
        *"Could not get lock"* | *"Unable to lock"*) ;;
        *) echo "$err" >&2; return 1 ;;
        esac
        if [ "$waited" -ge "$LOCK_WAIT" ]; then echo "$err" >&2; return 1; fi
        [ "$waited" = 0 ] && echo "llamapack: another apt is running; waiting for it (up to $LOCK_WAIT s)" >&2
        sleep 5
        waited=$((waited + 5))
    done
}

echo "llamapack: installing Debian packages:$missing"
update_lists
# DPkg::Lock::Timeout: wait for dpkg's lock instead of failing at once
DEBIAN_FRONTEND=noninteractive $SUDO apt-get -o DPkg::Lock::Timeout=$LOCK_WAIT install -y -qq $missing >/dev/null
