#!/usr/bin/env bash
# Build BCU Studio's Linux bundle (PyInstaller, one folder, runs without Python) and wrap it as .deb and .tar.gz.
#
#   packaging/build.sh [--flavour cpu|cuda] [--skip-deb] [--skip-tar] [--smoke] [--fresh] [--repackage]
#
#   --flavour cpu   (default) CPU-only torch (torch==2.13.0+cpu), WITHOUT torchvision: PyPI's Linux torchvision
#                   is a CUDA build that cannot load beside CPU torch. ~1 GB. The in-house architectures
#                   (CIFAR ResNets, PreActResNet, VGG) work; the torchvision model zoo is reported unavailable.
#   --flavour cuda  torch and torchvision as PyPI ships them (CUDA), the project's dependencies as they are. ~4 GB.
#   --skip-deb      no .deb (the folder and the .tar.gz only)
#   --skip-tar      no .tar.gz
#   --smoke         after building, run the frozen app's `bcu-gui --smoke` under Xvfb (needs xvfb-run)
#   --fresh         recreate the build venv and PyInstaller's work folder first
#   --repackage     no venv and no PyInstaller: wrap the folder already in packaging/dist again (.deb, .tar.gz)
#
# Works from a clean checkout. Everything it makes lies in packaging/build/ (venv-<flavour>, pyi-<flavour>,
# deb-<flavour>) and packaging/dist/ (bcu-studio-<flavour>/, bcu-studio-<flavour>_<version>_<arch>.deb,
# bcu-studio-<flavour>-<version>-linux-<machine>.tar.gz), both git-ignored.
#
# Environment: PYTHON (interpreter for the build venv; default python3, which must be >= 3.10 and built with
# a shared libpython), BCU_CPU_TORCH (the CPU torch requirement; default torch==2.13.0+cpu: pip must be able
# to find it, e.g. through PIP_FIND_LINKS or PIP_EXTRA_INDEX_URL pointing at a CPU wheel index),
# BCU_PYINSTALLER (default "pyinstaller>=6.10,<7").
set -euo pipefail

FLAVOUR=cpu
SKIP_DEB=0
SKIP_TAR=0
SMOKE=0
FRESH=0
REPACKAGE=0
while [ $# -gt 0 ]; do
    case "$1" in
        --flavour) FLAVOUR="${2:-}"; shift 2 ;;
        --flavour=*) FLAVOUR="${1#*=}"; shift ;;
        --skip-deb) SKIP_DEB=1; shift ;;
        --skip-tar) SKIP_TAR=1; shift ;;
        --smoke) SMOKE=1; shift ;;
        --fresh) FRESH=1; shift ;;
        --repackage) REPACKAGE=1; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "build.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
done
case "$FLAVOUR" in
    cpu|cuda) ;;
    *) echo "build.sh: --flavour must be cpu or cuda, not '$FLAVOUR'" >&2; exit 2 ;;
esac

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$HERE")"
BUILD="$HERE/build"
DIST="$HERE/dist"
VENV="$BUILD/venv-$FLAVOUR"
WORK="$BUILD/pyi-$FLAVOUR"
NAME="bcu-studio-$FLAVOUR"
PYTHON="${PYTHON:-python3}"
CPU_TORCH="${BCU_CPU_TORCH:-torch==2.13.0+cpu}"
PYINSTALLER="${BCU_PYINSTALLER:-pyinstaller>=6.10,<7}"
mkdir -p "$BUILD" "$DIST"

T_START=$(date +%s)
T_LAST=$T_START
TIMES=()
step() { echo; echo "==> $*"; }
lap() {  # record how long the step just finished took
    local now; now=$(date +%s)
    TIMES+=("$(printf '%-28s %5ss' "$1" $((now - T_LAST)))")
    T_LAST=$now
}

# The project's runtime dependencies, straight from pyproject.toml, less torch and torchvision for the CPU build.
project_deps() {
    "$PY" - "$ROOT/pyproject.toml" "$1" <<'EOF'
import re, sys, tomllib
deps = tomllib.load(open(sys.argv[1], "rb"))["project"]["dependencies"]
drop = {"torch", "torchvision"} if sys.argv[2] == "cpu" else set()
for dep in deps:
    name = re.split(r"[<>=!~;\[ ]", dep, maxsplit=1)[0].strip().lower()
    if name not in drop:
        print(dep)
EOF
}

# --- 1. build venv ------------------------------------------------------------------------------------------
build_venv() {
    if [ "$FRESH" = 1 ]; then
        step "removing $VENV and $WORK (--fresh)"
        rm -rf "$VENV" "$WORK"
    fi
    if [ ! -x "$VENV/bin/python" ]; then
        step "creating the build venv $VENV with $PYTHON"
        "$PYTHON" -m venv "$VENV"
    fi
    PIP=("$PY" -m pip install --quiet --disable-pip-version-check)
    "$PY" - <<'EOF'
import sys, sysconfig
if sys.version_info < (3, 10):
    sys.exit(f"build.sh: Python >= 3.10 needed, the build venv has {sys.version.split()[0]}")
if sys.platform.startswith("linux") and not sysconfig.get_config_var("Py_ENABLE_SHARED"):
    print("build.sh: warning: this Python has no shared libpython; PyInstaller may refuse it "
          "(set PYTHON to one built with --enable-shared)", file=sys.stderr)
EOF

    if [ "$FLAVOUR" = cpu ]; then
        step "installing $CPU_TORCH (CPU only), the project's other dependencies, the project (--no-deps)"
        "${PIP[@]}" "$CPU_TORCH"
        mapfile -t DEPS < <(project_deps cpu)
        [ "${#DEPS[@]}" -gt 0 ] || { echo "build.sh: could not read the dependencies from pyproject.toml" >&2; exit 1; }
        "${PIP[@]}" "${DEPS[@]}"
        "${PIP[@]}" --no-deps --force-reinstall "$ROOT"
        if "$PY" -c "import importlib.util as u, sys; sys.exit(u.find_spec('torchvision') is None)"; then
            echo "build.sh: torchvision is installed in $VENV, but the CPU flavour ships without it:" \
                 "remove it ($PY -m pip uninstall torchvision) or use --fresh" >&2
            exit 1
        fi
        "$PY" -c "import torch, sys; sys.exit(f'build.sh: {torch.__version__} is not a CPU-only torch' if torch.version.cuda else 0)"
    else
        step "installing the project with its dependencies as they are (CUDA torch and torchvision)"
        "${PIP[@]}" "$ROOT"
        "${PIP[@]}" --no-deps --force-reinstall "$ROOT"  # the checkout as it is now, even at the same version
    fi
    step "installing PyInstaller ($PYINSTALLER)"
    "${PIP[@]}" "$PYINSTALLER"
    VERSION="$("$PY" -c 'import bcu_gui; print(bcu_gui.__version__)')"
    "$PY" -c "import torch, PyInstaller; print(f'torch {torch.__version__} (CUDA {torch.version.cuda}), PyInstaller {PyInstaller.__version__}, bcu-studio $VERSION')"
    lap "venv ($FLAVOUR)"
}

# --- 2. PyInstaller -------------------------------------------------------------------------------------------
run_pyinstaller() {
    step "PyInstaller: $DIST/$NAME"
    rm -rf "${DIST:?}/$NAME"
    # run from the build folder, so that the analysis sees the installed bcu_gui, not the checkout's
    TV=auto; [ "$FLAVOUR" = cpu ] && TV=0
    (cd "$BUILD" && BCU_FLAVOUR="$FLAVOUR" BCU_TORCHVISION="$TV" "$PY" -m PyInstaller --noconfirm --log-level WARN \
        --distpath "$DIST" --workpath "$WORK" "$HERE/bcu_studio.spec")
    [ -x "$BUNDLE/bcu-gui" ] && [ -x "$BUNDLE/bcu" ] || { echo "build.sh: PyInstaller made no $BUNDLE/bcu-gui and bcu" >&2; exit 1; }
    lap "pyinstaller"
}

BUNDLE="$DIST/$NAME"
PY="$VENV/bin/python"
if [ "$REPACKAGE" = 1 ]; then
    [ -x "$BUNDLE/bcu-gui" ] && [ -x "$PY" ] || { echo "build.sh: --repackage needs an earlier build ($BUNDLE, $VENV)" >&2; exit 1; }
    VERSION="$("$PY" -c 'import bcu_gui; print(bcu_gui.__version__)')"
else
    build_venv
    run_pyinstaller
fi

step "checking the frozen CLI"
env -i PATH=/usr/bin:/bin HOME="${HOME:-/tmp}" "$BUNDLE/bcu" --version
env -i PATH=/usr/bin:/bin HOME="${HOME:-/tmp}" "$BUNDLE/bcu" archs
lap "check cli"

if [ "$SMOKE" = 1 ]; then
    step "smoke test of the frozen app under Xvfb"
    command -v xvfb-run >/dev/null || { echo "build.sh: --smoke needs xvfb-run (apt-get install xvfb)" >&2; exit 1; }
    SMOKE_OUT="$BUILD/smoke-$FLAVOUR"
    rm -rf "$SMOKE_OUT"
    xvfb-run -a -s "-screen 0 1280x800x24" sh -c 'exec env -i PATH=/usr/bin:/bin HOME="$HOME" DISPLAY="$DISPLAY" \
        XAUTHORITY="$XAUTHORITY" LANG=C.UTF-8 QT_QPA_PLATFORM=xcb "$0" --smoke "$1"' "$BUNDLE/bcu-gui" "$SMOKE_OUT"
    ls -l "$SMOKE_OUT"
    lap "smoke"
fi

ARCH_DEB="$(dpkg --print-architecture 2>/dev/null || echo amd64)"
DEB="$DIST/${NAME}_${VERSION}_${ARCH_DEB}.deb"
TAR="$DIST/$NAME-$VERSION-linux-$(uname -m).tar.gz"

# --- 3. .tar.gz -----------------------------------------------------------------------------------------------
if [ "$SKIP_TAR" = 0 ]; then
    step "tar: $TAR"
    rm -f "$TAR"
    GZ=gzip; command -v pigz >/dev/null && GZ=pigz
    tar -C "$DIST" --owner=0 --group=0 --numeric-owner --transform "s,^$NAME,$NAME-$VERSION," \
        -I "$GZ" -cf "$TAR" "$NAME"
    lap "tar.gz"
fi

# --- 4. .deb --------------------------------------------------------------------------------------------------
if [ "$SKIP_DEB" = 0 ]; then
    step "deb: $DEB"
    command -v dpkg-deb >/dev/null || { echo "build.sh: dpkg-deb not found (Debian/Ubuntu only; or use --skip-deb)" >&2; exit 1; }
    STAGE="$BUILD/deb-$FLAVOUR"
    rm -rf "$STAGE"
    mkdir -p "$STAGE/DEBIAN" "$STAGE/opt" "$STAGE/usr/bin" "$STAGE/usr/share/applications" \
        "$STAGE/usr/share/icons/hicolor/256x256/apps" "$STAGE/usr/share/icons/hicolor/scalable/apps" \
        "$STAGE/usr/share/doc/$NAME"
    # hard links, not a copy of ~1-4 GB (falls back to copying across file systems)
    cp -al "$BUNDLE" "$STAGE/opt/bcu-studio" 2>/dev/null || cp -a "$BUNDLE" "$STAGE/opt/bcu-studio"
    for prog in bcu-gui bcu; do
        sed "s/@NAME@/$prog/g" "$HERE/linux/launcher.sh" > "$STAGE/usr/bin/$prog"
        chmod 0755 "$STAGE/usr/bin/$prog"
    done
    install -m 0644 "$HERE/linux/bcu-studio.desktop" "$STAGE/usr/share/applications/bcu-studio.desktop"
    install -m 0644 "$ROOT/resources/icons/bcu-studio.png" "$STAGE/usr/share/icons/hicolor/256x256/apps/bcu-studio.png"
    install -m 0644 "$ROOT/resources/icons/bcu-studio.svg" "$STAGE/usr/share/icons/hicolor/scalable/apps/bcu-studio.svg"
    printf 'BCU Studio %s (%s build), installed in /opt/bcu-studio.\nBuild details: /opt/bcu-studio/_internal/bcu_build.json\n' \
        "$VERSION" "$FLAVOUR" > "$STAGE/usr/share/doc/$NAME/README"
    OTHER=cpu; [ "$FLAVOUR" = cpu ] && OTHER=cuda
    if [ "$FLAVOUR" = cpu ]; then
        SUMMARY="backdoor removal for image classifiers (CPU build)"
        EXTRA=" This CPU-only build has no torchvision model zoo; the in-house CIFAR ResNets,\n PreActResNet and VGG work."
    else
        SUMMARY="backdoor removal for image classifiers (CUDA build)"
        EXTRA=" This build runs on NVIDIA GPUs (CUDA) or the CPU and includes torchvision's model zoo."
    fi
    cat > "$STAGE/DEBIAN/control" <<EOF
Package: $NAME
Version: $VERSION
Architecture: $ARCH_DEB
Maintainer: BCU Studio developers <bcu-studio@users.noreply.github.com>
Installed-Size: $(du -sk --apparent-size "$STAGE" | cut -f1)
Depends: libxcb-cursor0, libxcb-icccm4, libxcb-keysyms1, libxkbcommon-x11-0, libgl1, libegl1, libfontconfig1, libdbus-1-3
Provides: bcu-studio
Conflicts: bcu-studio, bcu-studio-$OTHER
Replaces: bcu-studio-$OTHER
Section: science
Priority: optional
Description: BCU Studio - $SUMMARY
 Removes backdoors from image classifiers with unlabelled data (BCU, Pang et al.,
 CVPR 2023): a desktop app (bcu-gui) and a command line (bcu), bundled with their
 own Python runtime and PyTorch in /opt/bcu-studio.
$(printf '%b' "$EXTRA")
EOF
    dpkg-deb -Zzstd -z3 --root-owner-group --build "$STAGE" "$DEB" >/dev/null
    rm -rf "$STAGE"
    lap "deb"
fi

# --- summary --------------------------------------------------------------------------------------------------
echo
echo "==> done: BCU Studio $VERSION, flavour $FLAVOUR"
printf '%-12s %8s  %s\n' "folder" "$(du -sh "$BUNDLE" | cut -f1)" "$BUNDLE"
if [ "$SKIP_TAR" = 0 ]; then printf '%-12s %8s  %s\n' ".tar.gz" "$(du -h "$TAR" | cut -f1)" "$TAR"; fi
if [ "$SKIP_DEB" = 0 ]; then printf '%-12s %8s  %s\n' ".deb" "$(du -h "$DEB" | cut -f1)" "$DEB"; fi
echo "elapsed:"
for t in "${TIMES[@]}"; do echo "  $t"; done
printf '  %-28s %5ss\n' "total" $(($(date +%s) - T_START))
