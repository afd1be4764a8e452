#!/bin/sh
# Install allblast for this user, without root: the bundle goes to ~/.local/lib/allblast, the two
# programs are linked into ~/.local/bin, and the menu entry and icon go to ~/.local/share.
# Run it from the unpacked folder: ./install.sh        Remove it again: ./install.sh --uninstall
set -eu

HERE=$(cd "$(dirname "$0")" && pwd)
PREFIX=${XDG_DATA_HOME:-$HOME/.local/share}
DEST=$HOME/.local/lib/allblast
BIN=$HOME/.local/bin
APPS=$PREFIX/applications
ICONS=$PREFIX/icons/hicolor/scalable/apps

if [ "${1:-}" = "--uninstall" ]; then
    # Only what install.sh put there; labels and settings in the user data folder are kept.
    rm -rf "$DEST"
    rm -f "$BIN/allblast" "$BIN/allblast-engine" "$APPS/allblast.desktop" "$ICONS/allblast.svg"
    echo "allblast removed (your labels, runs and settings are kept)."
    exit 0
fi
if [ ! -x "$HERE/allblast" ] || [ ! -x "$HERE/allblast-engine" ]; then
    echo "install.sh: run it from the unpacked allblast folder (allblast and allblast-engine not found in $HERE)" >&2
    exit 2
fi

mkdir -p "$BIN" "$APPS" "$ICONS" "$(dirname "$DEST")"
# Copy next to the old installation first, then swap: a failed copy leaves the old one working.
rm -rf "$DEST.new"
cp -R "$HERE" "$DEST.new"
rm -rf "$DEST.old"
if [ -e "$DEST" ]; then mv "$DEST" "$DEST.old"; fi
mv "$DEST.new" "$DEST"
rm -rf "$DEST.old"

ln -sf "$DEST/allblast" "$BIN/allblast"
ln -sf "$DEST/allblast-engine" "$BIN/allblast-engine"
cp "$DEST/allblast.svg" "$ICONS/allblast.svg"
sed "s|^Exec=.*|Exec=\"$DEST/allblast\" %f|" "$DEST/allblast.desktop" > "$APPS/allblast.desktop"
command -v update-desktop-database >/dev/null 2>&1 && update-desktop-database "$APPS" >/dev/null 2>&1 || true

echo "allblast installed in $DEST"
echo "  start it from the applications menu, or run: $BIN/allblast"
case ":$PATH:" in
    *":$BIN:"*) ;;
    *) echo "  ($BIN is not on your PATH: add it, or use the full path above)" ;;
esac
