#!/usr/bin/env bash
# `make deps`: install the Debian packages listed in mk/apt-packages that this machine
# lacks. Does nothing (and no apt-get update) when all are present; without root or apt it
# names the missing packages and the command that installs them, and fails.
#
#   mk/deps.sh [LIST]        LIST defaults to mk/apt-packages
set -euo pipefail

list=${1:-$(cd "$(dirname "$0")/.." && pwd)/mk/apt-packages}
mapfile -t wanted < <(sed 's/#.*//' "$list" | tr -s ' \t' '\n' | grep .)

missing=()
for package in "${wanted[@]}"; do
  status=$(dpkg-query -W -f='${db:Status-Status}' "$package" 2>/dev/null || true)
  [ "$status" = installed ] || missing+=("$package")
done

if [ "${#missing[@]}" -eq 0 ]; then
  echo "==> deps: all ${#wanted[@]} Debian packages of $list are installed"
  exit 0
fi

command="apt-get update && apt-get install -y --no-install-recommends ${missing[*]}"
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
  why="not root"; command -v apt-get >/dev/null || why="no apt-get on this machine"
  echo "deps: ${#missing[@]} Debian packages of $list are missing and cannot be installed ($why):" >&2
  echo "deps:   ${missing[*]}" >&2
  echo "deps: install them as root with:  $command" >&2
  exit 1
fi

started=$SECONDS
echo "==> deps: installing ${#missing[@]} missing Debian packages with apt: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "==> deps: installed ${#missing[@]} packages in $((SECONDS - started)) s"
