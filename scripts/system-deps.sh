#!/usr/bin/env bash
# Install the Debian packages the test suite talks to (real peers, not mocks), and what
# compiling mxguard's hot modules needs (gcc, Python's headers), when missing.
# Needs root for apt-get; without it, prints the command to run instead.
set -euo pipefail

packages=(gcc python3-dev swaks postfix redis-server postgrey pflogsumm chromium tmux procps)
missing=()
for pkg in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  echo "mxguard tests need these Debian packages: ${missing[*]}" >&2
  echo "install them with: sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi
echo "installing Debian packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# Postfix asks a question at install time; answer it "No configuration" (tests run private instances).
echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
