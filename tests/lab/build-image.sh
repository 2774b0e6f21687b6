#!/usr/bin/env bash
# Build (or reuse) a bootable Debian test image for the lab, and print its directory.
#
#   tests/lab/build-image.sh DIST        DIST: bookworm | trixie | sid | jammy | noble
#
# The image directory holds disk.raw (ext4, the whole root file system), vmlinuz, initrd.img,
# rootfs.tar (the same tree, unlabelled, for `docker import`), id_ed25519 (root's ssh key)
# and selinux (yes|no). bookworm is SELinux enforcing, pre-labelled offline, so the first
# boot is already enforcing (TESTHOSTS.md section 2).
#
# Cache: $LAB_CACHE/DIST-KEY, KEY a hash of this script and the package lists, so a change
# to either builds a new image. A missing cache always rebuilds; a build that fails leaves
# nothing behind. VMs run on qcow2 overlays, so the cached disk.raw stays pristine.
set -euo pipefail

# The whole script is one function, so bash has parsed all of it before it runs:
# editing this file while an image builds cannot derail the build.
main() {

dist=${1:?usage: build-image.sh bookworm|trixie|sid|jammy|noble}
case "$dist" in
  bookworm) family=debian selinux=yes ;;
  trixie | sid) family=debian selinux=no ;;
  jammy | noble) family=ubuntu selinux=no ;;
  *) echo "build-image.sh: unknown DIST '$dist' (bookworm, trixie, sid, jammy or noble)" >&2; exit 2 ;;
esac

here=$(cd "$(dirname "$0")" && pwd)
cache=${LAB_CACHE:-/var/cache/audit-mail-alert-lab}
# Ubuntu as its servers come: universe enabled (python3-audit lives there), the archive's
# keyring, the virtual kernel. debootstrap's script for every Ubuntu release is gutsy's.
if [ "$family" = ubuntu ]; then
  mirror=${LAB_UBUNTU_MIRROR:-http://archive.ubuntu.com/ubuntu}
  kernel=(linux-image-virtual initramfs-tools ubuntu-keyring)
  components=main,universe
  script=/usr/share/debootstrap/scripts/gutsy
else
  mirror=${LAB_MIRROR:-http://deb.debian.org/debian}
  kernel=(linux-image-amd64 initramfs-tools)
  components=main
  script=
fi
# sid's kernel depends on `dracut | initramfs-tools | ...`: debootstrap takes the first
# alternative, and dracut conflicts with initramfs-tools. sid gets what its kernel pulls
# (dracut, a generic initrd: Debian's dracut config is not host-only).
if [ "$dist" = sid ]; then
  kernel=(linux-image-amd64)
fi

packages=$(grep -hv '^#' "$here/packages.txt" | grep .)$'\n'$(printf '%s\n' "${kernel[@]}")
if [ "$selinux" = yes ]; then
  packages+=$'\n'$(grep -hv '^#' "$here/packages-selinux.txt" | grep .)
fi
key=$( { cat "$0"; echo "$dist $mirror"; echo "$packages"; } | sha256sum | cut -c1-12)
image="$cache/$dist-$key"

log() { printf '==> lab image %s: %s (%ss)\n' "$dist" "$*" "$SECONDS" >&2; }

mkdir -p "$cache"
# One builder per image at a time; a second caller waits, then finds the image.
exec 9>"$cache/.$dist.lock"
flock 9
if [ -f "$image/done" ]; then
  log "cached in $image"
  echo "$image"
  return 0
fi

work=$(mktemp -d "$cache/.build-$dist.XXXXXX")
cleanup() {
  # debootstrap or this script may leave /proc, /sys or /dev mounted in the tree after a
  # failure: unmount them first, and never let rm cross into another file system.
  findmnt -rn -o TARGET | grep "^$work/" | sort -r | xargs -r umount -l
  rm -rf --one-file-system "$work"
}
trap cleanup EXIT

root="$work/rootfs"
keyring=()
if [ "$family" = ubuntu ]; then
  ubuntu_keyring "$work/ubuntu-archive.gpg"
  keyring=(--keyring="$work/ubuntu-archive.gpg")
fi
log "debootstrap from $mirror (about 2 minutes)"
# shellcheck disable=SC2086  # $script is empty (debootstrap's own) or one path
debootstrap --variant=minbase --components="$components" "${keyring[@]}" \
  --include="$(echo "$packages" | paste -sd,)" \
  "$dist" "$root" "$mirror" $script >"$work/debootstrap.log" 2>&1 \
  || { tail -n 30 "$work/debootstrap.log" >&2; exit 1; }

log "configuring the guest (network, ssh key, console)"
if [ "$family" = ubuntu ]; then
  # As on an installed Ubuntu: updates and security fixes next to the release.
  printf 'deb %s %s main universe\n' "$mirror" "$dist" "$mirror" "$dist-updates" \
    "$mirror" "$dist-security" >"$root/etc/apt/sources.list"
fi
ssh-keygen -q -t ed25519 -N '' -C "audit-mail-alert-lab" -f "$work/id_ed25519"
echo testvm >"$root/etc/hostname"
printf '127.0.0.1 localhost\n127.0.1.1 testvm\n' >"$root/etc/hosts"
echo '/dev/vda / ext4 rw,relatime 0 1' >"$root/etc/fstab"
install -d -m 700 "$root/root/.ssh"
install -m 600 "$work/id_ed25519.pub" "$root/root/.ssh/authorized_keys"
printf '[Match]\nName=en* eth*\n[Network]\nDHCP=ipv4\n' >"$root/etc/systemd/network/20-dhcp.network"
echo 'nameserver 10.0.2.3' >"$root/etc/resolv.conf"
chroot "$root" systemctl enable systemd-networkd >/dev/null 2>&1
# postfix delivers locally only: mail for root@testvm lands in /var/mail/root.
echo testvm >"$root/etc/mailname"
[ -f "$root/etc/postfix/main.cf" ] || cp "$root/usr/share/postfix/main.cf.debian" "$root/etc/postfix/main.cf"
chroot "$root" postconf -e myhostname=testvm myorigin=/etc/mailname \
  'mydestination=testvm, localhost' inet_interfaces=loopback-only relayhost=
# Under software emulation postfix's instance setup (its unit's ExecStartPre) can outlast
# systemd's 90 s start timeout; postfix then stays down (seen on Ubuntu 22.04, and on
# Debian 13 under load: its postfix.service runs the default instance itself, 32 s on an
# idle machine, instead of handing it to postfix@-.service). Both units get the longer bound.
for unit in postfix.service postfix@.service; do
  install -d "$root/etc/systemd/system/$unit.d"
  printf '[Service]\nTimeoutStartSec=15min\n' >"$root/etc/systemd/system/$unit.d/lab-slow-emulation.conf"
done
# Passwordless root on the serial console only (ssh still needs the key): for debugging.
chroot "$root" passwd -d root >/dev/null
# Faster boots: nothing in the lab needs these timers.
chroot "$root" systemctl mask apt-daily.timer apt-daily-upgrade.timer man-db.timer >/dev/null 2>&1 || true
# Small, reproducible apt downloads inside the guest.
printf 'APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\n' \
  >"$root/etc/apt/apt.conf.d/90lab-no-recommends"
# The archive's sid Release file here is past its Valid-Until:
# apt in the guest (the role's package step) would refuse it. A property of the sid image,
# not of the role. (debootstrap itself does not check Valid-Until.)
if [ "$dist" = sid ]; then
  printf 'Acquire::Check-Valid-Until "false";\n' >"$root/etc/apt/apt.conf.d/90lab-sid-valid-until"
fi
# sid boots a dracut initrd. Debian's dracut builds a generic one: under emulation its udev
# loaded every module it held and the root disk appeared 60 s after /init (2 s for
# initramfs-tools on trixie). The lab's VMs need virtio and ext4 only.
if [ "$dist" = sid ]; then
  log "dracut: an initrd with the virtio and ext4 modules only"
  printf '%s\n' '# The lab VM (tests/lab/build-image.sh): qemu virtio disk, ext4 root.' \
    'hostonly="no"' 'drivers="virtio_pci virtio_blk virtio_net"' 'filesystems="ext4"' \
    >"$root/etc/dracut.conf.d/90-lab.conf"
  mount -t proc proc "$root/proc"
  kver=$(basename "$root"/boot/vmlinuz-*); kver=${kver#vmlinuz-}
  chroot "$root" dracut --force --kver "$kver" >"$work/dracut.log" 2>&1 \
    || { umount "$root/proc"; tail -n 30 "$work/dracut.log" >&2; exit 1; }
  umount "$root/proc"
fi
rm -f "$root"/var/cache/apt/archives/*.deb
cp "$root"/boot/vmlinuz-* "$work/vmlinuz"
cp "$root"/boot/initrd.img-* "$work/initrd.img"

log "rootfs.tar for containers"
tar -C "$root" -cf "$work/rootfs.tar" .

if [ "$selinux" = yes ]; then
  log "SELinux: enforcing, labelling the tree offline"
  sed -i 's/^SELINUX=.*/SELINUX=enforcing/' "$root/etc/selinux/config"   # edits before labelling
  mount -t proc proc "$root/proc"        # setfiles needs /proc
  chroot "$root" setfiles -F -e /proc -e /sys -e /dev \
    /etc/selinux/default/contexts/files/file_contexts /
  umount "$root/proc"
  for d in /sys /dev /dev/pts; do
    python3 -c 'import os, sys
os.setxattr(sys.argv[1], "security.selinux", sys.argv[2].encode() + b"\0", follow_symlinks=False)' \
      "$root$d" "$(chroot "$root" matchpathcon -n "$d")"
  done
fi

log "ext4 disk image"
truncate -s 6G "$work/disk.raw"
mkfs.ext4 -q -F -d "$root" "$work/disk.raw"     # mke2fs >= 1.47 copies the SELinux xattrs
echo "$selinux" >"$work/selinux"
rm -rf --one-file-system "$root" "$work/debootstrap.log" "$work/dracut.log"
touch "$work/done"

rm -rf "$image"
mv "$work" "$image"
trap - EXIT
log "built $image"
echo "$image"
}

# The Ubuntu archive's signing key, taken from the archive's ubuntu-keyring package and
# trusted only if it holds the fingerprint Ubuntu publishes (Debian 12 has no ubuntu-keyring
# package; the archive's project/ubuntu-archive-keyring.gpg now answers 404 here).
ubuntu_keyring() {
  local out=$1 home deb
  local fingerprint=F6ECB3762474EDA9D21B7022871920D1991BC93C   # Archive Automatic Signing Key (2018)
  home=$(mktemp -d)
  deb=$(curl -fsS --retry 3 "$mirror/dists/$dist/main/binary-amd64/Packages.gz" | gzip -dc \
    | awk '/^Package: ubuntu-keyring$/ { found = 1 } found && /^Filename: / && !deb { deb = $2; print deb }')
  curl -fsS --retry 3 -o "$home/ubuntu-keyring.deb" "$mirror/$deb"
  dpkg-deb -x "$home/ubuntu-keyring.deb" "$home/tree"
  gpg --homedir "$home" --quiet --import "$home/tree/usr/share/keyrings/ubuntu-archive-keyring.gpg" 2>/dev/null
  if ! gpg --homedir "$home" --with-colons --fingerprint "$fingerprint" 2>/dev/null | grep -q "^fpr:*$fingerprint:"; then
    echo "build-image.sh: $mirror/$deb lacks key $fingerprint" >&2
    rm -rf "$home"
    return 1
  fi
  gpg --homedir "$home" --export "$fingerprint" >"$out"
  rm -rf "$home"
}

main "$@"
