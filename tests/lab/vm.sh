#!/usr/bin/env bash
# Start or stop one throwaway lab VM (qemu, software emulation).
#
#   tests/lab/vm.sh start DIST RUNDIR     build/reuse the image, boot it, wait for ssh
#   tests/lab/vm.sh stop RUNDIR           kill qemu (the guest's writes vanish with it)
#
# RUNDIR receives: id_ed25519, port (the host port forwarded to the guest's ssh), qemu.pid,
# serial.log, selinux (yes|no). The disk is the cached image with snapshot=on: qemu keeps
# the guest's writes in a temporary overlay that disappears with it, so the image stays
# pristine and nothing is left to delete.
# Environment: LAB_SMP (vCPUs, default 1: two VMs share 2 host cores), LAB_MEM (MiB, 1536),
# LAB_BOOT_TIMEOUT (seconds until ssh answers, default 300).
# /dev/kvm here cannot boot a stock kernel, hence -accel tcg (TESTHOSTS.md).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
log() { printf '==> lab vm %s: %s\n' "${rundir##*/}" "$*" >&2; }

ssh_opts() {
  echo -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR \
    -o ConnectTimeout=5 -o BatchMode=yes -i "$rundir/id_ed25519" -p "$(cat "$rundir/port")"
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

start() {
  local dist=$1 image started port append
  image=$("$here/build-image.sh" "$dist")
  mkdir -p "$rundir"
  rundir=$(cd "$rundir" && pwd)
  if [ -f "$rundir/qemu.pid" ] && kill -0 "$(cat "$rundir/qemu.pid")" 2>/dev/null; then
    log "already running (pid $(cat "$rundir/qemu.pid"))"
    return 0
  fi
  install -m 600 "$image/id_ed25519" "$rundir/id_ed25519"
  cp "$image/selinux" "$rundir/selinux"
  port=$(free_port)
  echo "$port" >"$rundir/port"
  append="root=/dev/vda rw console=ttyS0 panic=-1"
  if [ "$(cat "$image/selinux")" = yes ]; then
    append+=" security=selinux selinux=1 enforcing=1"
  fi

  started=$SECONDS
  log "booting $dist (qemu TCG, ssh on 127.0.0.1:$port)"
  qemu-system-x86_64 -accel tcg -cpu max -smp "${LAB_SMP:-1}" -m "${LAB_MEM:-1536}" \
    -no-reboot -display none -monitor none -serial "file:$rundir/serial.log" \
    -kernel "$image/vmlinuz" -initrd "$image/initrd.img" -append "$append" \
    -drive "file=$image/disk.raw,if=virtio,format=raw,snapshot=on" \
    -netdev "user,id=n0,hostfwd=tcp:127.0.0.1:$port-:22" -device virtio-net-pci,netdev=n0 \
    -daemonize -pidfile "$rundir/qemu.pid" </dev/null

  local deadline=$((SECONDS + ${LAB_BOOT_TIMEOUT:-300}))
  # shellcheck disable=SC2046  # ssh_opts is a word list on purpose
  until ssh $(ssh_opts) root@127.0.0.1 true 2>/dev/null; do
    if ! kill -0 "$(cat "$rundir/qemu.pid")" 2>/dev/null; then
      log "qemu exited during boot; end of $rundir/serial.log:"; tail -n 30 "$rundir/serial.log" >&2
      return 1
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      log "no ssh after ${LAB_BOOT_TIMEOUT:-300} s; end of $rundir/serial.log:"; tail -n 30 "$rundir/serial.log" >&2
      stop
      return 1
    fi
    sleep 2
  done
  log "ssh up after $((SECONDS - started)) s"
}

stop() {
  local pid
  if [ -f "$rundir/qemu.pid" ]; then
    pid=$(cat "$rundir/qemu.pid")
    if kill "$pid" 2>/dev/null; then
      # qemu exits at once on SIGTERM; wait, so that a new VM never races the old one.
      local deadline=$((SECONDS + 30))
      while kill -0 "$pid" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.2; done
      kill -9 "$pid" 2>/dev/null || true
      log "stopped (pid $pid)"
    fi
    rm -f "$rundir/qemu.pid"
  fi
}

case "${1:-}" in
  start) rundir=${3:?usage: vm.sh start DIST RUNDIR}; start "$2" ;;
  stop) rundir=${2:?usage: vm.sh stop RUNDIR}; stop ;;
  *) echo "usage: vm.sh start DIST RUNDIR | vm.sh stop RUNDIR" >&2; exit 2 ;;
esac
