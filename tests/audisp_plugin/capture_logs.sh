#!/usr/bin/env bash
# Re-creates the audit logs under tests/audisp_plugin/data/ from this machine's kernel and auditd.
# Each scenario loads a watch with its own key, does the real thing (files with hostile
# names, a watched program run with hostile arguments), and saves `LC_ALL=C ausearch --raw -k KEY`,
# the same input an admin would test a config with. Run as root; holds the host lock.
set -euo pipefail
[ "$(id -u)" = 0 ] || { echo "capture_logs.sh: run as root" >&2; exit 1; }
DATA=$(cd "$(dirname "$0")" && pwd)/data
WORK=/tmp/amx-capture
LOCK=/run/lock/audit-mail-alert-host.lock
mkdir -p "$DATA" /run/lock
exec 9>"$LOCK"
flock 9

cleanup() {
    auditctl -D -k amx-hostile >/dev/null 2>&1 || true
    auditctl -D -k amx-multi >/dev/null 2>&1 || true
    auditctl -D -k amx-flood >/dev/null 2>&1 || true
    auditctl -D -k amx-exec >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT
cleanup
mkdir -p "$WORK/hostile" "$WORK/multi" "$WORK/flood" "$WORK/bin"
cp /bin/true "$WORK/bin/run-me"
read -r -a START <<<"$(LC_ALL=C date '+%x %T')"  # ausearch -ts takes date and time as two words

# 1. hostile file names, created for real (the object of each alert)
auditctl -w "$WORK/hostile" -p wa -k amx-hostile
cd "$WORK/hostile"
touch "$(printf 'evil\nSubject: pwned')"
touch "$(printf 'cr\rBcc: victim@example.com')"
touch "$(printf 'bad-utf8-\xff\xfe-\xc3')"
touch '=?utf-8?q?=0D=0ABcc:_evil@example.com?='
# shellcheck disable=SC2016  # the unexpanded $(...) is the hostile input itself
touch '$(rm -rf ~);`id`|&<>'"'\""
touch "$(printf 'tab\there\x01\x1b[31mred')"
touch "$(head -c 250 /dev/zero | tr '\0' L)"
# a login user (auid set): the subject is that user, not root
bash -c 'echo 65534 > /proc/self/loginuid && exec touch by-nobody-auid'

# 2. a watched program run with hostile arguments: control bytes, 4 KiB, shell syntax
auditctl -w "$WORK/bin/run-me" -p x -k amx-exec
# shellcheck disable=SC2016  # the unexpanded $(...) is the hostile input itself
"$WORK/bin/run-me" "$(printf 'line1\nline2\r\x01\x7f\xff')" "$(head -c 4096 /dev/zero | tr '\0' A)" '$(rm -rf /)' '=?utf-8?b?QmNjOiBldmlsQGV4YW1wbGUuY29t?='

# 3. a watch with two keys (auditctl joins them with \x01 in one key field)
auditctl -w "$WORK/multi" -p wa -k amx-multi -k amx-second
touch "$WORK/multi/one"

# 4. a small flood: 40 files under one key
auditctl -w "$WORK/flood" -p wa -k amx-flood
for i in $(seq 1 40); do : > "$WORK/flood/f$i"; done

cleanup
trap - EXIT
sleep 1   # auditd writes the log asynchronously
LC_ALL=C ausearch --raw -ts "${START[@]}" -k amx-hostile > "$DATA/hostile.log"
LC_ALL=C ausearch --raw -ts "${START[@]}" -k amx-exec > "$DATA/exec-args.log"
LC_ALL=C ausearch --raw -ts "${START[@]}" -k amx-multi > "$DATA/multi-key.log"
LC_ALL=C ausearch --raw -ts "${START[@]}" -k amx-flood > "$DATA/flood.log"
# a background of events under no watched key: what the cheap rejection must skip
LC_ALL=C ausearch --raw -ts "${START[@]}" -m CONFIG_CHANGE > "$DATA/config-change.log"
wc -l "$DATA"/*.log
