import dataclasses
import re
import typing

import pytest

import netshrink
from netshrink.errors import RecipeError
from netshrink.methods.palette import WeightSharing
from netshrink.methods.prune import MagnitudePrune
from netshrink.recipe import list_recipes, load_recipe, parse_recipe
from netshrink.step import STEPS, LayerStep


def test_packaged_recipes_parse():
    names = list_recipes()
    for required in ("oneshot-palette5", "oneshot-prune50-palette5", "fp16"):
        assert required in names
    for name in names:
        assert load_recipe(name).steps


def test_steps_are_validated_configs():
    recipe = load_recipe("oneshot-prune50-palette5")
    assert recipe.steps[:2] == (MagnitudePrune(sparsity=0.5, scope="layer"), WeightSharing(bits=5, per_channel="auto"))
    assert parse_recipe(recipe.to_dict()) == recipe


def test_yaml_file_path(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("name: mine\nsteps:\n  - palette: {bits: 3, include: ['conv*'], exclude: [conv2]}\n")
    step = load_recipe(path).steps[0]
    assert step.bits == 3 and step.include == ("conv*",) and step.exclude == ("conv2",)


@pytest.mark.parametrize(
    "data,message",
    [
        ({"name": "r", "steps": [{"prune": {"sparsty": 0.5}}]}, "step 1 (prune): unknown field 'sparsty'"),
        ({"name": "r", "steps": [{"prune": {"sparsity": 1.5}}]}, "sparsity must be in"),
        ({"name": "r", "steps": [{"prune": {"sparsity": "half"}}]}, "field 'sparsity'"),
        ({"name": "r", "steps": [{"palette": {"bits": 40}}]}, "bits"),
        ({"name": "r", "steps": [{"palette": {"bits": 5}}, {"palette": {"init": "best"}}]}, "step 2 (palette)"),
        ({"name": "r", "steps": [{"cluster": {}}]}, "unknown step 'cluster'"),
        ({"name": "r", "steps": [{"prune": {}, "palette": {}}]}, "one-key mapping"),
        ({"name": "r", "stepz": []}, "unknown field 'stepz'"),
        ({"name": "r", "steps": {"prune": {}}}, "'steps' must be a list"),
        ({"name": "r", "steps": [{"prune": {"scope": "everything"}}]}, "'everything' is not one of"),
        ({"name": "r", "steps": [{"lowrank": {}}]}, "exactly one of rank or energy"),
    ],
)
def test_bad_recipes_name_the_bad_field(data, message):
    with pytest.raises(RecipeError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_recipe(data)


def test_unknown_recipe_and_bad_yaml(tmp_path):
    with pytest.raises(RecipeError, match="unknown recipe 'nope'.*oneshot-palette5"):
        load_recipe("nope")
    bad = tmp_path / "bad.yaml"
    bad.write_text("steps: [unclosed\n")
    with pytest.raises(RecipeError, match="not valid YAML"):
        load_recipe(bad)


def test_overrides_set_fields_per_layer_first_matching_pattern_first(tiny_net):
    step = parse_recipe(
        {
            "name": "r",
            "steps": [{"palette": {"bits": 4, "overrides": {"fc": {"bits": 6}, "*": {"bits": 2, "init": "linear"}}}}],
        }
    ).steps[0]
    assert step.overrides == {"fc": {"bits": 6}, "*": {"bits": 2, "init": "linear"}}
    assert (step.for_layer("fc").bits, step.for_layer("fc").init) == (6, "linear")
    assert (step.for_layer("conv").bits, step.for_layer("conv").init) == (2, "linear")
    plan = netshrink.compress(
        tiny_net,
        parse_recipe({"name": "r", "steps": [{"palette": {"bits": 4, "overrides": {"conv": {"bits": 3}}}}]}),
        progress=False,
    ).plan
    assert [plan.codec_for(n).describe() for n in ("conv.weight", "fc.weight")] == ["palette3", "palette4"]


def test_overrides_values_take_their_fields_types_and_print_back():
    data = {
        "name": "r",
        "steps": [
            {"iterative_prune": {"sparsity": 0.9, "overrides": {"fc*": {"sparsity": 0}}, "epochs": 3, "lr": 0.02}}
        ],
    }
    recipe = parse_recipe(data)
    step = recipe.steps[0]
    assert step.overrides == {"fc*": {"sparsity": 0.0}} and isinstance(step.overrides["fc*"]["sparsity"], float)
    assert (step.train.epochs, step.train.lr, step.train.batch_size) == (3.0, 0.02, 64)
    printed = recipe.to_dict()["steps"][0]["iterative_prune"]
    assert printed["epochs"] == 3.0 and "train" not in printed and printed["overrides"] == {"fc*": {"sparsity": 0.0}}
    assert parse_recipe(recipe.to_dict()) == recipe
    assert "overrides" not in load_recipe("oneshot-palette5").to_dict()["steps"][0]["palette"]


@pytest.mark.parametrize(
    "step, settings, message",
    [
        ("palette", {"overrides": {"fc": {"bitz": 3}}}, "palette overrides 'fc': field 'bitz' is not a field"),
        (
            "palette",
            {"overrides": {"fc": {"weighting": "norm"}}},
            "palette overrides 'fc': field 'weighting' cannot differ per layer",
        ),
        ("palette", {"overrides": {"fc": {"bits": 40}}}, "palette overrides 'fc'"),
        ("palette", {"overrides": {"fc": {"bits": "many"}}}, "palette overrides 'fc': field 'bits'"),
        ("palette", {"overrides": {"fc": 4}}, "overrides"),
        ("prune", {"scope": "global", "overrides": {"fc": {"sparsity": 0.2}}}, "scope 'layer'"),
        ("trained_quantization", {"overrides": {"fc": {"epochs": 1}}}, "field 'epochs' cannot differ per layer"),
        ("cast", {"overrides": {"fc": {"dtype": "fp8"}}}, "cast overrides 'fc': field 'dtype'"),
        (
            "lowrank",
            {"energy": 0.9, "overrides": {"fc": {"rank": 2}}},
            "lowrank overrides 'fc': .*exactly one of rank or energy",
        ),
    ],
)
def test_bad_overrides_name_step_pattern_and_field(step, settings, message):
    with pytest.raises(RecipeError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_recipe({"name": "r", "steps": [{step: settings}]})


@pytest.mark.parametrize("step", ["palette", "prune", "cast", "lowrank", "iterative_prune"])
def test_an_override_pattern_matching_no_layer_is_an_error(tiny_net, step, tiny_images):
    field = STEPS[step].per_layer_fields[0]
    value = {"sparsity": 0.5, "bits": 4, "dtype": "bf16", "rank": 2}[field]
    settings = {"overrides": {"decoder.*": {field: value}}, **({"rank": 2} if step == "lowrank" else {})}
    recipe = parse_recipe({"name": "r", "steps": [{step: settings}]})
    with pytest.raises(
        RecipeError,
        match=f"step {step}: overrides pattern 'decoder.\\*' \\(field '{field}'\\) matches no selected layer",
    ):
        netshrink.compress(tiny_net, recipe, data=tiny_images, progress=False)


def test_every_layer_step_has_overrides_and_flat_names_that_do_not_collide():
    for name, cls in STEPS.items():
        fields = {f.name for f in dataclasses.fields(cls)}
        if issubclass(cls, LayerStep):
            assert "overrides" in fields and set(cls.per_layer_fields) <= fields, name
        hints = typing.get_type_hints(cls)
        nested = [hints[f] for f in fields if dataclasses.is_dataclass(hints[f])]
        names = [f for f in fields if not dataclasses.is_dataclass(hints[f])]
        names += [sub.name for config in nested for sub in dataclasses.fields(config)]
        assert len(names) == len(set(names)), name


def test_needs_data_and_distills_are_properties_of_every_step():
    recipe = parse_recipe({"name": "r", "steps": [{"prune": {}}, {"palette": {"weighting": "norm"}}]})
    assert not recipe.needs_data and not recipe.distills
    recipe = parse_recipe({"name": "r", "steps": [{"gap_head": {"distill": "kl"}}]})
    assert recipe.needs_data and recipe.distills
    assert (
        parse_recipe({"name": "r", "steps": [{"pq": {"objective": "weights", "epochs": 0}}]}).steps[0].needs_data
        is False
    )


@pytest.mark.parametrize(
    "step,hint",
    [
        ({"trained_quantization": {"per_layer_bits": {"conv*": 8}}}, "overrides: {pattern: {bits: value}}"),
        ({"prune": {"per_layer": {"fc1": 0.9}}}, "overrides: {pattern: {sparsity: value}}"),
    ],
)
def test_an_older_per_layer_spelling_says_how_to_write_it_now(step, hint):
    with pytest.raises(RecipeError, match=re.escape(hint)):
        parse_recipe({"name": "old", "steps": [step]})
