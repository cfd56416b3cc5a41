#!/usr/bin/env bash
# Build BCU Studio for macOS: "BCU Studio.app" (PyInstaller BUNDLE of packaging/bcu_studio.spec) in a .dmg.
#
#   packaging/macos/build_dmg.sh [--fresh]
#
# UNTESTED here (no macOS on the build machines): it runs in the macos-latest job of
# .github/workflows/installers.yml. See packaging/README.md.
#
# Uses torch and torchvision as PyPI ships them for macOS (CPU + Apple's MPS GPU backend), so the flavour is
# called "mps". Produces packaging/dist/BCU Studio.app and packaging/dist/bcu-studio-mps-<version>-macos-<arch>.dmg.
# The app is ad-hoc signed by PyInstaller only (not notarised): on first start, right-click > Open.
#
# Environment: PYTHON (default python3, >= 3.10), BCU_PYINSTALLER (default "pyinstaller>=6.10,<7").
set -euo pipefail

FRESH=0
for arg in "$@"; do
    case "$arg" in
        --fresh) FRESH=1 ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "build_dmg.sh: unknown argument '$arg'" >&2; exit 2 ;;
    esac
done
[ "$(uname -s)" = Darwin ] || { echo "build_dmg.sh: macOS only (hdiutil)" >&2; exit 2; }

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"  # packaging/
ROOT="$(dirname "$HERE")"
BUILD="$HERE/build"
DIST="$HERE/dist"
FLAVOUR=mps
VENV="$BUILD/venv-$FLAVOUR"
WORK="$BUILD/pyi-$FLAVOUR"
PYTHON="${PYTHON:-python3}"
PYINSTALLER="${BCU_PYINSTALLER:-pyinstaller>=6.10,<7}"
APP="$DIST/BCU Studio.app"
T_START=$(date +%s)
mkdir -p "$BUILD" "$DIST"

[ "$FRESH" = 1 ] && rm -rf "$VENV" "$WORK"
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PY="$VENV/bin/python"
echo "==> installing the project and PyInstaller into $VENV"
"$PY" -m pip install --quiet --disable-pip-version-check "$ROOT" "$PYINSTALLER"
"$PY" -m pip install --quiet --disable-pip-version-check --no-deps --force-reinstall "$ROOT"
VERSION="$("$PY" -c 'import bcu_gui; print(bcu_gui.__version__)')"
ARCH="$(uname -m)"
DMG="$DIST/bcu-studio-$FLAVOUR-$VERSION-macos-$ARCH.dmg"

echo "==> PyInstaller: $APP"
rm -rf "$APP" "${DIST:?}/bcu-studio-$FLAVOUR"
(cd "$BUILD" && BCU_FLAVOUR="$FLAVOUR" "$PY" -m PyInstaller --noconfirm --log-level WARN \
    --distpath "$DIST" --workpath "$WORK" "$HERE/bcu_studio.spec")
[ -x "$APP/Contents/MacOS/BCU Studio" ] && [ -x "$APP/Contents/MacOS/bcu" ] \
    || { echo "build_dmg.sh: PyInstaller made no $APP with both executables" >&2; exit 1; }
"$APP/Contents/MacOS/bcu" --version
"$APP/Contents/MacOS/bcu" archs

echo "==> dmg: $DMG"
STAGE="$BUILD/dmg-$FLAVOUR"
rm -rf "$STAGE" "$DMG"
mkdir -p "$STAGE"
ditto "$APP" "$STAGE/BCU Studio.app"
ln -s /Applications "$STAGE/Applications"
if ! hdiutil create -volname "BCU Studio $VERSION" -srcfolder "$STAGE" -fs HFS+ -format UDZO -ov "$DMG"; then
    # hdiutil sometimes under-estimates the image size for large folders: retry with an explicit size
    SIZE_MB=$(( $(du -sm "$STAGE" | cut -f1) * 12 / 10 + 64 ))
    hdiutil create -volname "BCU Studio $VERSION" -srcfolder "$STAGE" -fs HFS+ -format UDZO -size "${SIZE_MB}m" -ov "$DMG"
fi
rm -rf "$STAGE"

echo
echo "==> done: BCU Studio $VERSION for macOS ($ARCH)"
printf '%-6s %8s  %s\n' ".app" "$(du -sh "$APP" | cut -f1)" "$APP"
printf '%-6s %8s  %s\n' ".dmg" "$(du -h "$DMG" | cut -f1)" "$DMG"
echo "elapsed: $(($(date +%s) - T_START))s"
