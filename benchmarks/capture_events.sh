#!/usr/bin/env bash
# Capture real audit records from this host's kernel and auditd, as `ausearch --raw`
# prints them, for the benchmark corpus and the fuzz seeds.
#
# Loads a few keyed rules, makes activity that matches them (including file names and
# command lines with CR/LF, invalid UTF-8, MIME words, shell metacharacters and 4 KiB of
# text, which the kernel hex-encodes), then removes exactly the rules it added.
# Holds the host auditd lock for the whole time: other suites use the same auditd.
#
# usage: [CAPTURE_LOCK_WAIT=SECONDS] benchmarks/capture_events.sh OUTPUT_FILE
set -euo pipefail
out=${1:?usage: $0 OUTPUT_FILE}
lock=/run/lock/audit-mail-alert-host.lock
[ "$(id -u)" = 0 ] || { echo "capture_events.sh: needs root to load audit rules" >&2; exit 1; }

work=$(mktemp -d /tmp/mailalert-capture.XXXXXX)
rules=(
  "-w $work/watched -p wa -k mailalert_watch"
  "-a always,exit -F arch=b64 -S execve -F path=/usr/bin/id -k mailalert_exec"
  "-a always,exit -F arch=b64 -S execve -F path=/usr/bin/true -k mailalert_noise"
)

cleanup() {
  for r in "${rules[@]}"; do
    # shellcheck disable=SC2086  # a rule is a list of words
    auditctl ${r/#-w/-W} >/dev/null 2>&1 || auditctl ${r/#-a/-d} >/dev/null 2>&1 || true
  done
  rm -rf "$work"
}

exec 9>"$lock"
# Another suite may hold the host's auditd for half an hour: wait at most CAPTURE_LOCK_WAIT
# seconds (default 300), then give up (make bench then uses the committed capture).
if ! flock -n 9; then
  echo "capture_events.sh: waiting up to ${CAPTURE_LOCK_WAIT:-300} s for $lock (another suite is using the host's auditd)"
  flock -w "${CAPTURE_LOCK_WAIT:-300}" 9 || {
    echo "capture_events.sh: $lock still taken after ${CAPTURE_LOCK_WAIT:-300} s; no capture" >&2
    exit 1
  }
fi
trap cleanup EXIT
mkdir -p "$work/watched"
for r in "${rules[@]}"; do
  # shellcheck disable=SC2086
  auditctl $r >/dev/null
done
since_date=$(LC_ALL=C date +%x)
since_time=$(LC_ALL=C date +%T)
sleep 1  # ausearch -ts has a resolution of one second

# Matching activity: ordinary and hostile names in the watched directory, hostile argv.
w=$work/watched
for i in $(seq 1 20); do echo "$i" > "$w/report-$i.txt"; /usr/bin/id -u >/dev/null; done
: > "$w/$(printf 'evil\r\nBcc: attacker@example.com')"
: > "$w/$(printf 'bad-utf8-\xff\xfe-name')"
: > "$w/=?utf-8?q?Subject=3A_forged?="
# shellcheck disable=SC2016  # the unexpanded $(...) is the hostile input itself
: > "$w/"'$(reboot);`id`|&>x'
/usr/bin/id "$(printf 'line1\r\nX-Audit-Key: forged')" >/dev/null 2>&1 || true
/usr/bin/id "$(printf 'x%.0s' $(seq 1 4096))" >/dev/null 2>&1 || true
# shellcheck disable=SC2016  # the unexpanded $(...) is the hostile input itself
/usr/bin/id '=?utf-8?b?Rm9yZ2Vk?=' ';' '&&' '|' '$HOME' >/dev/null 2>&1 || true
/usr/bin/id "$(printf 'bad\xc3\x28utf8')" >/dev/null 2>&1 || true
# Non-matching activity: another key, and records without a key.
for _ in $(seq 1 40); do /usr/bin/true; done
for i in $(seq 1 10); do cat "$w/report-$i.txt" >/dev/null; done

# Let auditd write everything out, then read it back in the plugin's input format.
deadline=$((SECONDS + 10))
until [ "$(LC_ALL=C ausearch --raw -k mailalert_noise -ts "$since_date" "$since_time" 2>/dev/null \
          | grep -c '^type=SYSCALL.* exe="/usr/bin/true"')" -ge 40 ]; do
  [ $SECONDS -lt $deadline ] || { echo "capture_events.sh: auditd did not log the activity" >&2; exit 1; }
  sleep 0.2
done
LC_ALL=C ausearch --raw -ts "$since_date" "$since_time" > "$out"
echo "capture_events.sh: $(grep -c . "$out") records, $(cut -d' ' -f2 "$out" | sort -u | wc -l) events -> $out"
