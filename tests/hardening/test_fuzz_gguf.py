"""GGUF checks on damaged files: ModelFileError with a message naming the file, never another exception."""

from __future__ import annotations

import tempfile
from pathlib import Path

import gguf
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from model.errors import ModelFileError
from model.files.bundle import Bundle
from model.files.thinker_gguf import check_mmproj_gguf, check_thinker_gguf

EXAMPLES = 150
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module", params=["thinker", "mmproj"])
def original(request, tiny_bundle: Bundle) -> tuple[bytes, int]:
    """One of the bundle's GGUF files, and where its tensor data begins (the end of its header)."""
    path = tiny_bundle.file(request.param)
    header_end = min(int(t.data_offset) for t in gguf.GGUFReader(str(path), "r").tensors)
    return path.read_bytes(), header_end


@pytest.fixture(scope="module")
def folder():
    with tempfile.TemporaryDirectory() as name:
        yield Path(name)


def check_both(path: Path, content: bytes) -> None:
    """Both checks on `content`: each passes or raises ModelFileError about `path`, with advice."""
    path.write_bytes(content)
    for check in (check_thinker_gguf, check_mmproj_gguf):
        try:
            check(path)
        except ModelFileError as exc:
            assert exc.path == path and exc.problem and exc.advice
            assert str(exc).startswith(str(path))


class TestDamagedGguf:
    @FUZZ
    @given(tail=st.binary(max_size=4096))
    def test_any_bytes_after_the_magic(self, folder, tail):
        check_both(folder / "random.gguf", b"GGUF" + tail)

    @FUZZ
    @given(data=st.data())
    def test_bytes_of_the_header_changed(self, folder, original, data):
        content, header_end = original
        damaged = bytearray(content)
        # Counts and lengths at the start decide how the rest is read: they are hit more often.
        places = st.integers(4, 31) | st.integers(4, header_end - 1)
        for _ in range(data.draw(st.integers(1, 8))):
            damaged[data.draw(places)] = data.draw(st.integers(0, 255))
        check_both(folder / "changed.gguf", bytes(damaged))

    @FUZZ
    @given(fraction=st.floats(0, 1, exclude_max=True))
    def test_cut_short_anywhere(self, folder, original, fraction):
        content, _ = original
        check_both(folder / "truncated.gguf", content[: int(len(content) * fraction)])


def test_the_intact_files_pass(tiny_bundle: Bundle):
    assert check_thinker_gguf(tiny_bundle.file("thinker")).n_vocab > 0
    check_mmproj_gguf(tiny_bundle.file("mmproj"))
