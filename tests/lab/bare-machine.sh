#!/usr/bin/env bash
# The README's steps on a machine that has none of the project's Debian packages: a Debian
# 12 container from a bare debootstrap (minbase, nothing added), where a user installs git
# and make, clones the project and runs one make target; `make` must install the rest.
#
#   tests/lab/bare-machine.sh [REPO [TARGET]]   REPO: the checkout to clone (default: this
#                                               one, its HEAD); TARGET: default test-plugin
#
# Needs a running docker daemon (tests/lab/with-dockerd.sh). The container shares this
# machine's network and, where this machine trusts a TLS-intercepting proxy, its CA bundle
# (pip would fail without it); nothing else of the host's enters it.
# Cache: $LAB_CACHE/bare-bookworm-KEY/rootfs.tar, KEY a hash of the mirror.
set -euo pipefail

main() {

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "${1:-$here/../..}" && pwd)
target=${2:-test-plugin}
cache=${LAB_CACHE:-/var/cache/audit-mail-alert-lab}
mirror=${LAB_MIRROR:-http://deb.debian.org/debian}
# The rootfs depends on nothing but these: the key does not change with this script.
key=$(echo "debootstrap minbase bookworm $mirror" | sha256sum | cut -c1-12)
image="$cache/bare-bookworm-$key"
tag="audit-mail-alert-bare:$key"
started=$SECONDS
log() { printf '==> bare machine: %s (%ss)\n' "$*" "$((SECONDS - started))"; }

mkdir -p "$cache"
exec 9>"$cache/.bare-bookworm.lock"
flock 9
if [ ! -f "$image/rootfs.tar" ]; then
  log "debootstrap --variant=minbase bookworm, no package added (about a minute)"
  work=$(mktemp -d "$cache/.build-bare.XXXXXX")
  trap 'rm -rf --one-file-system "$work"' EXIT
  debootstrap --variant=minbase bookworm "$work/rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 \
    || { tail -n 30 "$work/debootstrap.log" >&2; exit 1; }
  tar -C "$work/rootfs" -cf "$work/rootfs.tar" .
  rm -rf --one-file-system "$work/rootfs" "$work/debootstrap.log"
  rm -rf "$image" && mv "$work" "$image"
  trap - EXIT
fi
if ! docker image inspect "$tag" >/dev/null 2>&1; then
  docker import "$image/rootfs.tar" "$tag" >/dev/null
fi
flock -u 9

trust=()
bundle=/etc/ssl/certs/ca-certificates.crt
if [ -f "$bundle" ]; then
  trust=(-v "$bundle:/host-ca.crt:ro" -e PIP_CERT=/host-ca.crt -e SSL_CERT_FILE=/host-ca.crt)
fi
# What the bare machine proves is the install path: `make` brings the Debian packages (the
# system python3 with auparse, the MTA tools) and the venv's packages from PyPI, and the
# plugin then runs on them. test-plugin on this machine ran the whole suite on the same
# Debian 12 packages already, so here it runs the files that drive the plugin end to end:
# in-process and on the oldest and newest Python, as a live process fed as auditd feeds it,
# its deliveries, and SMTP against aiosmtpd from the venv. (The two suites that need the
# kernel's audit, test_host_auditd.py and test_audit_netlink.py, could not run in a container
# anyway.) MAKE_ARGS: one make argument per line.
make_args=()
if [ "$target" = test-plugin ]; then
  make_args=("PLUGIN_TESTS=$(printf 'tests/audisp_plugin/%s ' test_plugin.py test_live.py test_delivery.py test_smtp_aiosmtpd.py)")
  log "the plugin's end-to-end test files: ${make_args[0]#PLUGIN_TESTS=}"
fi
name=audit-mail-alert-bare-$$
trap 'docker rm -f "$name" >/dev/null 2>&1 || true' EXIT
log "running the README's steps in a bare Debian 12 container ($tag), target $target"
docker run --rm --name "$name" --network host -v "$repo:/src:ro" "${trust[@]}" \
  -e TARGET="$target" -e MAKE_ARGS="$(printf '%s\n' "${make_args[@]}")" -e LIST=mk/apt-packages "$tag" \
  bash -euo pipefail -c '
    export DEBIAN_FRONTEND=noninteractive
    # The project'"'"'s packages are absent here, but for those every Debian system has
    # (Priority: required, such as util-linux): that is what the test proves.
    present=$(sed "s/#.*//" /src/$LIST | xargs -n1 | grep -v -x -e git -e make \
      | xargs -r dpkg-query -W -f "\${db:Status-Status} \${Priority} \${Package}\n" 2>/dev/null \
      | grep "^installed " || true)
    echo "--- the base system has: $(echo "$present" | grep " required " | cut -d" " -f3 | xargs)"
    if echo "$present" | grep -v -q -e " required " -e "^$"; then
      echo "bare machine: not bare: $(echo "$present" | grep -v " required " | cut -d" " -f3 | xargs)" >&2
      exit 1
    fi
    echo "--- step 1 (README): apt-get install git make"
    apt-get update -qq && apt-get install -y -qq --no-install-recommends git make >/dev/null
    echo "--- step 2 (README): git clone"
    git clone -q /src /root/mail_alert && cd /root/mail_alert
    echo "--- step 3 (README): make $TARGET"
    mapfile -t make_args < <(printf "%s" "$MAKE_ARGS" | sed "/^\$/d")
    make "$TARGET" "${make_args[@]}" </dev/null'
log "make $target passed on a bare machine"
}

main "$@"
