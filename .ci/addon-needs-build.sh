#!/usr/bin/env bash
# Whether the native addon must be built again in this checkout: exits 0 and says why when no
# addon loads here, or when the one that loads (node-gyp-build's choice: build/Release first,
# then a prebuild matching this platform, as src/native.ts loads it) is older than the addon's
# sources (binding.gyp, native/*.cc and *.h; native/fuzz and native/sanitize are separate
# builds) or node-addon-api's headers; exits 1 when it is up to date.
set -uo pipefail
cd "$(dirname "$0")/.."
addon="$(node -p "require('node-gyp-build').resolve('.')" 2>/dev/null)" || addon=""
if [ -z "$addon" ]; then
  echo "no addon for this machine in build/Release or prebuilds/"
  exit 0
fi
bash .ci/needs-build.sh "$addon" binding.gyp native/*.cc native/*.h node_modules/node-addon-api/package.json
