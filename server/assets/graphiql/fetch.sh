#!/bin/sh
# Fetches the GraphiQL page's assets from the npm registry into this directory, and checks them
# against SHA256SUMS. Settle embeds these files in its binary (server/src/http/graphiql.rs) so
# /graphiql works without internet; run this only to change versions, then update SHA256SUMS,
# the file names in graphiql.rs and the versions below together.
#
# GraphiQL 3.x is the last major version shipping a UMD bundle (graphiql.min.js/.css) that
# works from plain <script> tags; it needs React 18 as UMD globals.
set -eu
GRAPHIQL=3.9.0
REACT=18.3.1

here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
npm pack --silent "graphiql@$GRAPHIQL" "react@$REACT" "react-dom@$REACT" >/dev/null
for package in "graphiql-$GRAPHIQL" "react-$REACT" "react-dom-$REACT"; do
    mkdir "$package"
    tar xzf "$package.tgz" -C "$package"
done
cp "graphiql-$GRAPHIQL/package/graphiql.min.js" "$here/graphiql-$GRAPHIQL.min.js"
cp "graphiql-$GRAPHIQL/package/graphiql.min.css" "$here/graphiql-$GRAPHIQL.min.css"
cp "graphiql-$GRAPHIQL/package/LICENSE" "$here/LICENSE-graphiql"
cp "react-$REACT/package/umd/react.production.min.js" "$here/react-$REACT.production.min.js"
cp "react-dom-$REACT/package/umd/react-dom.production.min.js" "$here/react-dom-$REACT.production.min.js"
cp "react-$REACT/package/LICENSE" "$here/LICENSE-react"
cd "$here"
sha256sum -c SHA256SUMS
