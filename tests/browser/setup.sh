#!/usr/bin/env bash
# Installs what the dashboard's browser tests need, once: Debian's chromium (when /usr/bin/chromium
# is missing) and playwright-core as pinned by package-lock.json (when node_modules lacks it).
# Idempotent and quick when both are there; .ci/run calls it before `cargo test`, and
# tests/api/dashboard.rs calls it too, so a plain `cargo test` on a fresh machine works.
# Playwright's own browser download is never used: it needs a network this project cannot assume.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

# One installer at a time (several tests may call this together).
exec 9>"$here/.setup.lock"
flock 9

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

if [ ! -x /usr/bin/chromium ]; then
    echo "setup: installing chromium from Debian's packages" >&2
    as_root apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends chromium >&2
fi

if [ ! -f "$here/node_modules/playwright-core/package.json" ] \
    || [ "$here/package-lock.json" -nt "$here/node_modules/.package-lock.json" ]; then
    echo "setup: installing playwright-core (npm ci)" >&2
    (cd "$here" && npm ci --no-audit --no-fund --loglevel=error >&2)
fi
