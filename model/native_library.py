"""C sources of our own, built once per machine by its C compiler and loaded with ctypes.

Some work has no fast kernel in torch (the vocoder's anti-aliased activation: token2wav/fused_snake.c).
A prebuilt binary would be tied to one platform and the oldest CPU it must run on; the source ships
with the package instead, and the C compiler of the machine (the one that built llama.cpp) builds it
at first use for the CPU at hand (`-march=native`), into the user's cache folder. A build is named by
a hash of the source, the compiler and the CPU, so an edited source, another compiler or a home folder
moved to another machine gets a build of its own. Builds land by renaming a finished file, so
processes building at once never load half a library.

Where no compiler works (most Windows machines, a Mac without Xcode's command line tools), `load`
raises NativeBuildError with what to install; callers then keep torch's slower path.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import platformdirs

from model.errors import OmnideskError
from model.hardware import cpu_name

FLAGS = ("-O3", "-std=c11", "-fPIC", "-shared", "-pthread")
TUNING = ("-march=native",)  # dropped where the compiler refuses it
BUILD_TIMEOUT_S = 120
INSTALL_ADVICE = "install a C compiler (gcc or clang; on a Mac, Xcode's command line tools)"


class NativeBuildError(OmnideskError):
    """No library could be built from a C source on this machine; the message says what to install."""


def cache_dir() -> Path:
    return Path(platformdirs.user_cache_dir("Omnidesk", appauthor=False)) / "native"


@functools.cache
def load(source: Path) -> ctypes.CDLL:
    """The library built from `source` for this machine (built now if it is not in the cache)."""
    compiler = _compiler()
    identity = _compiler_identity(compiler)
    digest = hashlib.sha256()
    for part in (source.read_bytes(), identity.encode(), " ".join(FLAGS + TUNING).encode(), _cpu_identity()):
        digest.update(part)
        digest.update(b"\0")
    target = cache_dir() / f"{source.stem}-{digest.hexdigest()[:16]}{_suffix()}"
    if not target.exists():
        _build(compiler, source, target)
    try:
        return ctypes.CDLL(str(target))
    except OSError as exc:
        why = f"{target} was built but does not load ({exc}); delete it to build it again"
        raise NativeBuildError(why) from exc


def _compiler() -> list[str]:
    """The C compiler's command: $CC, else cc, gcc or clang on the PATH."""
    if os.environ.get("CC"):
        return shlex.split(os.environ["CC"])
    if sys.platform == "win32":
        raise NativeBuildError(f"no C compiler is used on Windows unless CC names one: {INSTALL_ADVICE}")
    if sys.platform == "darwin" and not _mac_tools_installed():
        # /usr/bin/cc without the tools would open macOS's installer dialog instead of compiling
        raise NativeBuildError(f"Xcode's command line tools are not installed: {INSTALL_ADVICE}")
    for name in ("cc", "gcc", "clang"):
        found = shutil.which(name)
        if found:
            return [found]
    raise NativeBuildError(f"no C compiler found: {INSTALL_ADVICE}")


def _mac_tools_installed() -> bool:
    try:
        return subprocess.run(["xcode-select", "-p"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def _compiler_identity(compiler: list[str]) -> str:
    try:
        done = subprocess.run([*compiler, "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as exc:
        why = f"the C compiler {compiler[0]} does not run ({exc}): {INSTALL_ADVICE}"
        raise NativeBuildError(why) from exc
    if done.returncode != 0:
        raise NativeBuildError(f"the C compiler {compiler[0]} does not run: {INSTALL_ADVICE}")
    return " ".join(compiler) + "\n" + done.stdout


def _cpu_identity() -> bytes:
    """The CPU's name and, on Linux, its instruction sets: what `-march=native` builds for."""
    identity = f"{platform.system()} {platform.machine()} {cpu_name()}"
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        lines = []
    flags = next((line for line in lines if line.startswith(("flags", "Features"))), "")
    return f"{identity}\n{flags}".encode()


def _suffix() -> str:
    return {"darwin": ".dylib", "win32": ".dll"}.get(sys.platform, ".so")


def _build(compiler: list[str], source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, partial = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".partial")
    os.close(handle)
    try:
        errors = ""
        for tuning in (TUNING, ()):
            command = [*compiler, *FLAGS, *tuning, str(source), "-o", partial]
            try:
                done = subprocess.run(command, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S)
            except (OSError, subprocess.SubprocessError) as exc:
                errors = str(exc)
                continue
            if done.returncode == 0:
                os.replace(partial, target)
                return
            said = done.stderr.strip()
            errors = said.splitlines()[-1] if said else f"exit status {done.returncode}"
        raise NativeBuildError(f"{compiler[0]} could not build {source.name} ({errors}): {INSTALL_ADVICE}")
    finally:
        Path(partial).unlink(missing_ok=True)
