#!/usr/bin/env bash
# Installs what the browser-level tests of the website (tests/e2e/test_web_browser.py) need,
# each only when missing:
#   - Debian's Chromium (/usr/bin/chromium), driven by Playwright through `executablePath`;
#     no browser is ever downloaded by Playwright (never `npx playwright install`);
#   - from the npm registry, into tests/browser/node_modules (versions pinned by
#     tests/browser/package-lock.json): playwright-core, axe-core and vnu-jar (the Nu HTML
#     Checker, run with the machine's Java);
#   - a font with Chinese glyphs (fonts-wqy-zenhei) for the screenshots of the zh-CN pages;
#   - Java (a headless JRE) for vnu.jar, and Node.js/npm, when the machine lacks them.
# Run as root (apt-get). Safe to run again: it does nothing when everything is there.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
browser_dir="$root/tests/browser"

missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v java >/dev/null 2>&1 || missing+=(default-jre-headless)
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
# A font with Chinese glyphs, so that screenshots of the zh-CN pages show text, not boxes.
if ! fc-list :lang=zh 2>/dev/null | grep -q .; then missing+=(fonts-wqy-zenhei); fi

if ((${#missing[@]})); then
    sudo=""
    if [[ "$(id -u)" != 0 ]]; then sudo="sudo"; fi
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update
    $sudo apt-get install -y --no-install-recommends "${missing[@]}"
fi

# playwright-core needs Node.js 20 or later (Debian 12's own nodejs is 18).
node_major="$(node -p 'process.versions.node.split(".")[0]')"
if ((node_major < 20)); then
    echo "warning: Node.js $(node --version) is too old for playwright-core (needs >= 20)" >&2
fi

need_npm=0
for module in playwright-core axe-core vnu-jar; do
    [[ -f "$browser_dir/node_modules/$module/package.json" ]] || need_npm=1
done
if ((need_npm)); then
    cd "$browser_dir"
    # No install scripts: vnu-jar's postinstall would fetch a Java runtime from the web (the
    # machine's Java runs vnu.jar), and nothing here needs one.
    if [[ -f package-lock.json ]]; then
        npm ci --ignore-scripts --no-audit --no-fund
    else
        npm install --ignore-scripts --no-audit --no-fund
    fi
fi

echo "chromium: $(command -v chromium)"
echo "java: $(command -v java)"
echo "node modules: $browser_dir/node_modules"
