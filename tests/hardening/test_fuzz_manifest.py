"""Bundle.open on damaged manifests: it opens a well-formed bundle or raises ModelFileError, nothing else."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from model.errors import ModelFileError
from model.files.bundle import MANIFEST, Bundle
from tests.hardening.fuzzing import fuzz

EXAMPLES = 300
FUZZ = fuzz(EXAMPLES)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


@pytest.fixture(scope="module")
def bundle_copy(tiny_bundle: Bundle, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the tiny bundle whose manifest each example overwrites."""
    return Path(shutil.copytree(tiny_bundle.root, tmp_path_factory.mktemp("fuzz") / "bundle"))


@pytest.fixture(scope="module")
def manifest(tiny_bundle: Bundle) -> dict[str, Any]:
    return json.loads((tiny_bundle.root / MANIFEST).read_text(encoding="utf-8"))


def open_damaged(root: Path, text: str | bytes) -> Bundle | None:
    """Bundle.open on `text` as the manifest: the Bundle, or None after a ModelFileError naming the
    manifest or, when the manifest now describes a file otherwise, that file of the bundle."""
    path = root / MANIFEST
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass"))
    try:
        bundle = Bundle.open(root)
    except ModelFileError as exc:
        assert exc.path.parent == root and str(exc).startswith(str(exc.path)) and exc.advice
        return None
    assert_well_formed(bundle)
    return bundle


def assert_well_formed(bundle: Bundle) -> None:
    """What the rest of Omnidesk relies on once a bundle has opened."""
    assert isinstance(bundle.config, dict) and isinstance(bundle.thinker_dtype, str)
    for entry in bundle.files.values():
        assert isinstance(entry.path, str) and isinstance(entry.size, int) and isinstance(entry.sha256, str)
    for table in (bundle.tokens, bundle.codec, bundle.voices):
        assert all(isinstance(k, str) and isinstance(v, int) for k, v in table.items())


def mutate(manifest: dict[str, Any], data: st.DataObject) -> dict[str, Any]:
    """The manifest with one value replaced by any JSON value, or one key removed, at any depth."""
    damaged = json.loads(json.dumps(manifest))
    node: Any = damaged
    while True:
        key = data.draw(st.sampled_from(sorted(node)))
        if isinstance(node[key], dict) and node[key] and data.draw(st.booleans()):
            node = node[key]
            continue
        if data.draw(st.booleans()):
            del node[key]
        else:
            node[key] = data.draw(json_values)
        return damaged


class TestDamagedManifest:
    @FUZZ
    @given(data=st.data())
    def test_one_value_changed_or_removed(self, bundle_copy, manifest, data):
        open_damaged(bundle_copy, json.dumps(mutate(manifest, data)))

    @FUZZ
    @given(content=st.binary(max_size=2000))
    def test_any_bytes(self, bundle_copy, content):
        assert open_damaged(bundle_copy, content) is None

    @FUZZ
    @given(value=json_values)
    def test_any_json(self, bundle_copy, value):
        assert open_damaged(bundle_copy, json.dumps(value)) is None

    def test_the_intact_manifest_opens(self, bundle_copy, manifest):
        assert open_damaged(bundle_copy, json.dumps(manifest)) is not None


def replaced(manifest: dict[str, Any], *path_and_value: Any) -> str:
    damaged = json.loads(json.dumps(manifest))
    *path, key, value = path_and_value
    node = damaged
    for step in path:
        node = node[step]
    node[key] = value
    return json.dumps(damaged)


class TestFoundByFuzzing:
    """Manifests that once escaped as other exceptions, or opened as a bundle nothing could use."""

    @pytest.mark.parametrize(
        ("change", "message"),
        [
            (("config", None), "config is NoneType, not an object"),
            (("files", "thinker", "path", 7), "is not a name, a size and a sha256"),
            (("files", "thinker", "size", "12"), "is not a name, a size and a sha256"),
            (("files", "thinker", "path", "../../etc/passwd"), "is not a file name in the bundle folder"),
            (("files", "thinker", "path", "thinker\0.gguf"), "is not a file name in the bundle folder"),
            (("files", "thinker", "path", ""), "is not a file name in the bundle folder"),
        ],
    )
    def test_wrong_file_entries_and_config(self, bundle_copy, manifest, change, message):
        with pytest.raises(ModelFileError, match="unreadable bundle manifest") as caught:
            Bundle.open(write(bundle_copy, replaced(manifest, *change)))
        assert message in str(caught.value)

    def test_an_integer_too_large_for_an_int(self, bundle_copy, manifest):
        text = replaced(manifest, "tokens", "im_start", 0).replace('"im_start": 0', '"im_start": 1e400')
        with pytest.raises(ModelFileError, match="cannot convert float infinity to integer"):
            Bundle.open(write(bundle_copy, text))

    def test_json_nested_too_deep(self, bundle_copy):
        with pytest.raises(ModelFileError, match="maximum recursion depth"):
            Bundle.open(write(bundle_copy, "[" * 100_000))


def write(root: Path, text: str) -> Path:
    (root / MANIFEST).write_text(text, encoding="utf-8", errors="surrogatepass")
    return root
