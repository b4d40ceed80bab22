#!/usr/bin/env bash
# Installs ejabberd and Prosody from Debian's packages without letting the packages start
# their services (their stock configurations listen on every interface). Run as root.
set -euo pipefail

guard=/usr/sbin/policy-rc.d
made_guard=
if [ ! -e "$guard" ]; then
    # Tell invoke-rc.d not to start anything while the packages install.
    printf '#!/bin/sh\nexit 101\n' > "$guard"
    chmod +x "$guard"
    made_guard=1
fi
trap '[ -n "$made_guard" ] && rm -f "$guard"' EXIT

apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ejabberd prosody

# Should a service have started anyway (e.g. under systemd), stop it: the benchmark runs its
# own instances with bench/peers' configurations.
if command -v systemctl >/dev/null && systemctl is-system-running >/dev/null 2>&1; then
    systemctl disable --now ejabberd prosody >/dev/null 2>&1 || true
fi
echo "ejabberd $(dpkg-query -W -f='${Version}' ejabberd), prosody $(dpkg-query -W -f='${Version}' prosody) installed"
