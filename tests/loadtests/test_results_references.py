"""Comments and docstrings name a section of loadtests/README.md for a measured choice instead of repeating
its figure; each section they name must be there."""

from __future__ import annotations

import os
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SKIP = {".venv", ".git", ".mypy_cache", ".ruff_cache", ".pytest_cache", "node_modules"}
REFERENCE = re.compile(r'loadtests/README\.md, section "([^"]+)"')
# A reference may be wrapped over lines of a comment: join them, dropping each line's indent and '#'.
WRAP = re.compile(r"\n[ \t]*(?:#[ \t]*)?")


def references() -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for folder, subfolders, files in os.walk(ROOT):
        subfolders[:] = [name for name in subfolders if name not in SKIP and not name.endswith(".egg-info")]
        for path in (Path(folder) / name for name in files):
            if path.suffix in {".py", ".toml", ".yaml", ".yml", ".md"}:
                for section in REFERENCE.findall(WRAP.sub(" ", path.read_text())):
                    found.setdefault(section, set()).add(str(path.relative_to(ROOT)))
    return found


def test_every_section_a_comment_names_is_in_loadtests_readme() -> None:
    readme = (ROOT / "loadtests" / "README.md").read_text().splitlines()
    sections = {line[3:].strip() for line in readme if line.startswith("## ")}
    named = references()
    assert len(named) >= 4, named
    missing = {section: files for section, files in named.items() if section not in sections}
    assert not missing, missing
