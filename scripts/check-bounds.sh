#!/usr/bin/env bash
# The codebase's own bound: no source file over 400 lines before its tests
# (its first top-level `#[cfg(test)]`: a test module nested in another counts as code), unless its first lines say why it must stay whole
# (a `//! Kept whole:` line). Prints every file over the bound and fails.
set -euo pipefail
cd "$(dirname "$0")/.."
LIMIT=${LIMIT:-400}
over=0
while IFS= read -r file; do
    body=$(awk '/^#\[cfg\(test\)\]/ { exit } { n++ } END { print n + 0 }' "$file")
    if [ "$body" -gt "$LIMIT" ] && ! head -n 5 "$file" | grep -q '^//! Kept whole:'; then
        echo "check-bounds: $file has $body lines before its tests (limit $LIMIT)"
        over=1
    fi
done < <(find src gen_compose -name '*.rs'; echo gen_compose.rs)
[ "$over" = 0 ] && echo "check-bounds: every source file is within $LIMIT lines before its tests"
exit "$over"
