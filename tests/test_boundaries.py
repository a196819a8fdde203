"""Boundaries between the rooms: model/ never needs Qt."""

from __future__ import annotations

import subprocess
import sys

IMPORT_ALL_OF_MODEL_WITHOUT_QT = """
import importlib, pkgutil, sys
sys.modules["PySide6"] = None  # any import of PySide6 now fails
import model
names = [m.name for m in pkgutil.walk_packages(model.__path__, "model.")]
for name in names:
    importlib.import_module(name)
assert not any(m.startswith("PySide6") for m in sys.modules if sys.modules[m] is not None)
print(len(names))
"""


def test_model_imports_without_pyside6():
    result = subprocess.run(
        [sys.executable, "-c", IMPORT_ALL_OF_MODEL_WITHOUT_QT], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert int(result.stdout.strip()) >= 8
