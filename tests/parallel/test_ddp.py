"""Data-parallel retraining: each rank trains on its slice of every batch, the parameters stay the
same on every rank, and rank 0 alone writes the file."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from parallel.ranks import REPO, start_ranks

from netshrink.data import ArrayDataset
from netshrink.parallel.ddp import ShardedBatches
from netshrink.parallel.runtime import Ranks

HERE = Path(__file__).resolve().parent


def _images(n: int) -> ArrayDataset:
    images = torch.arange(n, dtype=torch.uint8).reshape(n, 1, 1, 1).expand(n, 1, 2, 2).contiguous()
    return ArrayDataset(images, torch.arange(n) % 3)


def test_the_ranks_slices_make_up_the_batches_of_one_process():
    data = _images(70)
    alone = [y for _, y in data.loader(16, shuffle=True, seed=5)]
    for world in (2, 3):
        shards = [list(ShardedBatches(data.loader(16, shuffle=True, seed=5), Ranks(r, world))) for r in range(world)]
        joined = [torch.cat([shards[r][i][1] for r in range(world)]) for i in range(len(alone))]
        assert all(torch.equal(a, b) for a, b in zip(alone, joined))  # same samples, same order, same batches
        assert len(ShardedBatches(data.loader(16), Ranks(0, world))) == len(alone)
    # a batch smaller than the number of ranks (70 = 4 x 16 + 6, and 6 < 8) is skipped on every rank
    assert len(list(ShardedBatches(data.loader(16, shuffle=True), Ranks(1, 8)))) == 4


def test_data_parallel_training_follows_one_process(tmp_path):
    out = str(tmp_path / "state")
    worker = [str(HERE / "fit_worker.py"), out]
    ranks = start_ranks(worker, 2, cwd=REPO)
    alone = start_ranks(worker[:1] + [out + "-alone"], 1, cwd=REPO)
    for process in ranks + alone:
        assert process.wait(timeout=60) == 0, process.stderr.read()
    one = torch.load(out + "-alone.0")
    first, second = torch.load(out + ".0"), torch.load(out + ".1")
    assert all(torch.equal(first[k], second[k]) for k in first)  # identical on every rank
    for name, tensor in one.items():  # the mean gradient of the whole batch: one process's step
        torch.testing.assert_close(first[name], tensor, rtol=1e-4, atol=1e-5)


def test_a_retraining_recipe_on_two_ranks_is_written_once_by_rank_0(tmp_path, checkpoint, recipes):
    folder = tmp_path / "out"
    folder.mkdir()
    target = folder / "model.nsk"
    audit = tmp_path / "audit"
    argv = ["compress", str(checkpoint), "--recipe", str(recipes["retrain"]), "-o", str(target), "--json"]
    ranks = start_ranks([str(HERE / "audited_cli.py"), str(folder), str(audit), *argv], 2, cwd=tmp_path)
    outputs = [process.communicate(timeout=60) for process in ranks]
    assert [process.returncode for process in ranks] == [0, 0], outputs
    result = json.loads(outputs[0][0])  # rank 0 prints the result, rank 1 nothing
    assert outputs[1][0] == ""
    assert result["file_bytes"] == target.stat().st_size and result["after"] > 0.5
    assert sorted(p.name for p in folder.iterdir()) == ["model.nsk"]
    main, other = (json.loads(Path(f"{audit}.{rank}").read_text()) for rank in range(2))
    assert other == []  # rank 1 never opened, renamed or removed anything next to the target
    assert [event for event in main if event[0] == "rename"] == [["rename", "model.nsk"]]  # written once
