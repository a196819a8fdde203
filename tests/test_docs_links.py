"""Every relative link in the README and the docs leads somewhere, and the README stays short.

A link `[text](target)` or image `![alt](target)` resolves when its file exists relative to the
Markdown file that holds it and, if it ends in `#fragment` and names a Markdown file (or only
`#fragment`: the same file), a heading of that file makes that anchor under GitHub's rules.
Links with a scheme (https:, mailto:) are not followed. Code (fenced blocks, `inline spans`) is
not read for links or headings.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import unquote

ROOT = Path(__file__).resolve().parent.parent
README_MAX_LINES = 260

LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+[\"'][^)]*[\"'])?\s*\)")
HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)(?:\s+#+)?\s*$")
FENCE = re.compile(r"^ {0,3}(```|~~~)")
INLINE_CODE = re.compile(r"`+[^`]*`+")
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def markdown_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "packaging" / "README.md"]


def prose_lines(path: Path) -> list[tuple[int, str]]:
    """The file's lines outside fenced code blocks, numbered from 1."""
    lines, fenced = [], False
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if FENCE.match(line):
            fenced = not fenced
        elif not fenced:
            lines.append((number, line))
    return lines


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: link text kept, lowercase, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    text = re.sub(r"[^\w\- ]", "", text.lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """The anchors a file's headings make; a repeated heading gets -1, -2, ... as on GitHub."""
    seen: dict[str, int] = {}
    found = set()
    for _, line in prose_lines(path):
        match = HEADING.match(line)
        if not match:
            continue
        base = slug(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def broken_links(path: Path, root: Path = ROOT) -> list[str]:
    """Each link of the file that leads nowhere, as 'file:line: target (why)', paths from root."""
    broken = []
    for number, line in prose_lines(path):
        for target in LINK.findall(INLINE_CODE.sub("", line)):
            if SCHEME.match(target):
                continue
            file_part, _, fragment = unquote(target).partition("#")
            linked = path.parent / file_part if file_part else path
            where = f"{os.path.relpath(path, root)}:{number}: {target}"
            if not linked.exists():
                broken.append(f"{where} (no file {os.path.relpath(linked, root)})")
            elif fragment and linked.suffix == ".md" and fragment not in anchors(linked):
                broken.append(f"{where} (no heading in {linked.name} makes #{fragment})")
    return broken


def test_every_relative_link_resolves():
    files = markdown_files()
    assert len(files) > 2, "no docs/*.md found"
    broken = [problem for path in files for problem in broken_links(path)]
    assert not broken, "links that lead nowhere:\n" + "\n".join(broken)


def test_the_readme_is_short():
    length = len((ROOT / "README.md").read_text(encoding="utf-8").splitlines())
    assert length <= README_MAX_LINES, f"README.md has {length} lines; move detail into docs/"


def test_slugs_follow_github():
    assert (
        slug("Speech on the GPU, and when torch does not see it")
        == "speech-on-the-gpu-and-when-torch-does-not-see-it"
    )
    assert slug("From source: macOS (Apple silicon)") == "from-source-macos-apple-silicon"
    assert slug("The `omnidesk doctor` output") == "the-omnidesk-doctor-output"


def test_the_checker_finds_a_missing_file_and_a_missing_anchor(tmp_path):
    (tmp_path / "other.md").write_text("# Title\n\n## Part\n\n## Part\n\n```\n# Not a heading\n```\n")
    page = tmp_path / "page.md"
    page.write_text(
        "# Page\n\n"
        "[fine](other.md#part-1) [fine too](#page) ![image](other.md) [web](https://example.com)\n"
        "[gone](missing.md) [no anchor](other.md#part-2) [code](other.md#not-a-heading) [self](#nowhere)\n"
        "`[in code](missing.md)`\n"
    )
    problems = broken_links(page, root=tmp_path)
    assert [problem.split(": ")[1].split(" ")[0] for problem in problems] == [
        "missing.md",
        "other.md#part-2",
        "other.md#not-a-heading",
        "#nowhere",
    ], problems
