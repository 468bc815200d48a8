"""Fuzzing the .nsk reader: thousands of damaged and crafted files, one clean error or the right model.

Families (built in tests/fuzz_cases.py, from a seeded RNG, the same bytes every run):

- raw: bit flips, byte sets, truncations, insertions, deletions, appended and overwritten bytes of
  two real files (full LeNet-5 prune+palette, and a thin LeNet-5 with PQ + a borrowed codebook,
  low-rank, per-channel palette, sparse, fp16, bf16, fp32). The CRCs catch most; the rest must load
  the original exactly.
- payload: payload bytes damaged and payload_crc32 recomputed, so the entropy decoders and codecs
  see it (a valid file with other values may load: keys and shapes must still be right).
- header: several hundred targeted edits, re-checksummed: absurd shapes, arch widths and class
  counts, stream lengths and kinds, codec names and parameters, borrowed streams pointing anywhere,
  renamed / duplicated / removed / added / tied tensors, prefix flags and versions, bytes after the
  payload, deep nesting, format version 1 rewrites.
- random-header: random re-checksummed edits anywhere in the header tree.
- amplification: 255..450-byte files declaring palette tensors of 2**27 and 2**31 weights (and two
  just under 256 MiB: one tensor, and a LeNet-5 with a 65536-wide fc1), loaded with and without a
  model and reported.

Every case must end in a `NetshrinkError` with a one-line message, or in a model equal to the
original (see fuzz_cases' docstring for the exact oracle); `file_report` (what `netshrink inspect`
prints) runs on a sample. Both readers face the cases: `load` reads a file one tensor at a time
(`format.bounded.open_nsk`), `file_report` reads it whole (`read_nsk`). The loop runs in a subprocess under an address-space limit, so a reader
that allocates gigabytes fails this test instead of the machine, and the subprocess's peak RSS is
measured against MAX_RSS_GROWTH_MIB. Failures are reported all together, grouped by exception
type and the netshrink line that raised it, with an example edit each.

To keep the failing files: python tests/fuzz_cases.py "$(python -c 'import tests.test_fuzz as t,
json; print(json.dumps(t.CONFIG))')" --write-failures /tmp/fuzz-failures
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

SEED = 20_240_607
#: Cases per original file ('dc': full LeNet-5 prune50-palette5, 'mixed': thin LeNet-5, every codec).
RAW_CASES = {"dc": 800, "mixed": 800}
PAYLOAD_CASES = {"dc": 60, "mixed": 500}
RANDOM_HEADER_CASES = {"dc": 100, "mixed": 700}
#: Originals that get every targeted header edit, and how many of their tensors (from the first) get
#: the per-codec-node edits (shape, codec, params, streams): dc's codecs all recur in mixed.
TARGETED_NODE_TENSORS = {"dc": 2, "mixed": 8}
#: file_report runs on every targeted and amplification case and on this share of the random ones.
REPORT_SHARE = 0.2

#: The subprocess's peak RSS may grow this much past what importing torch + netshrink took.
#: The original files decode to about 1.7 MB; a reader that amplifies a tiny file to GBs blows it.
MAX_RSS_GROWTH_MIB = 256
#: Per call (load or file_report) of one case.
MAX_CASE_SECONDS = 1.0
MAX_CASE_PEAK_MIB = 256
#: Address-space limit of the subprocess: an attempt to allocate GBs fails there, not on the machine.
ADDRESS_SPACE_BYTES = 6 << 30
#: Guards so a hung reader still yields a report (far above the limits asserted).
CASE_TIMEOUT_S = 30
SUBPROCESS_TIMEOUT_S = 1200

CONFIG = {
    "seed": SEED,
    "raw_cases": RAW_CASES,
    "payload_cases": PAYLOAD_CASES,
    "random_header_cases": RANDOM_HEADER_CASES,
    "targeted_node_tensors": TARGETED_NODE_TENSORS,
    "report_share": REPORT_SHARE,
    "max_case_seconds": MAX_CASE_SECONDS,
    "max_case_peak_mib": MAX_CASE_PEAK_MIB,
    "address_space_bytes": ADDRESS_SPACE_BYTES,
    "case_timeout_s": CASE_TIMEOUT_S,
}

HERE = Path(__file__).resolve().parent
SUMMARY_MARKER = "FUZZ-SUMMARY "  # fuzz_cases.SUMMARY_MARKER (not imported: it would import torch twice)
#: Findings about time and memory, asserted by their own tests; every other kind breaks the oracle.
RESOURCE_KINDS = {"slow", "memory"}


@pytest.fixture(scope="module")
def summary() -> dict:
    """Run every case once in a fresh interpreter and parse its JSON summary."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    try:
        proc = subprocess.run(
            [sys.executable, str(HERE / "fuzz_cases.py"), json.dumps(CONFIG)],
            cwd=HERE.parent,
            env=env,
            capture_output=True,
            text=True,
            timeout=SUBPROCESS_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"the fuzz subprocess ran past {SUBPROCESS_TIMEOUT_S} s; its last output:\n{_tail(exc.stderr)}")
    lines = [line for line in proc.stdout.splitlines() if line.startswith(SUMMARY_MARKER)]
    if proc.returncode != 0 or not lines:
        pytest.fail(
            f"the fuzz subprocess died (exit status {proc.returncode}, e.g. killed for memory):\n{_tail(proc.stderr)}"
        )
    return json.loads(lines[-1][len(SUMMARY_MARKER) :])


def _tail(text: str | bytes | None, n: int = 4000) -> str:
    text = text.decode(errors="replace") if isinstance(text, bytes) else text or ""
    return text[-n:]


def _grouped(findings: list[dict], examples: int = 3) -> str:
    """Findings grouped by (kind, exception type, raising line), largest group first, with examples."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for f in findings:
        groups[(f["kind"], f["error"], f["where"])].append(f)
    lines = [f"{len(findings)} findings in {len(groups)} groups:"]
    for (kind, error, where), members in sorted(groups.items(), key=lambda item: -len(item[1])):
        lines.append(f"- {kind}: {error or '-'} at {where or '?'} ({len(members)} cases)")
        for f in members[:examples]:
            lines.append(f"    [{f['family']}/{f['base']}] {f['call']}: {f['edit']}  ->  {f['message'][:200]!r}")
    return "\n".join(lines)


def test_every_family_ran(summary):
    counts = summary["counts"]
    assert counts["raw"] == sum(RAW_CASES.values())
    assert counts["payload"] == sum(PAYLOAD_CASES.values())
    assert counts["random-header"] == sum(RANDOM_HEADER_CASES.values())
    assert counts["header"] > 300 * len(TARGETED_NODE_TENSORS)
    assert counts["amplification"] == 5


def test_damaged_files_give_one_line_netshrink_errors_or_the_original_model(summary):
    broken = [f for f in summary["findings"] if f["kind"] not in RESOURCE_KINDS]
    if broken:
        pytest.fail(_grouped(broken), pytrace=False)


def test_each_case_is_fast(summary):
    slow = [f for f in summary["findings"] if f["kind"] == "slow"]
    slowest = summary["slowest"][0]
    if slow:
        pytest.fail(
            f"slowest: {slowest['seconds']} s for [{slowest['family']}] {slowest['call']}: {slowest['edit']}\n"
            + _grouped(slow),
            pytrace=False,
        )


def test_memory_stays_bounded(summary):
    growth = summary["peak_rss_mib"] - summary["rss_after_import_mib"]
    heavy = [f for f in summary["findings"] if f["kind"] == "memory"]
    if growth >= MAX_RSS_GROWTH_MIB or heavy:
        pytest.fail(
            f"peak RSS grew {growth:.0f} MiB past the {summary['rss_after_import_mib']:.0f} MiB after import "
            f"(bound {MAX_RSS_GROWTH_MIB} MiB)\n" + _grouped(heavy),
            pytrace=False,
        )


def test_amplification_files_are_refused_quickly(summary):
    """A few hundred bytes declaring gigabytes: one clean error in well under a second, every entry
    point. The two files declaring just under 256 MiB may also load, within the same time and memory."""
    calls = summary["amplification"]
    assert {c["call"] for c in calls} == {"load", "load(model=lenet5)", "file_report"}
    bad = [
        c
        for c in calls
        if (c["outcome"] != "raised" and c["must_fail"])
        or (c["outcome"] == "raised" and not c["netshrink_error"])
        or "\n" in c["message"]
        or c["seconds"] >= MAX_CASE_SECONDS
        or c["peak_mib"] >= MAX_CASE_PEAK_MIB
    ]
    if bad:
        pytest.fail(
            "\n".join(
                f"{c['edit']}: {c['call']}: {c['outcome']} {c['error']} in {c['seconds']} s, "
                f"peak +{c['peak_mib']} MiB: {c['message'][:200]!r}"
                for c in bad
            ),
            pytrace=False,
        )
