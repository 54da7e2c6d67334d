#!/usr/bin/env bash
# Install what the project and its local stack need on a bare Debian 12 machine.
#
# Idempotent and quick on a second run: apt only runs when a package is
# missing, the venv is only re-installed when pyproject.toml changed, and the
# Kafka jars are only resolved when their directory for the version is missing.
# Run as root from anywhere: bash .ci/install.sh
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
export DEBIAN_FRONTEND=noninteractive

step() { printf '[install %s] %s\n' "$(date +%H:%M:%S)" "$*"; }

# Debian packages ---------------------------------------------------------------
# Recommends stay out: docker-compose would bring the Docker engine (docker.io),
# prometheus a node exporter, chromium a printing and desktop stack. A font is
# named instead so headless Chromium renders text.
packages=(redis-server prometheus docker-compose chromium fonts-liberation)
command -v java >/dev/null || packages+=(openjdk-17-jre-headless)
command -v mvn >/dev/null || packages+=(maven)
command -v python3.11 >/dev/null || packages+=(python3.11)
python3.11 -c 'import ensurepip' 2>/dev/null || packages+=(python3.11-venv)

missing=()
for package in "${packages[@]}"; do
    status=$(dpkg-query -W -f='${Status}' "$package" 2>/dev/null || true)
    [[ $status == "install ok installed" ]] || missing+=("$package")
done

if ((${#missing[@]})); then
    # The packages' maintainer scripts would start the distribution's own Redis
    # and Prometheus on the ports the stack uses. A policy-rc.d that answers 101
    # tells invoke-rc.d not to start any service while we install
    # (/usr/share/doc/init-system-helpers/README.policy-rc.d).
    created_policy=0
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod +x /usr/sbin/policy-rc.d
        created_policy=1
        trap '[[ $created_policy == 1 ]] && rm -f /usr/sbin/policy-rc.d' EXIT
    fi
    step "apt-get install ${missing[*]}"
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}"
    if ((created_policy)); then
        rm -f /usr/sbin/policy-rc.d
        created_policy=0
    fi
else
    step "debian packages present"
fi

# The stack runs its own Redis and Prometheus on loopback with their own data;
# stop the distribution's services should an earlier install have started them.
for service in redis-server prometheus prometheus-node-exporter; do
    if [[ -x /etc/init.d/$service ]] && service "$service" status >/dev/null 2>&1; then
        step "stopping the distribution's $service service"
        service "$service" stop || true
    fi
done

# Python ------------------------------------------------------------------------
if [[ ! -x .venv/bin/python ]]; then
    step "creating .venv with $(command -v python3.11)"
    python3.11 -m venv .venv
fi

stamp=.venv/.installed-pyproject.sha256
wanted=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [[ ! -f $stamp || $(cat "$stamp") != "$wanted" ]]; then
    step "pip install -e .[test]"
    .venv/bin/python -m pip install -q --upgrade pip
    .venv/bin/python -m pip install -q -e '.[test]'
    echo "$wanted" >"$stamp"
else
    step "python packages up to date"
fi

# Kafka -------------------------------------------------------------------------
step "kafka jars"
.venv/bin/python - <<'EOF'
import logging

from stream import stack
from stream.settings import get_settings

logging.basicConfig(level=logging.INFO, format="%(name)s %(message)s")
print(f"kafka jars in {stack.fetch(get_settings())}")
EOF
step "done"
