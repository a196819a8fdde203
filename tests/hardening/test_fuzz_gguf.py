"""GGUF checks on damaged files: ModelFileError with a message naming the file, never another exception."""

from __future__ import annotations

import resource
import tempfile
from pathlib import Path

import gguf
import pytest
from hypothesis import given
from hypothesis import strategies as st

from model.errors import ModelFileError
from model.files.bundle import Bundle
from model.files.thinker_gguf import check_mmproj_gguf, check_thinker_gguf
from tests.hardening.fuzzing import fuzz

EXAMPLES = 150
FUZZ = fuzz(EXAMPLES)
MEMORY_HEADROOM = 2 * 2**30  # bytes of address space the checks may take


@pytest.fixture(scope="module", params=["thinker", "mmproj"])
def original(request, tiny_bundle: Bundle) -> tuple[bytes, int]:
    """One of the bundle's GGUF files, and where its tensor data begins (the end of its header)."""
    path = tiny_bundle.file(request.param)
    header_end = min(int(t.data_offset) for t in gguf.GGUFReader(str(path), "r").tensors)
    return path.read_bytes(), header_end


@pytest.fixture(scope="module", autouse=True)
def memory_cap():
    """Address space capped at 2 GiB above its size now: a reader that runs away with memory meets a
    MemoryError (which the check reports, and check_both refuses) instead of the machine's OOM killer."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    size = int(Path("/proc/self/status").read_text().split("VmSize:")[1].split()[0]) * 1024
    resource.setrlimit(resource.RLIMIT_AS, (size + MEMORY_HEADROOM, hard))
    yield
    resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


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
            assert "MemoryError" not in exc.problem, exc.problem
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


class TestFoundByFuzzing:
    def test_a_huge_array_of_numbers(self, folder, tiny_bundle):
        """The stock reader read such an array on past the end of the file, one empty value at a time,
        taking memory without bound (23 GB before the OOM killer stopped it)."""
        content = bytearray(tiny_bundle.file("thinker").read_bytes())
        key = b"rope.dimension_sections"  # an array of int32
        length = content.find(key) + len(key) + 8  # after the value type and the item type: a uint64
        content[length + 5] = 0x16  # about 2**45 items
        path = folder / "long-array.gguf"
        path.write_bytes(bytes(content))
        with pytest.raises(ModelFileError, match=r"damaged or truncated GGUF \(EOFError\)"):
            check_thinker_gguf(path)


def test_the_intact_files_pass(tiny_bundle: Bundle):
    assert check_thinker_gguf(tiny_bundle.file("thinker")).n_vocab > 0
    check_mmproj_gguf(tiny_bundle.file("mmproj"))
