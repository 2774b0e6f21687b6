#!/usr/bin/env bash
# `make demo`: boot a throwaway Debian 12 VM (SELinux enforcing), deploy the role with key
# `alert` watching /usr/bin/w, run `w` there, print the alert mail that arrived, and
# destroy the VM again (also when a step fails).
#
#   tests/lab/demo.sh [RUNDIR]     RUNDIR defaults to build/lab/demo
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
run=${1:-$here/../../build/lab/demo}
mkdir -p "$run"
run=$(cd "$run" && pwd)
started=$SECONDS
step() { printf '==> demo: %s (%ss)\n' "$*" "$((SECONDS - started))"; }

trap 'step "destroying the VM"; bash "$here/vm.sh" stop "$run"' EXIT
step "booting a throwaway Debian 12 VM (builds its image the first time: about 5 minutes)"
# One VM alone: give it both host cores.
LAB_SMP=${LAB_SMP:-2} LAB_MEM=${LAB_MEM:-2048} bash "$here/vm.sh" start bookworm "$run"

cat >"$run/inventory.yml" <<INVENTORY
demo:
  hosts:
    demo-debian12:
      ansible_host: 127.0.0.1
      ansible_port: $(cat "$run/port")
      ansible_user: root
      ansible_private_key_file: $run/id_ed25519
      ansible_ssh_common_args: -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null
      ansible_python_interpreter: /usr/bin/python3
INVENTORY

step "deploying linux_audit.mail_alert.audit_mail_alert and running w (about 3 minutes)"
rm -f "$run/alert.eml"
ANSIBLE_PIPELINING=true ANSIBLE_CALLBACK_RESULT_FORMAT=yaml DEMO_MAIL_FILE="$run/alert.eml" \
  ansible-playbook -i "$run/inventory.yml" "$here/demo.yml"

step "the alert mail that arrived in root's mailbox on the VM after running w:"
echo "------------------------------------------------------------------------"
cat "$run/alert.eml"
echo "------------------------------------------------------------------------"
step "done"
