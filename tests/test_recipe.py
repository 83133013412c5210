"""A bad recipe stops before any work with one line naming the field path; nothing is written."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from hfdistill.errors import RecipeError
from hfdistill.recipe import load_recipe, parse_recipe, reference_markdown


def good(glue: Path, **over) -> dict:
    r = {"name": "t", "model": "minilm-l6", "tasks": ["sst2"], "glue_dir": str(glue),
         "stages": [{"name": "teacher", "kind": "finetune", "max_steps": 2}]}
    r.update(over)
    return r


def stage(**kw) -> dict:
    return {"name": "teacher", "kind": "finetune", **kw}


# (id, recipe changes, expected message fragment). `G` stands for the GLUE folder.
BAD = [
    ("unknown top-level key", {"foo": 1}, "foo: unknown key"),
    ("name missing", {"name": None}, "name:"),
    ("seed wrong type", {"seed": "abc"}, "seed: input should be a valid integer"),
    ("unknown task", {"tasks": ["sst3"]}, "tasks[0]: input should be 'cola'"),
    ("empty task list", {"tasks": []}, "tasks: must not be empty"),
    ("task listed twice", {"tasks": ["sst2", "sst2"]}, "tasks: a task is listed twice"),
    ("missing model folder", {"model": "./no/such/model"}, "model: model folder"),
    ("missing glue folder", {"glue_dir": "/no/such/glue"}, "glue_dir: folder '/no/such/glue' not found"),
    ("negative max_train_samples", {"max_train_samples": -5}, "max_train_samples: must be > 0"),
    ("zero max_eval_samples", {"max_eval_samples": 0}, "max_eval_samples: must be > 0"),
    ("too long sequences", {"max_seq_length": 4096}, "max_seq_length: must be <= 512"),
    ("no stages", {"stages": []}, "stages: must not be empty"),
    ("unknown stage kind", {"stages": [{"name": "a", "kind": "bake"}]}, "stages[0]: unknown stage kind 'bake'"),
    ("stage without kind", {"stages": [{"name": "a"}]}, "stages[0]: needs a `kind`"),
    ("unknown stage key", {"stages": [stage(learning_rat=1e-4)]}, "stages[0].learning_rat: unknown key"),
    ("negative learning rate", {"stages": [stage(learning_rate=-1)]}, "stages[0].learning_rate: must be > 0"),
    ("warmup ratio above 1", {"stages": [stage(warmup_ratio=2)]}, "stages[0].warmup_ratio: must be <= 1"),
    ("lora rank zero", {"stages": [stage(lora={"r": 0})]}, "stages[0].lora.r: must be > 0"),
    ("batch size wrong type", {"stages": [stage(batch_size="big")]}, "stages[0].batch_size: input should be"),
    ("duplicate stage name", {"stages": [stage(), stage()]}, "stages[1].name: 'teacher' is used by an earlier"),
    ("parent is not an earlier stage", {"stages": [stage(), {"name": "b", "kind": "finetune", "from": "nope"}]},
     "stages[1].from: 'nope' is not an earlier stage"),
    ("first stage names a parent", {"stages": [stage(**{"from": "teacher"})]},
     "stages[0].from: 'teacher' is not an earlier stage"),
    ("stage named like the base model", {"stages": [stage(name="model")]},
     "stages[0].name: 'model' is reserved for the base model"),
    ("student_from is not an earlier stage",
     {"stages": [stage(), {"name": "student", "kind": "distill", "student_from": "general"}]},
     "stages[1].student_from: 'general' is not an earlier stage"),
    ("task without a train split", {"tasks": ["qnli"]}, "tasks[0]: qnli: no train split"),
    ("bad stage name", {"stages": [stage(name="has space")]}, "stages[0].name: string should match pattern"),
    ("distill temperature not positive",
     {"stages": [stage(), {"name": "student", "kind": "distill", "temperature": 0}]},
     "stages[1].temperature: must be > 0"),
]


@pytest.mark.parametrize("case,change,expected", BAD, ids=[b[0] for b in BAD])
def test_bad_recipe_is_refused_with_field_path(case, change, expected, glue_dir, tmp_path):
    data = good(glue_dir, **change)
    data = {k: v for k, v in data.items() if v is not None}
    if "output_dir" not in data:
        data["output_dir"] = str(tmp_path / "run")
    with pytest.raises(RecipeError) as e:
        parse_recipe(data, tmp_path, source="r.yaml")
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith("r.yaml: ")
    assert expected in msg, msg


def test_from_model_starts_a_later_stage_from_the_base_model(glue_dir, tmp_path):
    r = parse_recipe(good(glue_dir, stages=[stage(), {"name": "b", "kind": "finetune", "from": "model"},
                                            {"name": "c", "kind": "finetune"}]), tmp_path)
    assert [r.parent_of(i) for i in range(3)] == [None, None, "b"]


def test_invalid_yaml_names_the_line(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text("name: x\ntasks: [sst2\nstages: []\n")
    with pytest.raises(RecipeError, match=r"r.yaml: invalid YAML at line \d+"):
        load_recipe(p)


def test_a_list_is_not_a_recipe(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text("- a\n- b\n")
    with pytest.raises(RecipeError, match="a recipe is a YAML mapping"):
        load_recipe(p)


def test_relative_paths_resolve_against_the_recipe_file(glue_dir, tmp_path):
    (tmp_path / "sub").mkdir()
    rel = Path("..") / Path(*([".."] * (len((tmp_path / "sub").parts) - 1))) / str(glue_dir).lstrip("/")
    p = tmp_path / "sub" / "r.yaml"
    p.write_text(yaml.safe_dump(good(rel, output_dir="out")))
    r = load_recipe(p)
    assert r.glue_dir == glue_dir
    assert r.output_dir == (tmp_path / "sub" / "out").resolve()


def test_glue_dir_defaults_to_the_environment(glue_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("HFDISTILL_GLUE_DIR", str(glue_dir))
    data = good(glue_dir)
    del data["glue_dir"]
    r = parse_recipe(data, tmp_path)
    assert r.resolved_glue_dir() == glue_dir
    monkeypatch.delenv("HFDISTILL_GLUE_DIR")
    assert parse_recipe(data, tmp_path).resolved_glue_dir() is None  # → hub_dataset nyu-mll/glue


def test_cli_run_of_bad_recipe_exits_2_and_writes_nothing(glue_dir, tmp_path):
    out = tmp_path / "never"
    p = tmp_path / "bad.yaml"
    p.write_text(yaml.safe_dump(good(glue_dir, output_dir=str(out), stages=[stage(learning_rate=0)])))
    for cmd in ("run", "validate"):
        proc = subprocess.run([sys.executable, "-m", "hfdistill", cmd, str(p)], capture_output=True, text=True)
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.strip() == "hfdistill: error: bad.yaml: stages[0].learning_rate: must be > 0"
    assert not out.exists()


def test_validate_accepts_the_shipped_recipes(glue_dir, monkeypatch):
    monkeypatch.setenv("HFDISTILL_GLUE_DIR", str(glue_dir))
    recipes = sorted((Path(__file__).parents[1] / "recipes").glob("*.yaml"))
    assert recipes
    for p in recipes:
        load_recipe(p)


def test_recipe_reference_documents_every_field():
    ref = reference_markdown()
    for key in ("max_train_samples", "glue_dir", "hub_dataset", "stages", "`kind: finetune`", "learning_rate",
                "lora"):
        assert key in ref
    assert "|  |" not in ref.replace("| `", "")  # no undocumented field


def test_docs_recipe_reference_is_generated_from_the_code():
    """docs/recipe-reference.md is `hfdistill recipe-reference` output: regenerate it when a field changes."""
    doc = (Path(__file__).parents[1] / "docs" / "recipe-reference.md").read_text()
    assert doc.strip() == reference_markdown().strip()
