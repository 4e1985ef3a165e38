"""The configuration reference is generated from the settings' declarations, and the repository's copy is it."""

from __future__ import annotations

from pathlib import Path

from clickedge.cli.reference import USERS, configuration_reference
from common import settings

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def test_docs_configuration_is_the_generated_reference() -> None:
    assert DOC.read_text() == configuration_reference(), "docs/configuration.md is stale: run `make docs`"


def test_every_setting_of_every_command_is_in_it() -> None:
    text = configuration_reference()
    for command, cls in USERS:
        for _, spec in settings.specs(cls):
            row = next(line for line in text.splitlines() if line.startswith(f"| `{spec.env}` |"))
            assert f"`{spec.flag}`" in row and command in row.split("|")[3], (command, spec.env)
