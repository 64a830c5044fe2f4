#!/usr/bin/env bash
# Checks the coordinator's status page in a real browser: starts `moemesh up` with its HTTP port, sends traffic,
# loads the page in headless Chromium, takes a screenshot and checks that the heatmap shows load.
# Usage: scripts/check-status-page.sh [path/to/moemesh] [screenshot.png]
#   (defaults: .build/debug/moemesh, docs/status-page.png)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
moemesh="${1:-$root/.build/debug/moemesh}"
screenshot="${2:-$root/docs/status-page.png}"

browser="$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)"
if [ -z "$browser" ]; then
    if [ "$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
    else echo "chromium is missing: apt-get install chromium" >&2; exit 1; fi
    browser="$(command -v chromium)"
fi

work="$(mktemp -d)"
"$moemesh" up --port 0 --coordinator-port 0 --http-port 0 --log-level warning > "$work/up.out" &
up=$!
trap 'kill "$up" 2>/dev/null; wait "$up" 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 1 600); do grep -q "^router listening on" "$work/up.out" && break; sleep 0.1; done
router="$(sed -n 's/^router listening on //p' "$work/up.out")"
http="$(sed -n 's/^http listening on //p' "$work/up.out")"
[ -n "$router" ] && [ -n "$http" ] || { echo "moemesh up did not start" >&2; exit 1; }

# Traffic on both layers, kept going while the browser loads the page: the heatmap shows demand over the last
# seconds, and a browser slow to start (a loaded machine) must not find it expired.
for i in $(seq 1 12); do
    "$moemesh" forward --router "$router" --layer $((i % 2)) --random 64 --seed "$i" >/dev/null
    sleep 0.2
done
( i=0; while true; do
    "$moemesh" forward --router "$router" --layer $((i % 2)) --random 64 --seed "$i" >/dev/null 2>&1 || true
    i=$((i + 1)); sleep 0.2
done ) &
traffic=$!
trap 'kill "$traffic" 2>/dev/null || true; kill "$up" 2>/dev/null || true; wait "$up" 2>/dev/null || true; rm -rf "$work"' EXIT

flags=(--headless --no-sandbox --disable-gpu --hide-scrollbars --virtual-time-budget=3000 --window-size=1280,1100)
"$browser" "${flags[@]}" --dump-dom "http://$http/" > "$work/page.html" 2>/dev/null
"$browser" "${flags[@]}" --screenshot="$work/shot.png" "http://$http/" >/dev/null 2>&1
kill "$traffic" 2>/dev/null || true
mkdir -p "$(dirname "$screenshot")"
cp "$work/shot.png" "$screenshot"

cells="$(grep -o 'data-demand="[0-9.]*"' "$work/page.html" | wc -l)"
busy="$(grep -o 'data-demand="[0-9.]*"' "$work/page.html" | grep -vc 'data-demand="0.0"' || true)"
size="$(stat -c %s "$screenshot")"
echo "status page: $cells heatmap cells, $busy with load; screenshot $screenshot ($size bytes)"
[ "$cells" -ge 16 ] || { echo "the heatmap has $cells cells, expected 16 (2 layers × 8 experts)" >&2; exit 1; }
[ "$busy" -ge 1 ] || { echo "the heatmap shows no load after traffic" >&2; exit 1; }
[ "$size" -gt 10000 ] || { echo "the screenshot looks empty ($size bytes)" >&2; exit 1; }
