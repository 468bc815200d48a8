"""One-shot and calibration work shared by layer: the same file for any number of processes."""

from __future__ import annotations

import json

import pytest
from parallel.ranks import netshrink

from netshrink.parallel.runtime import share_work


def test_share_work_on_one_process_computes_every_name_in_order():
    seen = []
    assert share_work(["b", "a", "c"], lambda name: seen.append(name) or name.upper()) == {"b": "B", "a": "A", "c": "C"}
    assert seen == ["b", "a", "c"]


def _compressed(tmp_path, checkpoint, recipe: str, nproc: int) -> bytes:
    path = tmp_path / f"{nproc}.nsk"
    done = netshrink(
        "compress", str(checkpoint), "--recipe", recipe, "--nproc", str(nproc), "-o", str(path), "--no-eval"
    )
    assert done.returncode == 0, done.stderr
    return path.read_bytes()


@pytest.mark.parametrize(
    ("recipe", "worlds"),
    [("oneshot-prune50-palette5", (2, 3)), ("pq", (2,)), ("pq-weights", (2, 3))],
)
def test_one_shot_and_calibration_files_are_byte_identical_for_any_world_size(
    tmp_path, checkpoint, recipes, recipe, worlds
):
    recipe = str(recipes.get(recipe, recipe))
    alone = _compressed(tmp_path, checkpoint, recipe, 1)
    for world in worlds:
        assert _compressed(tmp_path, checkpoint, recipe, world) == alone, f"{world} processes"


def test_sensitivity_curves_are_the_same_on_two_processes(tmp_path, checkpoint):
    results = []
    for nproc in (1, 2):
        path = tmp_path / f"{nproc}.json"
        done = netshrink(
            "sensitivity", str(checkpoint), "--bits", "2,4", "--sparsity", "0.5", "--samples", "128",
            "--nproc", str(nproc), "-o", str(path), "--json",
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        results.append(json.loads(path.read_text()))
    assert results[0]["layers"] == results[1]["layers"] and len(results[0]["layers"]) == 4
