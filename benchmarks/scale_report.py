"""benchmarks/results/scale.md: the scale results on one page, from what the two scale benchmarks
wrote (scale-ddp.md: several processes; scale-memory.md and its plot: streaming beyond memory).

    python benchmarks/scale_report.py
"""

from __future__ import annotations

from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
PARTS = (
    ("scale-ddp.md", "benchmarks/scale_ddp.py"),
    ("scale-memory.md", "benchmarks/scale_memory.py"),
)


def section(name: str, script: str) -> str:
    """A generated page as a section: its title one level down, and where it comes from."""
    text = (RESULTS / name).read_text().strip()
    title, _, body = text.partition("\n")
    return f"#{title}\n\nFrom [{name}]({name}), written by `{script}`.\n{body}\n"


def main() -> None:
    parts = [section(name, script) for name, script in PARTS if (RESULTS / name).is_file()]
    page = "# Scale: several processes, and models larger than memory\n\n"
    page += "![peak RSS against checkpoint size](scale-memory.png)\n\n" + "\n".join(parts)
    (RESULTS / "scale.md").write_text(page)
    print(f"wrote {RESULTS / 'scale.md'}")


if __name__ == "__main__":
    main()
