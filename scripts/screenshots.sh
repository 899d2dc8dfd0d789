#!/usr/bin/env bash
# Screenshots for the README (issue 15): `ndcl show` in a real terminal (tmux) and the report,
# both rendered by headless Chromium. Writes docs/ndcl-show.png, docs/ndcl-show-clusters.png
# and docs/report.png; needs tmux and chromium (Debian packages), run after `make install`.
# Only this script's own temporary folder is removed.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
WORK=$(mktemp -d -t ndcl-shots-XXXXXX)
trap 'tmux kill-session -t ndcl-shots 2>/dev/null || true; rm -rf "$WORK"' EXIT
DEMO=data/demo/c4-demo.00000-of-00001.json.gz
DB="sqlite:///$WORK/runs.db"
$BIN/ndcl -q --db-url "$DB" run --workflow nd_cl --kmeans-backend local --k1 6 --k2 3 \
    --input "$DEMO" --output "$WORK/nd_cl" >/dev/null
$BIN/ndcl -q --db-url "$DB" run --workflow cl_nd --kmeans-backend local --k1 6 --k2 3 \
    --input "$DEMO" --output "$WORK/cl_nd" >/dev/null

# A real terminal: tmux runs the command in a 110 x 42 pane; capture-pane -e keeps its colours.
shot() {  # shot NAME COMMAND...
    local name=$1; shift
    tmux new-session -d -s ndcl-shots -x 110 -y 56 "$* ; sleep 30"
    sleep 6
    tmux capture-pane -t ndcl-shots -e -p > "$WORK/$name.ansi"
    tmux kill-session -t ndcl-shots
    $BIN/python - "$WORK/$name.ansi" "$WORK/$name.html" <<'PY'
import sys
from rich.console import Console
from rich.text import Text
console = Console(record=True, width=110, file=open("/dev/null", "w"))
console.print(Text.from_ansi(open(sys.argv[1]).read()))
open(sys.argv[2], "w").write(console.export_html(inline_styles=True).replace(
    "<body>", '<body style="background:#111;color:#ddd;margin:8px">'))
PY
    chromium --headless --no-sandbox --disable-gpu --hide-scrollbars \
        --user-data-dir="$WORK/profile" --window-size=1200,1000 \
        --screenshot="docs/$name.png" "file://$WORK/$name.html" 2>/dev/null
}
shot ndcl-show "$BIN/ndcl show $WORK/nd_cl --limit 2 --members 2 --width 200"
shot ndcl-show-clusters "$BIN/ndcl show $WORK/nd_cl --clusters"
$BIN/ndcl --db-url "$DB" report --output "$WORK/report" >/dev/null
chromium --headless --no-sandbox --disable-gpu --hide-scrollbars \
    --user-data-dir="$WORK/profile" --window-size=1280,2400 \
    --screenshot=docs/report.png "file://$WORK/report/index.html" 2>/dev/null
ls -l docs/ndcl-show.png docs/ndcl-show-clusters.png docs/report.png
