"""The generated documentation equals what docs/make_steps.py makes from the code, so it cannot drift."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def make_steps():
    spec = importlib.util.spec_from_file_location("make_steps", REPO / "docs" / "make_steps.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_steps_reference_matches_the_step_dataclasses():
    generated = make_steps().render_steps()
    assert (REPO / "docs" / "steps.md").read_text() == generated, (
        "docs/steps.md differs from the step dataclasses; regenerate it: python docs/make_steps.py > docs/steps.md"
    )


def test_steps_reference_covers_every_registered_step_and_field():
    module = make_steps()
    text = module.render_steps()
    for name, cls in module.registered_steps().items():
        section = text.split(f"## `{name}`\n", 1)[1].split("\n## ", 1)[0]
        for field in module.own_fields_first(cls):
            assert f"| `{field.name}` | " in section, f"step {name}: field {field.name} missing"


def test_readme_lists_match_the_recipes_and_steps():
    module = make_steps()
    readme = (REPO / "README.md").read_text()
    assert readme == module.readme_with_lists(readme), (
        "the README's recipe/step lists differ from netshrink/recipes/*.yaml and the step docstrings; "
        "regenerate them: python docs/make_steps.py --update-readme"
    )


def test_field_docs_come_from_comments_and_docstrings():
    module = make_steps()
    assert module._trailing_comment('x: str = "#a"  # why') == "why"
    assert module._trailing_comment('x: str = "#a"') == ""
    doc = "Summary naming `bits`.\n\n`bits` sets the width. other: no. mode: how it runs."
    assert module.docstring_sentence(doc, "bits") == "`bits` sets the width."
    assert module.docstring_sentence(doc, "mode") == "mode: how it runs."
    assert module.docstring_sentence(doc, "missing") == ""


def test_user_docs_say_nothing_about_how_the_work_was_organised():
    # Character classes keep this line itself out of a plain grep of the repository for these words.
    pattern = re.compile(
        r"\bs[e]ssion[- ]?\d|\bi[s]sue \d|\bthe i[s]sue\b|t[a]rget met|n[o]t met|a[c]ceptance", re.IGNORECASE
    )
    paths = [
        REPO / "README.md",
        REPO / "DEVELOPERS.md",
        *(REPO / "docs").rglob("*.md"),
        *(REPO / "benchmarks").rglob("*.md"),
        *(REPO / "benchmarks").rglob("*.json"),
        *(REPO / "benchmarks").rglob("*.py"),
    ]
    hits = [
        f"{path.relative_to(REPO)}:{number}: {line.strip()}"
        for path in paths
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert not hits, "development history in user-facing files (write it as a finding, or drop it):\n" + "\n".join(hits)


def test_a_new_step_is_documented_from_its_dataclass():
    from dataclasses import dataclass, field

    from netshrink.step import LayerStep

    @dataclass(frozen=True)
    class Quantize(LayerStep):
        """Round weights to a grid.

        `mode` picks the grid: uniform or log.
        """

        #: Bits per weight.
        bits: int = 4
        mode: str = "uniform"
        scales: dict[str, float] = field(default_factory=dict)  # per-layer scale overrides

    section = make_steps().render_step("quantize", Quantize)
    assert section.startswith("## `quantize`\n\nRound weights to a grid.\n")
    assert "| `bits` | `int` | `4` | Bits per weight. |" in section
    assert '| `mode` | `str` | `"uniform"` | `mode` picks the grid: uniform or log. |' in section
    assert "| `scales` | `dict[str, float]` | `{}` | per-layer scale overrides |" in section
    assert section.index("`bits`") < section.index("`include`")  # the step's own fields first
