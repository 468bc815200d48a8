"""Compress a model larger than memory, one block at a time, from a .safetensors checkpoint.

The model is built on the meta device. The embedding is materialised from the checkpoint,
compressed and run on the calibration tokens, giving the hidden states X_0; then each block i in
turn is materialised alone, compressed by the recipe's steps with X_i as their calibration data (so
calibration-based steps, `palette` with `compensate` or output-aware `pq`, fit each layer to the
inputs the already-compressed blocks produce, as GPTQ does), encoded into the file under its full
tensor names, run to give X_{i+1} with its COMPRESSED weights, and released. The final norm and
head come last. Peak memory is one block plus the calibration activations, whatever the depth; the
records go straight to a `StreamedWriter`, so the file is never held in memory either.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from netshrink import zoo
from netshrink.errors import ModelError
from netshrink.format.codecs import Encoded
from netshrink.format.container import FORMAT_VERSION, StreamedWriter, TensorRecord
from netshrink.identity import ModelIdentity, OriginalSize
from netshrink.paths import check_output_path
from netshrink.plan import CompressionPlan, module_kind
from netshrink.recipe import load_recipe
from netshrink.select import WEIGHT_LAYERS
from netshrink.step import Recipe, StepContext
from netshrink.streaming import resume as saved
from netshrink.streaming.calibration import Activations, calibration_tokens, run_in_batches
from netshrink.streaming.checkpoint import SafetensorsCheckpoint
from netshrink.streaming.parts import (
    PARTWISE_TRAINING,
    Part,
    PartModule,
    aliases,
    check_streamable,
    cut,
    part_teacher,
    set_tensor,
    steps_for,
    tensor_of,
    tie,
    to_meta,
)

log = logging.getLogger(__name__)

#: Tokens per calibration row, unless the model's max_seq is shorter or the data set has windows.
DEFAULT_LENGTH = 64
#: Calibration rows when no step of the recipe asks for more.
DEFAULT_SAMPLES = 8


@dataclass
class StreamResult:
    """What a block-by-block compression wrote, and the compressed model's logits on the first
    calibration batch (the file, loaded, gives the same)."""

    file: Path
    file_bytes: int
    original_bytes: int
    blocks: int
    resumed_at: int  # parts already done when the run started (0: from the beginning)
    calibration: str
    seconds: float
    logits: torch.Tensor

    def to_json(self) -> dict[str, Any]:
        return {
            "file": str(self.file),
            "file_bytes": self.file_bytes,
            "original_bytes": self.original_bytes,
            "ratio": self.original_bytes / self.file_bytes,
            "blocks": self.blocks,
            "resumed_at_part": self.resumed_at,
            "calibration": self.calibration,
            "compress_seconds": self.seconds,
        }

    def to_text(self) -> str:
        resumed = f", resumed after {self.resumed_at} parts" if self.resumed_at else ""
        return (
            f"{self.file}: {self.file_bytes:,} bytes, {self.original_bytes / self.file_bytes:.2f}x smaller than "
            f"fp32 ({self.original_bytes:,} bytes); {self.blocks} blocks compressed one at a time{resumed} in "
            f"{self.seconds:.1f} s; calibration: {self.calibration}"
        )


def compress_streaming(
    checkpoint: str | Path,
    recipe: Recipe | str | Path,
    *,
    output: str | Path,
    model: str | nn.Module | None = None,
    arch: dict[str, Any] | str | None = None,
    calibration: torch.Tensor | str | None = None,
    samples: int | None = None,
    length: int | None = None,
    batch_size: int = 4,
    resume: bool = False,
    seed: int = 0,
    progress: bool = True,
    data_dir: str | None = None,
) -> StreamResult:
    """Compress the model in `checkpoint` (.safetensors) with `recipe`, block by block, into `output`.

    The model is a zoo name with `arch` (default: the checkpoint's `__metadata__` keys
    `netshrink_model` and `arch`, a JSON object), or a module built on the meta device that has a
    `BlockStructure`. Calibration: `samples` rows (default: the most calibration samples a step of
    the recipe asks for, at least 8) of `length` tokens (default: the data set's window length for
    token windows, else 64; at most max_seq) from `calibration` (a text data set's name or a token
    tensor), else seeded random tokens. `resume` goes on from the last finished block of an interrupted run with the same
    inputs; the file is the same either way.
    """
    started = time.perf_counter()
    target = check_output_path(output, ".nsk file")
    recipe = recipe if isinstance(recipe, Recipe) else load_recipe(recipe)
    check_streamable(recipe)
    ckpt, model = open_checkpoint(checkpoint, model)
    skeleton, identity = model_skeleton(ckpt, model, arch)
    identity = _text_identity(identity, ckpt, calibration)
    source = _Source(ckpt, skeleton, cut(skeleton), aliases(skeleton))
    source.sources = _check_tensors(ckpt, skeleton, source.alias)
    asked = [getattr(step, "calibration", 0) for step in recipe.steps if getattr(step, "needs_data", False)]
    samples = samples or max([*asked, DEFAULT_SAMPLES])  # steps that measure nothing ask for nothing
    length = length or min(_window_length(calibration), identity.arch.get("max_seq", DEFAULT_LENGTH))
    vocab = _vocab(skeleton, source.parts[0])
    tokens = calibration_tokens(calibration, vocab, samples, length, seed, data_dir, _tokenizer_of(ckpt, identity))
    log.info("calibration: %s", tokens.source)
    fingerprint = {
        "checkpoint": ckpt.fingerprint,
        "model": identity.to_json(),
        "recipe": recipe.to_dict(),
        "seed": seed,
        "batch_size": batch_size,
        "tokens": _digest(tokens.tokens),
        "format": FORMAT_VERSION,
    }
    folder = saved.resume_folder(target)
    point = saved.start(folder, fingerprint, resume)
    resumed_at = point.next_part
    writer = StreamedWriter(target, folder / saved.PAYLOAD, point.writer if resumed_at else None)
    if not resumed_at:
        point.hidden = tokens.tokens
    logits = _compress_parts(
        source,
        recipe,
        point,
        writer,
        lambda done: saved.save(folder, fingerprint, done),
        seed=seed,
        batch_size=batch_size,
        progress=progress,
    )
    identity = identity.with_arch(point.arch)
    size = writer.finish(identity.to_json(), recipe.to_dict())
    saved.finish(folder)
    assert identity.original is not None
    blocks = len(source.parts) - 2
    seconds = time.perf_counter() - started
    return StreamResult(target, size, identity.original.fp32_bytes, blocks, resumed_at, tokens.source, seconds, logits)


def _window_length(calibration: Any) -> int:
    """The window length of a text data set of token windows (SmolLM2's Shakespeare: 512), else the default."""
    if isinstance(calibration, str):
        from netshrink.data import WINDOW_LENGTHS

        return WINDOW_LENGTHS.get(calibration, DEFAULT_LENGTH)
    return DEFAULT_LENGTH


def open_checkpoint(spec: str | Path, model: str | nn.Module | None) -> tuple[Any, str | nn.Module | None]:
    """The checkpoint to stream from: a .safetensors or .gguf file, or a zoo model whose published
    weights are one of those (its name then names the model, unless `model` does)."""
    path = Path(spec)
    if not path.exists() and str(spec) in zoo.MODEL_NAMES and zoo.model_info(str(spec)).has_pretrained:
        path, model = zoo.checkpoint_path(str(spec)), model or str(spec)
    if path.suffix == ".gguf":
        from netshrink.lm.gguf import GGUFCheckpoint

        return GGUFCheckpoint.open(path), model
    return SafetensorsCheckpoint.open(path), model


def _tokenizer_of(ckpt: Any, identity: ModelIdentity) -> Any:
    """The tokenizer a GGUF file holds (None: the text data set's default, SmolLM2's)."""
    if getattr(ckpt, "tokenizer", None) and identity.name == "llama":
        from netshrink.lm.tokenizer import from_gguf_metadata

        return from_gguf_metadata(ckpt.tokenizer, str(ckpt.path))
    return None


def _text_identity(identity: ModelIdentity, ckpt: Any, calibration: Any) -> ModelIdentity:
    """A language model's identity also names its data set and, from a GGUF file, where its tokenizer is."""
    extra = dict(identity.extra)
    if hasattr(ckpt, "tokenizer") and identity.name == "llama":
        extra["tokenizer"] = str(ckpt.path.resolve())
    dataset = calibration if isinstance(calibration, str) else identity.dataset
    return replace(identity, dataset=dataset, extra=extra)


@dataclass
class _Source:
    """The model being streamed: its checkpoint, its skeleton, its parts, its tied names, and the
    checkpoint name of each tensor stored once."""

    ckpt: SafetensorsCheckpoint
    skeleton: nn.Module
    parts: list[Part]
    alias: dict[str, str]
    sources: dict[str, str] = field(default_factory=dict)


def _compress_parts(
    source: _Source,
    recipe: Recipe,
    point: saved.ResumePoint,
    writer: StreamedWriter,
    save: Callable[[saved.ResumePoint], None],
    *,
    seed: int,
    batch_size: int,
    progress: bool,
) -> torch.Tensor:
    """Compress the parts from `point` on, writing their records and saving a point after each part
    but the last; returns the logits of the first calibration batch."""
    skeleton, parts, alias = source.skeleton, source.parts, source.alias
    for name, value in point.kept.items():
        set_tensor(skeleton, name, value)
    tie(skeleton, alias)
    hidden = point.hidden
    assert hidden is not None
    with tqdm(total=len(parts), initial=point.next_part, desc="compress by block", disable=not progress) as bar:
        for index in range(point.next_part, len(parts)):
            part = parts[index]
            bar.set_postfix_str(part.name)
            _materialise(source, part)
            records, changes = _compress_part(skeleton, part, recipe, Activations(hidden), alias, seed)
            writer.add(records)
            point.arch.update(changes)
            last = index == len(parts) - 1
            hidden = run_in_batches(part.run, hidden[:batch_size] if last else hidden, batch_size)
            kept = _release(skeleton, parts, index, alias)
            if not last:
                save(saved.ResumePoint(index + 1, writer.sync(), point.arch, hidden, kept))
            bar.update(1)
    return hidden


def model_skeleton(
    ckpt: SafetensorsCheckpoint, model: str | nn.Module | None, arch: dict[str, Any] | str | None
) -> tuple[nn.Module, ModelIdentity]:
    """The model on the meta device and the identity its file records."""
    if isinstance(model, nn.Module):
        skeleton, name, options = model.to("meta"), None, {}
    else:
        named, described = ckpt.model_description()
        name = model or named
        options = _arch_json(arch) if isinstance(arch, str) else arch if arch is not None else described
        if name is None:
            raise ModelError(
                f"checkpoint {ckpt.path} does not name its model: give the zoo model and its arch "
                "(--model llama --arch '{\"dim\": ...}'), or write __metadata__ netshrink_model and arch"
            )
        if not isinstance(options, dict):
            raise ModelError(f"the model's arch must be a JSON object, got {options!r}")
        skeleton = zoo.build_skeleton(name, **options)
    identity = ModelIdentity.of(skeleton, name)
    return skeleton, replace(identity, original=_original_size(skeleton))


def _arch_json(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ModelError(f"--arch is not JSON ({exc}): give an object such as '{{\"dim\": 512}}'") from None


def _original_size(skeleton: nn.Module) -> OriginalSize:
    """`report.sizes.original_size` on the meta device: a tied tensor counted once (by identity,
    as meta tensors have no storage to compare)."""
    unique = {id(t): t for t in skeleton.state_dict(keep_vars=True).values()}
    weights = {id(m.weight): m.weight.numel() for m in skeleton.modules() if isinstance(m, WEIGHT_LAYERS)}
    return OriginalSize(4 * sum(t.numel() for t in unique.values()), sum(weights.values()))


def _check_tensors(ckpt: SafetensorsCheckpoint, skeleton: nn.Module, alias: dict[str, str]) -> dict[str, str]:
    """model tensor name -> checkpoint name, for every tensor stored once; names and shapes checked
    before any work (a tied tensor may be stored under any of its names)."""
    names_of: dict[str, list[str]] = {}
    for name in skeleton.state_dict(keep_vars=True):
        names_of.setdefault(alias.get(name, name), []).append(name)
    sources, missing = {}, []
    for first, names in names_of.items():
        found = next((n for n in names if n in ckpt.entries), None)
        if found is None:
            missing.append(first)
            continue
        expected, entry = tensor_of(skeleton, first), ckpt.entries[found]
        if tuple(expected.shape) != entry.shape or expected.is_floating_point() != entry.dtype.is_floating_point:
            raise ModelError(
                f"checkpoint {ckpt.path}: tensor {found!r} is {entry.dtype} {list(entry.shape)}, "
                f"the model expects {expected.dtype} {list(expected.shape)}"
            )
        sources[first] = found
    if missing:
        raise ModelError(f"checkpoint {ckpt.path} lacks {len(missing)} tensors of the model: {', '.join(missing[:4])}")
    unexpected = sorted(set(ckpt.entries) - {n for names in names_of.values() for n in names})
    if unexpected:
        raise ModelError(f"checkpoint {ckpt.path} holds tensors the model does not have: {', '.join(unexpected[:4])}")
    return sources


def _vocab(skeleton: nn.Module, prefix: Part) -> int:
    embeddings = [m for root in prefix.roots for m in skeleton.get_submodule(root).modules()]
    embedding = next((m for m in embeddings if isinstance(m, nn.Embedding)), None)
    if embedding is None:
        raise ModelError("the model's prefix has no token embedding: give calibration inputs")
    return embedding.num_embeddings


def _materialise(source: _Source, part: Part) -> None:
    """Read the part's tensors from the checkpoint into the skeleton, in its dtypes."""
    skeleton = source.skeleton
    for name in part.tensors:
        if name not in source.alias:
            value = source.ckpt.read(source.sources[name])
            set_tensor(skeleton, name, value.to(tensor_of(skeleton, name).dtype))
    tie(skeleton, source.alias)


def _compress_part(
    skeleton: nn.Module, part: Part, recipe: Recipe, data: Activations, alias: dict[str, str], seed: int
) -> tuple[list[TensorRecord], dict[str, Any]]:
    """The recipe applied to one part; its records in state-dict order, a tensor tied to an earlier
    part's recorded as tied (the steps never see it again)."""
    earlier = {name for name in part.tensors if name in alias and alias[name] not in part.tensors}
    shell = PartModule(skeleton, part, earlier)
    torch.manual_seed(seed)
    plan, ctx = CompressionPlan(), StepContext(data=data, seed=seed, progress=False)
    steps = steps_for(recipe, skeleton, part, shell)
    if any(step.step_name in PARTWISE_TRAINING for step in steps):
        ctx.teacher = part_teacher(skeleton, part)
    for step in steps:
        step.apply(shell, plan, ctx)
        plan.refresh(shell)
    encoded = {rec.name: rec for rec in plan.encode_all(shell)}
    records = []
    for name in part.tensors:
        if name in earlier:
            owner = skeleton.get_submodule(name.rpartition(".")[0])
            placeholder = Encoded("dense", tuple(tensor_of(skeleton, name).shape))
            records.append(TensorRecord(name, placeholder, module_kind(owner), tied_to=alias[name]))
        else:
            records.append(encoded[name])
    return records, ctx.arch


def _release(skeleton: nn.Module, parts: list[Part], index: int, alias: dict[str, str]) -> dict[str, torch.Tensor]:
    """Send part `index`'s tensors back to meta, except those a later part uses under another name;
    returns every tensor still needed later (to save for a resumed run)."""
    later = {name for part in parts[index + 1 :] for name in part.tensors}
    needed = {alias[name] for name in later if name in alias}
    to_meta(skeleton, [n for n in parts[index].tensors if n not in alias and n not in needed])
    tie(skeleton, alias)
    done = {name for part in parts[: index + 1] for name in part.tensors}
    return {name: tensor_of(skeleton, name) for name in sorted(needed & done)}


def _digest(tokens: torch.Tensor) -> str:
    import hashlib

    return hashlib.sha256(tokens.numpy().tobytes()).hexdigest()
