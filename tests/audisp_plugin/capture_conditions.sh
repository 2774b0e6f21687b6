#!/usr/bin/env bash
# Re-creates tests/audisp_plugin/data/conditions.log from this machine's kernel and auditd:
# the events that rule conditions (issue #24) tell apart, each under the key amx-cond on one
# watched file. Who: root without a login (auid unset), a login uid (daemon) and another
# (nobody); how: a read that succeeds and one that the kernel refuses (success=no); with
# what: cat, and a copy of cat whose name has a space, a newline and shell syntax; where:
# an absolute and a relative path; on a terminal (script(1) gives a pty) and without.
# Saves `LC_ALL=C ausearch --raw -k amx-cond`, the input an admin tests conditions with.
# Run as root; holds the host lock.
set -euo pipefail
[ "$(id -u)" = 0 ] || { echo "capture_conditions.sh: run as root" >&2; exit 1; }
DATA=$(cd "$(dirname "$0")" && pwd)/data
WORK=/tmp/amx-cond
LOCK=/run/lock/audit-mail-alert-host.lock
exec 9>"$LOCK"
flock 9

cleanup() {
    auditctl -D -k amx-cond >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT
cleanup
mkdir -p "$WORK/bin"
chmod 755 "$WORK"
echo secret > "$WORK/secret"
chmod 600 "$WORK/secret"
# shellcheck disable=SC2016  # $(id) is the literal text of the hostile name
HOSTILE="$WORK/bin/$(printf 'ca t\n$(id)')"
cp /bin/cat "$HOSTILE"
read -r -a START <<<"$(LC_ALL=C date '+%x %T')"

auditctl -a always,exit -F path="$WORK/secret" -F perm=r -k amx-cond
cd "$WORK"
# 1. root, no login session (auid unset), absolute path, no tty, success
cat "$WORK/secret" >/dev/null
# 2. root, relative path (the PATH record has "secret", the CWD record the directory)
cat secret >/dev/null
# 3. a login uid (daemon, 1) that is root: success
bash -c 'echo 1 > /proc/self/loginuid && exec cat /tmp/amx-cond/secret' >/dev/null
# 4. a login uid (nobody) running as nobody: the kernel refuses the read (success=no)
bash -c 'echo 65534 > /proc/self/loginuid && exec setpriv --reuid=65534 --regid=65534 --clear-groups cat /tmp/amx-cond/secret' >/dev/null 2>&1 || true
# 5. the hostile program name, as root
"$HOSTILE" "$WORK/secret" >/dev/null
# 6. on a terminal (a pty from script(1))
script -qc "cat $WORK/secret" /dev/null >/dev/null

cleanup
trap - EXIT
sleep 1   # auditd writes the log asynchronously
LC_ALL=C ausearch --raw -ts "${START[@]}" -k amx-cond > "$DATA/conditions.log"
wc -l "$DATA/conditions.log"
