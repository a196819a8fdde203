"""Building our C sources with the machine's compiler (model/native_library.py)."""

from __future__ import annotations

import ctypes
from pathlib import Path

import pytest

from model import native_library
from model.native_library import NativeBuildError, cache_dir, load

ANSWER = "int omnidesk_answer(void) { return %d; }\n"


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    native_library.load.cache_clear()
    yield
    native_library.load.cache_clear()


def _source(folder: Path, answer: int) -> Path:
    path = folder / "answer.c"
    path.write_text(ANSWER % answer)
    return path


def _answer(library: ctypes.CDLL) -> int:
    function = library.omnidesk_answer
    function.restype = ctypes.c_int
    return int(function())


def test_a_source_is_built_once_and_loaded_from_the_cache(tmp_path):
    source = _source(tmp_path, 42)
    assert _answer(load(source)) == 42
    built = sorted(cache_dir().iterdir())
    assert len(built) == 1 and built[0].name.startswith("answer-")
    stamp = built[0].stat().st_mtime_ns
    native_library.load.cache_clear()  # a new process
    assert _answer(load(source)) == 42
    assert sorted(cache_dir().iterdir()) == built and built[0].stat().st_mtime_ns == stamp


def test_an_edited_source_gets_a_build_of_its_own(tmp_path):
    first = tmp_path / "a"
    second = tmp_path / "b"
    first.mkdir()
    second.mkdir()
    assert _answer(load(_source(first, 1))) == 1
    assert _answer(load(_source(second, 2))) == 2
    assert len(list(cache_dir().iterdir())) == 2


def test_no_compiler_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    with pytest.raises(NativeBuildError, match="install a C compiler"):
        load(_source(tmp_path, 3))


def test_a_source_that_does_not_compile_says_why_and_leaves_nothing_half_built(tmp_path):
    source = tmp_path / "broken.c"
    source.write_text("int omnidesk_answer(void) { return }\n")
    with pytest.raises(NativeBuildError, match=r"could not build broken\.c \(.*\): install a C compiler"):
        load(source)
    assert list(cache_dir().iterdir()) == []
