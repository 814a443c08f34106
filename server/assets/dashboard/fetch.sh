#!/bin/sh
# Fetches the dashboard's chart library from the npm registry into this directory, and checks it
# against SHA256SUMS. Settle embeds it in its binary (server/src/http/dashboard.rs) so /dashboard
# works without internet; run this only to change versions, then update SHA256SUMS, the file
# names in dashboard.rs and index.html, and the version below together.
#
# Chart.js publishes a minified UMD build (dist/chart.umd.min.js) that works from a plain
# <script> tag as the global `Chart`: no bundler, no other dependency.
set -eu
CHARTJS=4.6.1

here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
npm pack --silent "chart.js@$CHARTJS" >/dev/null
mkdir "chart.js-$CHARTJS"
tar xzf "chart.js-$CHARTJS.tgz" -C "chart.js-$CHARTJS"
# The source map it names is not shipped with Settle; the comment would only make browsers ask.
sed '/^\/\/# sourceMappingURL=/d' "chart.js-$CHARTJS/package/dist/chart.umd.min.js" > "$here/chart-$CHARTJS.umd.min.js"
cp "chart.js-$CHARTJS/package/LICENSE.md" "$here/LICENSE-chart.js"
cd "$here"
sha256sum -c SHA256SUMS
