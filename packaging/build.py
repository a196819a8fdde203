"""Build Omnidesk's one-folder app for the platform this runs on.

    python packaging/build.py [--clean]

Writes dist/omnidesk/ (run dist/omnidesk/omnidesk; on macOS also dist/Omnidesk.app),
using build/ for PyInstaller's work files; --clean starts from nothing instead of
reusing them. On Linux the folder also gets the desktop entry, its icons and
install-desktop-entry.sh, which adds the app to the menu. Run it with the Python of
the environment Omnidesk is installed in (packaging/install.sh), with the packaging
extra: pip install -e ".[packaging]". Ends with the app's folder and its size on disk.
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "packaging" / "omnidesk.spec"
DIST = ROOT / "dist"
WORK = ROOT / "build"
APP = DIST / "omnidesk"
ICONS = ROOT / "assets" / "icons"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clean", action="store_true", help="rebuild from nothing, not from build/")
    args = parser.parse_args(argv)
    for needed in ("PyInstaller", "app", "llama_cpp"):
        if importlib.util.find_spec(needed) is None:
            print(
                f"build.py: {needed} is not importable from {sys.executable}: run it with the Python of "
                'the environment Omnidesk is installed in, after pip install -e ".[packaging]"',
                file=sys.stderr,
            )
            return 1
    command = [sys.executable, "-m", "PyInstaller", str(SPEC), "--noconfirm", "--log-level", "WARN"]
    command += ["--distpath", str(DIST), "--workpath", str(WORK)]
    if args.clean:
        command.append("--clean")
    status = subprocess.run(command, cwd=ROOT).returncode
    if status != 0:
        print(f"build.py: PyInstaller failed (status {status}); its messages are above", file=sys.stderr)
        return status
    if sys.platform.startswith("linux"):
        for name in ("omnidesk.desktop", "install-desktop-entry.sh"):
            shutil.copy2(ROOT / "packaging" / "linux" / name, APP / name)
        shutil.copytree(
            ICONS, APP / "icons", ignore=shutil.ignore_patterns("*.ico", "*.icns"), dirs_exist_ok=True
        )
    size = sum(f.stat().st_size for f in APP.rglob("*") if f.is_file() and not f.is_symlink())
    print(f"built {APP} ({size / 2**20:.0f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
