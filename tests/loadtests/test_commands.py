"""Every command a load test's docstring or loadtests/README.md shows starts, run from the repository's root
as written there (``--help`` only: nothing is measured)."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
COMMAND = re.compile(r"python (-m [\w.]+|loadtests/\w+\.py)")


def documented_commands() -> list[tuple[str, list[str]]]:
    texts = {"README.md": (ROOT / "loadtests" / "README.md").read_text()}
    for path in sorted((ROOT / "loadtests").glob("*.py")):
        texts[path.name] = ast.get_docstring(ast.parse(path.read_text())) or ""
    return [
        (f"{name}: python {found}", found.split())
        for name, text in texts.items()
        for found in sorted(set(COMMAND.findall(text)))
    ]


COMMANDS = documented_commands()


def test_the_commands_are_found() -> None:
    assert len(COMMANDS) >= 13


@pytest.mark.parametrize(("shown", "argv"), COMMANDS, ids=[shown for shown, _ in COMMANDS])
def test_a_documented_command_starts(shown: str, argv: list[str]) -> None:
    done = subprocess.run(
        [sys.executable, *argv, "--help"], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, f"{shown}: {done.stderr[-800:]}"
    assert "usage:" in done.stdout
