#!/usr/bin/env bash
# Fails when `make manifests generate bundle` changes a file, i.e. when generated code
# or manifests were edited by hand or not regenerated after an API change. It
# compares checksums before and after, so it works on a dirty tree too.
set -euo pipefail
cd "$(dirname "$0")/.."
paths=()
for p in api config bundle bundle.Dockerfile pkg/meshapi; do [ -e "$p" ] && paths+=("$p"); done
sum() { find "${paths[@]}" -type f | LC_ALL=C sort | xargs -r sha256sum; }
before=$(sum)
make --no-print-directory -s manifests generate bundle >/dev/null
after=$(sum)
if [ "$before" != "$after" ]; then
  echo "Generated files were out of date and have been regenerated:" >&2
  diff <(echo "$before") <(echo "$after") | grep '^[<>]' | awk '{print "  " $3}' | sort -u >&2
  echo "Run 'make manifests generate bundle' and commit the result." >&2
  exit 1
fi
echo "Generated code and manifests are up to date."
