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
snapshot=$(mktemp -d)
trap 'rm -rf "$snapshot"' EXIT
for p in "${paths[@]}"; do cp -a --parents "$p" "$snapshot/"; done
# The committed bundle is made with the Makefile's defaults; a VERSION or
# REGISTRY in the caller's environment must not count as a difference.
log="$snapshot.log"
trap 'rm -rf "$snapshot" "$log"' EXIT
if ! env -u VERSION -u REGISTRY -u BUNDLE_CHANNELS -u BUNDLE_REPLACES -u BUNDLE_SKIP_RANGE \
    make --no-print-directory -s manifests generate bundle >"$log" 2>&1; then
  cat "$log" >&2
  echo "'make manifests generate bundle' failed (output above)." >&2
  exit 1
fi
after=$(sum)
if [ "$before" != "$after" ]; then
  echo "Generated files were out of date and have been regenerated:" >&2
  diff <(echo "$before") <(echo "$after") | grep '^[<>]' | awk '{print "  " $3}' | sort -u >&2 || true
  for p in "${paths[@]}"; do diff -ru "$snapshot/$p" "$p"; done | head -200 >&2 || true
  echo "Run 'make manifests generate bundle' and commit the result." >&2
  exit 1
fi
echo "Generated code and manifests are up to date."
