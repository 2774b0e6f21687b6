#!/usr/bin/env bash
# Run a command with a docker daemon available: use the running one, or start dockerd
# (Debian's docker.io; this machine has no systemd to start it) and stop it afterwards.
#
#   tests/lab/with-dockerd.sh COMMAND [ARG...]
set -euo pipefail

if docker info >/dev/null 2>&1; then
  exec "$@"
fi

state=$(cd "$(dirname "$0")/../.." && pwd)/build/lab/dockerd
mkdir -p "$state"
echo "==> dockerd: starting (log: $state/dockerd.log)"
dockerd --pidfile "$state/dockerd.pid" >"$state/dockerd.log" 2>&1 &
pid=$!
stop_dockerd() {
  echo "==> dockerd: stopping (pid $pid)"
  kill "$pid" 2>/dev/null || return 0
  local deadline=$((SECONDS + 60))
  while kill -0 "$pid" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.5; done
}
trap stop_dockerd EXIT

deadline=$((SECONDS + 60))
until docker info >/dev/null 2>&1; do
  if ! kill -0 "$pid" 2>/dev/null || [ "$SECONDS" -ge "$deadline" ]; then
    echo "with-dockerd.sh: dockerd did not come up; end of $state/dockerd.log:" >&2
    tail -n 20 "$state/dockerd.log" >&2
    exit 1
  fi
  sleep 0.5
done
"$@"
