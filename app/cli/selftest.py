"""`omnidesk --selftest`: a headless check that an installed Omnidesk works, for installers and CI.

In order: Qt's platform plugin loads and starts an application (no window is
shown), the history can be read and its folder written, the model bundle opens,
and the Thinker answers one short text turn (no speech, no speakers). Success is
one line on stdout with what ran and how long it took (perf_counter seconds
since the check began); a failure is an OmnideskError naming the stage and the
cause, which the command line prints as one line before exiting with status 1.
Each stage imports what it needs, so a library missing from a build is reported
as the failure of the stage that needs it.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from model.errors import OmnideskError

if TYPE_CHECKING:
    from model.files.bundle import Bundle

QUESTION = "Say hello."
MAX_TOKENS = 8
CONTEXT = 1024  # tokens: the system prompt, the question and a short reply

T = TypeVar("T")


def run(models: Path | None) -> int:
    """Run every check; print one line and return 0, or raise OmnideskError saying which check failed."""
    started = time.perf_counter()
    platform = _stage("Qt", check_qt)
    history = _stage("history", check_saved_history)
    bundle = _stage("model bundle", lambda: open_bundle(models))
    tokens, backend, reason = _stage("text turn", lambda: answer_one_turn(bundle))
    print(
        f"omnidesk selftest ok: Qt {platform}, history {history}, llama.cpp {backend}, "
        f"bundle {bundle.root}, {tokens} reply tokens ({reason}), {time.perf_counter() - started:.1f} s"
    )
    return 0


def check_qt() -> str:
    """Load the platform plugin, then start a QApplication on it; returns the platform's name."""
    from PySide6.QtCore import QPluginLoader
    from PySide6.QtWidgets import QApplication

    from app.system.qt_platform import platform_name, platform_plugin, require_display

    if QApplication.instance() is not None:
        return QApplication.platformName()
    name = platform_name()
    plugin = platform_plugin(name)
    loader = QPluginLoader(str(plugin))
    if not loader.load():
        raise OmnideskError(
            f"Qt's {name} platform plugin does not load ({loader.errorString()}): "
            "install the system libraries it names (see docs/install.md)"
        )
    require_display(name)
    app = QApplication([sys.argv[0], "-platform", name])
    app.setApplicationName("Omnidesk")
    app.setOrganizationName("Omnidesk")
    return app.platformName()


def check_saved_history() -> Path:
    """The history the window would open can be read and its folder written; returns its path."""
    from app.history.file import check_history
    from app.history.store import default_path

    path = default_path()
    check_history(path)
    return path


def open_bundle(models: Path | None) -> Bundle:
    """Open and verify `models`, or the bundle the window would open if it is None."""
    from model.files.bundle import Bundle
    from model.files.store import resolve

    return Bundle.open(resolve(str(models)) if models is not None else remembered_bundle())


def remembered_bundle() -> Path:
    """The bundle the window would open: the one it remembers, else the first complete one stored."""
    from PySide6.QtCore import QSettings

    from app.window.preferences import Preferences
    from model.files.store import list_bundles, models_dir

    remembered = Preferences.load(QSettings("Omnidesk", "Omnidesk")).models_folder
    if remembered:
        return Path(remembered)
    complete = [b.path for b in list_bundles() if not b.problem]
    if not complete:
        raise OmnideskError(
            f"no model bundle in {models_dir()}: pass --models BUNDLE, or download one "
            "(omnidesk models download)"
        )
    return complete[0]


def answer_one_turn(bundle: Bundle) -> tuple[int, str, str]:
    """Answer QUESTION in text: (reply tokens, llama.cpp backend, finish reason)."""
    from model.hardware import llama_backend
    from model.pipeline import Conversation, TurnFinished, TurnOptions
    from model.sampling import SamplingOptions
    from model.thinker_types import ThinkerOptions

    conversation = Conversation.planned(bundle, thinker_options=ThinkerOptions(n_ctx=CONTEXT))
    try:
        options = TurnOptions(speak=False, max_tokens=MAX_TOKENS, sampling=SamplingOptions(greedy=True))
        finished = list(conversation.turn(QUESTION, options))[-1]
    finally:
        conversation.close()
    assert isinstance(finished, TurnFinished), "a turn ends with TurnFinished"
    if finished.reason not in ("end", "length") or not finished.reply_ids:
        raise OmnideskError(f"the Thinker gave no reply ({finished.reason}: {finished.error or 'no tokens'})")
    return len(finished.reply_ids), llama_backend(), finished.reason


def _stage(name: str, check: Callable[[], T]) -> T:
    """Run one check; any failure becomes an OmnideskError that names the stage."""
    try:
        return check()
    except OmnideskError as exc:
        raise OmnideskError(f"selftest failed at {name}: {exc}") from None
    except Exception as exc:  # a broken installation fails in any way: a missing library, a bad build
        raise OmnideskError(f"selftest failed at {name}: {type(exc).__name__}: {exc}") from exc
