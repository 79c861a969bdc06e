"""The docs cannot fall behind the CLI: every option of every stage's --help is documented.

Read from the command objects Typer builds (its vendored Click; no subprocess, no torch): each long option must be
named in docs/cli.md or in the stage's own doc, as a whole word (``--mia`` is not satisfied by
``--mia-models``). A new option without a line in the docs fails here.
"""

from __future__ import annotations

import re
from pathlib import Path

from typing import Any

import pytest
import typer

from medcondense.cli import app

DOCS = Path(__file__).resolve().parents[1] / "docs"

#: the stage's own doc (docs/cli.md is searched for every stage)
STAGE_DOCS = {
    "ingest": "ingest.md",
    "distill": "distill.md",
    "evaluate": "evaluate.md",
    "score": "score.md",
    "export": "export.md",
    "merge": "sites.md",
}


def _stage_commands() -> dict[str, Any]:
    return dict(typer.main.get_command(app).commands)


def _long_options(command: Any) -> list[str]:
    """Every ``--name`` a user can type for ``command`` (both halves of ``--x/--no-x``), but --help."""
    names = []
    for param in command.params:
        if param.param_type_name == "option":
            names += [o for o in (*param.opts, *param.secondary_opts) if o.startswith("--")]
    return [n for n in names if n != "--help"]


def _named(option: str, text: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", text) is not None


def _negations(command: Any) -> dict[str, str]:
    """``--no-x`` -> ``--x`` for the ``--x/--no-x`` switches (docs/cli.md states the rule once)."""
    pairs = {}
    for param in command.params:
        if param.param_type_name == "option":
            for negative in param.secondary_opts:
                pairs[negative] = next(o for o in param.opts if o.startswith("--"))
    return pairs


def test_every_stage_has_a_doc() -> None:
    assert set(_stage_commands()) == set(STAGE_DOCS), "a new stage needs a doc in STAGE_DOCS"


@pytest.mark.parametrize("stage", sorted(STAGE_DOCS))
def test_every_option_of_the_stage_is_documented(stage: str) -> None:
    command = _stage_commands()[stage]
    cli_doc = (DOCS / "cli.md").read_text(encoding="utf-8")
    stage_doc = (DOCS / STAGE_DOCS[stage]).read_text(encoding="utf-8")
    options = _long_options(command)
    assert options, f"{stage}: no options found (introspection broke?)"
    # a --no-x is documented by its --x and the rule in docs/cli.md (which the assert below keeps)
    assert "`--x/--no-x`" in cli_doc
    negations = _negations(command)
    options = [negations.get(o, o) for o in options]
    missing = [o for o in dict.fromkeys(options) if not (_named(o, cli_doc) or _named(o, stage_doc))]
    assert not missing, f"{stage}: options in --help but in neither docs/cli.md nor docs/{STAGE_DOCS[stage]}: {missing}"


@pytest.mark.parametrize("stage", sorted(STAGE_DOCS))
def test_cli_md_has_a_section_per_stage_naming_its_own_options(stage: str) -> None:
    """docs/cli.md's per-stage section lists the options the issues added (not only the stage doc)."""
    cli_doc = (DOCS / "cli.md").read_text(encoding="utf-8")
    match = re.search(rf"^### `{stage}`.*?(?=^### |^## |\Z)", cli_doc, re.S | re.M)
    assert match, f"docs/cli.md has no '### `{stage}`' section"
    section = match.group(0)
    assert f"docs/{STAGE_DOCS[stage]}" in section or f"({STAGE_DOCS[stage]})" in section, \
        f"the {stage} section links to its stage doc"
    named = [o for o in _long_options(_stage_commands()[stage]) if _named(o, section)]
    assert named, f"the {stage} section names none of the stage's options"


def test_options_named_in_cli_md_exist() -> None:
    """The reverse: an option docs/cli.md names in a stage's section is one that stage has."""
    cli_doc = (DOCS / "cli.md").read_text(encoding="utf-8")
    commands = _stage_commands()
    for stage in STAGE_DOCS:
        match = re.search(rf"^### `{stage}`.*?(?=^### |^## |\Z)", cli_doc, re.S | re.M)
        if not match:
            continue
        real = set(_long_options(commands[stage]))
        # only the bullets' leading option names (prose may mention other stages' options)
        named = re.findall(r"^\* `(--[a-z0-9-]+)", match.group(0), re.M)
        stale = [o for o in named if o not in real]
        assert not stale, f"docs/cli.md's {stage} section lists options {stage} does not have: {stale}"
