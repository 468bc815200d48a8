"""Calibration tokens from a text data set: token windows are taken as they are (id 0 included)."""

from __future__ import annotations

import pytest
import torch

import netshrink.data
from netshrink.data import TokenWindows
from netshrink.streaming.calibration import calibration_tokens


def test_token_windows_keep_every_id(monkeypatch: pytest.MonkeyPatch) -> None:
    windows = TokenWindows(torch.arange(40).reshape(5, 8) % 7)  # id 0 is a real token (an eos, say)
    monkeypatch.setattr(netshrink.data, "load_dataset", lambda name, split, data_dir, tokenizer=None: windows)
    tokens = calibration_tokens("shakespeare", vocab=7, samples=3, length=10, seed=0).tokens
    assert torch.equal(tokens, windows.tokens.reshape(-1)[:30].reshape(3, 10))
