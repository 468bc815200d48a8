import pytest

from netshrink.errors import RecipeError
from netshrink.methods.prune import MagnitudePrune
from netshrink.methods.palette import WeightSharing
from netshrink.recipe import list_recipes, load_recipe, parse_recipe


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


@pytest.mark.parametrize("data,message", [
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
])
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
