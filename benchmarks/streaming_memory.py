"""Peak memory of compressing a ~1 GB Llama-shaped fp32 checkpoint block by block vs whole.

Writes a seeded random `llama` checkpoint (.safetensors, fp32) once, then runs, each in its own
process under `/usr/bin/time -v`:

  stream: `netshrink compress CKPT --stream --recipe R -o stream.nsk` (one block in memory at a time)
  whole:  load the checkpoint (safetensors.torch.load_file), build the model, `netshrink.compress(...)`
          and write the file: what compressing without streaming takes

and records each run's maximum resident set size and wall time, and whether the two files are
byte-identical (they are for a one-shot recipe: the same records in the same order).

    python benchmarks/streaming_memory.py [--folder /tmp/netshrink-stream-bench] [--recipe oneshot-palette5]

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", type=Path, default=Path("/tmp/netshrink-stream-bench"))
    parser.add_argument("--recipe", default="oneshot-palette5")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/streaming-memory.json"))
    args = parser.parse_args()
    args.folder.mkdir(parents=True, exist_ok=True)
    checkpoint = args.folder / "llama-1gb.safetensors"
    arch = json.dumps(ARCH)
    if not checkpoint.exists():
        subprocess.run([sys.executable, "-c", WRITE_CHECKPOINT, arch, str(checkpoint)], check=True)
    stream_file, whole_file = args.folder / "stream.nsk", args.folder / "whole.nsk"
    stream = timed_run(
        [sys.executable, "-m", "netshrink.cli", "compress", str(checkpoint), "--stream"]
        + ["--recipe", args.recipe, "-o", str(stream_file)]
    )
    whole = timed_run([sys.executable, "-c", COMPRESS_WHOLE, arch, str(checkpoint), args.recipe, str(whole_file)])
    result = {
        "arch": ARCH,
        "recipe": args.recipe,
        "checkpoint_bytes": checkpoint.stat().st_size,
        "stream": {**stream, "file_bytes": stream_file.stat().st_size},
        "whole": {**whole, "file_bytes": whole_file.stat().st_size},
        "identical_files": stream_file.read_bytes() == whole_file.read_bytes(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, OMP_NUM_THREADS=1",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    table = markdown(result)
    args.out.with_suffix(".md").write_text(table)
    print(table)


def markdown(result: dict) -> str:
    size = result["checkpoint_bytes"] / 2**20
    rows = [
        f"# Peak memory: block-by-block vs whole compression of a {size:.0f} MiB fp32 llama checkpoint\n",
        f"Recipe `{result['recipe']}`, arch `{json.dumps(result['arch'])}`; {result['machine']}.",
        "Peak = maximum resident set size of the whole process (`/usr/bin/time -v`).\n",
        "| run | peak RSS (MiB) | wall (s) | file bytes |",
        "|---|---:|---:|---:|",
    ]
    for name in ("stream", "whole"):
        run = result[name]
        rows.append(f"| {name} | {run['max_rss_mib']:,} | {run['wall_s']} | {run['file_bytes']:,} |")
    rows.append(f"\nThe two files are byte-identical: {result['identical_files']}.\n")
    return "\n".join(rows)


if __name__ == "__main__":
    main()
