"""Peak memory of compressing a ~1 GB Llama-shaped fp32 checkpoint block by block vs whole.

Writes seeded random `llama` checkpoints (.safetensors, fp32) once, then runs, each in its own
process under `/usr/bin/time -v`:

  stream: `netshrink compress CKPT --stream --recipe R -o F.nsk` (one block in memory at a time)
  whole:  load the checkpoint (safetensors.torch.load_file), build the model, `netshrink.compress(...)`
          and write the file: what compressing without streaming takes

for three cases: `oneshot-palette5` on every layer of a 16-block model (the headline), a recipe that
palettizes the blocks only (so the peak is not the working memory of palettizing the 125 MiB
embedding table), and that recipe on an 8-block model (the streamed peak should not depend on the
depth). Each case records the maximum resident set size and wall time of each run, and whether the
two files are byte-identical (they are for a one-shot recipe: the same records in the same order).

    python benchmarks/streaming_memory.py [--folder /tmp/netshrink-stream-bench]

Writes JSON and a Markdown table under benchmarks/results/. Never run by the test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
from pathlib import Path

#: 16 blocks of 11.8 M weights, a 32000 x 1024 embedding and an untied head: 270 M fp32 weights.
ARCH = dict(vocab=32000, dim=1024, layers=16, heads=16, kv_heads=8, ffn=2816, max_seq=2048, tied=False)

WRITE_CHECKPOINT = """
import json, sys, torch
from safetensors.torch import save_file
from netshrink.zoo import build_model
arch = json.loads(sys.argv[1])
torch.manual_seed(0)
model = build_model("llama", **arch)
save_file(model.state_dict(), sys.argv[2], metadata={"netshrink_model": "llama", "arch": json.dumps(arch)})
"""

COMPRESS_WHOLE = """
import json, sys, netshrink
from safetensors.torch import load_file
from netshrink.zoo import build_model
arch = json.loads(sys.argv[1])
model = build_model("llama", **arch)
model.load_state_dict(load_file(sys.argv[2]))
netshrink.compress(model, sys.argv[3], name="llama", progress=False, inplace=True).write(sys.argv[4])
"""


def timed_run(command: list[str]) -> dict[str, float]:
    """Max RSS (MiB) and wall seconds of `command`, from GNU time's verbose report."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(["/usr/bin/time", "-v", *command], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{command[:4]} failed:\n{done.stderr[-2000:]}")
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr).group(1))
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", done.stderr).group(1)
    seconds = sum(float(part) * 60**i for i, part in enumerate(reversed(wall.split(":"))))
    return {"max_rss_mib": round(rss / 1024, 1), "wall_s": round(seconds, 1)}


#: A recipe that palettizes the blocks only (embedding and head in fp16): the run's peak then shows
#: the block-by-block design rather than the working memory of palettizing one 125 MiB table.
BLOCKS_RECIPE = """name: blocks-palette5
steps:
  - palette: {bits: 5, per_channel: auto, include: ["model.layers.*"]}
  - cast: {dtype: fp16}
"""

#: (label, layers, recipe, runs): the headline comparison, then what the peak depends on.
CASES = [
    ("all layers, 16 blocks", 16, "oneshot-palette5", ("stream", "whole")),
    ("blocks only, 16 blocks", 16, "blocks", ("stream", "whole")),
    ("blocks only, 8 blocks", 8, "blocks", ("stream",)),
]


def checkpoint_for(folder: Path, layers: int) -> Path:
    path = folder / f"llama-{layers}.safetensors"
    if not path.exists():
        arch = json.dumps({**ARCH, "layers": layers})
        subprocess.run([sys.executable, "-c", WRITE_CHECKPOINT, arch, str(path)], check=True)
    return path


def measure(folder: Path, layers: int, recipe: str, runs: tuple[str, ...]) -> dict:
    checkpoint, arch = checkpoint_for(folder, layers), json.dumps({**ARCH, "layers": layers})
    out: dict = {"layers": layers, "recipe": recipe, "checkpoint_bytes": checkpoint.stat().st_size}
    for run in runs:
        target = folder / f"{run}-{layers}-{Path(recipe).stem}.nsk"
        if run == "stream":
            command = [sys.executable, "-m", "netshrink.cli", "compress", str(checkpoint), "--stream"]
            command += ["--recipe", recipe, "-o", str(target)]
        else:
            command = [sys.executable, "-c", COMPRESS_WHOLE, arch, str(checkpoint), recipe, str(target)]
        out[run] = {**timed_run(command), "file_bytes": target.stat().st_size}
    if len(runs) == 2:
        files = [(folder / f"{run}-{layers}-{Path(recipe).stem}.nsk").read_bytes() for run in runs]
        out["identical_files"] = files[0] == files[1]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", type=Path, default=Path("/tmp/netshrink-stream-bench"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/streaming-memory.json"))
    args = parser.parse_args()
    args.folder.mkdir(parents=True, exist_ok=True)
    blocks = args.folder / "blocks-palette5.yaml"
    blocks.write_text(BLOCKS_RECIPE)
    cases = []
    for label, layers, recipe, runs in CASES:
        cases.append(
            {"case": label, **measure(args.folder, layers, str(blocks) if recipe == "blocks" else recipe, runs)}
        )
        print(json.dumps(cases[-1]), flush=True)
    result = {
        "arch": ARCH,
        "cases": cases,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, OMP_NUM_THREADS=1",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    table = markdown(result)
    args.out.with_suffix(".md").write_text(table)
    print(table)


def markdown(result: dict) -> str:
    rows = [
        "# Peak memory: block-by-block vs whole compression of a llama-shaped fp32 checkpoint\n",
        f"Arch `{json.dumps(result['arch'])}` (layers as given); {result['machine']}. Peak = maximum resident "
        "set size of the whole process (`/usr/bin/time -v`), Python and PyTorch included. `blocks only`: "
        "palette 5 bits on the blocks' weights, the embedding and head in fp16.\n",
        "| case | checkpoint (MiB) | run | peak RSS (MiB) | wall (s) | file bytes | same bytes |",
        "|---|---:|---|---:|---:|---:|---|",
    ]
    for case in result["cases"]:
        for run in ("stream", "whole"):
            if run in case:
                r = case[run]
                same = case.get("identical_files", "")
                rows.append(
                    f"| {case['case']} | {case['checkpoint_bytes'] / 2**20:,.0f} | {run} | {r['max_rss_mib']:,} "
                    f"| {r['wall_s']} | {r['file_bytes']:,} | {same} |"
                )
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    main()
