#!/usr/bin/env bash
# Installs what tests/e2e/test_deploy.py runs the shipped deployment files with (deploy/,
# docs/deploy.md), each only when missing:
#   - Debian's nginx (nginx-light: the proxy, upstream, map and gzip modules the shipped
#     deploy/nginx.conf uses), run by the tests in front of a real server;
#   - Debian's Caddy, which the tests run with deploy/Caddyfile the same way.
# Neither is started as a service: the tests run their own instances with their own
# configuration and stop them. systemd-analyze (for deploy/modelport.service) comes with
# systemd; Docker is not needed (no image is built here; see docs/deploy.md).
# Run as root (apt-get) or with sudo. Safe to run again: it does nothing when everything is there.
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/apt.sh"

missing=()
command -v nginx >/dev/null 2>&1 || [[ -x /usr/sbin/nginx ]] || missing+=(nginx-light)
installed caddy || missing+=(caddy)

apt_install ${missing[@]+"${missing[@]}"}

echo "nginx: $(command -v nginx || echo /usr/sbin/nginx)"
echo "caddy: $(command -v caddy)"
