#!/usr/bin/env bash
# Start or stop one lab container: systemd as PID 1 in the same Debian rootfs the VMs
# boot, reachable over ssh like the VMs (community.docker is not installed here, and
# Galaxy is out of reach, so ansible talks to it through sshd, not the docker API).
#
#   tests/lab/container.sh start DIST NAME RUNDIR
#   tests/lab/container.sh stop NAME RUNDIR
#
# RUNDIR receives id_ed25519 and port. The image is imported once per image key.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
log() { printf '==> lab container %s: %s\n' "$name" "$*" >&2; }

start() {
  local dist=$1 image tag port deadline
  image=$("$here/build-image.sh" "$dist")
  tag="audit-mail-alert-lab:${image##*/}"
  if ! docker image inspect "$tag" >/dev/null 2>&1; then
    log "importing $image/rootfs.tar as $tag"
    docker import "$image/rootfs.tar" "$tag" >/dev/null
  fi
  mkdir -p "$rundir"
  install -m 600 "$image/id_ed25519" "$rundir/id_ed25519"
  docker rm -f "$name" >/dev/null 2>&1 || true
  log "starting systemd in $tag"
  docker run -d --name "$name" --hostname "$name" \
    --tmpfs /run --tmpfs /run/lock -v /sys/fs/cgroup:/sys/fs/cgroup:ro \
    -p 127.0.0.1::22 "$tag" /sbin/init >/dev/null
  port=$(docker port "$name" 22/tcp | head -n 1)
  port=${port##*:}
  echo "$port" >"$rundir/port"
  deadline=$((SECONDS + 120))
  until ssh -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR \
      -o ConnectTimeout=5 -o BatchMode=yes -i "$rundir/id_ed25519" -p "$port" root@127.0.0.1 true 2>/dev/null; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      log "no ssh after 120 s; docker logs:"; docker logs "$name" 2>&1 | tail -n 20 >&2
      return 1
    fi
    sleep 1
  done
  log "ssh up on 127.0.0.1:$port"
}

stop() {
  if docker rm -f "$name" >/dev/null 2>&1; then log "removed"; fi
}

case "${1:-}" in
  start) name=${3:?usage}; rundir=${4:?usage: container.sh start DIST NAME RUNDIR}; start "$2" ;;
  stop) name=${2:?usage}; rundir=${3:?usage: container.sh stop NAME RUNDIR}; stop ;;
  *) echo "usage: container.sh start DIST NAME RUNDIR | container.sh stop NAME RUNDIR" >&2; exit 2 ;;
esac
