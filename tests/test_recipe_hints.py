"""Validation reports every problem at once, with "did you mean" hints, and accepts GLUE folder names as tasks."""

import pytest

from hfdistill.errors import RecipeError
from hfdistill.recipe import parse_recipe, reference_markdown


def _parse(tmp_path, **data):
    base = {"name": "t", "tasks": ["sst2"], "output_dir": str(tmp_path / "run"),
            "stages": [{"name": "teacher", "kind": "finetune"}]}
    return parse_recipe({**base, **data}, tmp_path, source="r.yaml")


def test_every_problem_is_reported_at_once_on_one_line(tmp_path):
    with pytest.raises(RecipeError) as e:
        _parse(tmp_path, seed=-1, stages=[{"name": "teacher", "kind": "finetune", "learning_rate": 0,
                                           "max_step": 3}])
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("r.yaml: 3 problems: ")
    for part in ("seed: must be >= 0", "stages[0].learning_rate: must be > 0",
                 "stages[0].max_step: unknown key (did you mean `max_steps`?)"):
        assert part in msg, msg


@pytest.mark.parametrize("data,hint", [
    ({"max_seq_len": 64}, "max_seq_len: unknown key (did you mean `max_seq_length`?)"),
    ({"publish": {"endpont": "embedded"}}, "publish.endpont: unknown key (did you mean `endpoint`?)"),
    ({"stages": [{"name": "s", "kind": "distill", "temprature": 2}]},
     "stages[0].temprature: unknown key (did you mean `temperature`?)"),
    ({"stages": [{"name": "s", "kind": "finetune", "lora": {"rank": 4}}]}, "stages[0].lora.rank: unknown key"),
])
def test_unknown_keys_get_a_did_you_mean_hint_from_the_right_model(tmp_path, data, hint):
    with pytest.raises(RecipeError) as e:
        _parse(tmp_path, **data)
    assert hint in str(e.value)


def test_a_key_with_no_close_match_gets_no_hint(tmp_path):
    with pytest.raises(RecipeError) as e:
        _parse(tmp_path, zzzzzz=1)
    assert str(e.value) == "r.yaml: zzzzzz: unknown key"


@pytest.mark.parametrize("alias,name", [("SST-2", "sst2"), ("STS-B", "stsb"), ("CoLA", "cola"), ("MNLI", "mnli"),
                                        ("sst-2", "sst2"), ("QQP", "qqp")])
def test_glue_folder_names_are_task_aliases(tmp_path, monkeypatch, alias, name):
    monkeypatch.delenv("HFDISTILL_GLUE_DIR", raising=False)  # data from a hub dataset: no local files checked
    assert _parse(tmp_path, tasks=[alias], hub_dataset="nyu-mll/glue").tasks == [name]


def test_the_reference_documents_bounds():
    ref = reference_markdown()
    assert "| `latency_samples` | int | ≥ 30 |" in ref
    assert "| `max_seq_length` | int | > 0, ≤ 512 |" in ref


def test_publish_storage_is_relative_to_the_recipe(tmp_path):
    (tmp_path / "sub").mkdir()
    r = _parse(tmp_path / "sub", publish={"endpoint": "embedded", "storage": "../hub"})
    assert r.publish.storage == (tmp_path / "hub").resolve()
    assert _parse(tmp_path, publish={"endpoint": "embedded"}).publish.storage == (tmp_path / "hub-storage").resolve()


def test_stage_fields_can_differ_per_task(tmp_path):
    r = _parse(tmp_path, hub_dataset="nyu-mll/glue", tasks=["sst2", "rte"], stages=[
        {"name": "teacher", "kind": "finetune", "learning_rate": 1e-4, "epochs": 2,
         "per_task": {"rte": {"learning_rate": 3e-5, "epochs": 5}}}])
    st = r.stages[0]
    assert (st.for_task("sst2").learning_rate, st.for_task("sst2").epochs) == (1e-4, 2)
    assert (st.for_task("rte").learning_rate, st.for_task("rte").epochs) == (3e-5, 5)
    assert "per_task" not in st.identity() and st.for_task("rte").identity() != st.for_task("sst2").identity()
    assert st.for_task("sst2").identity() == st.identity()  # an override for RTE does not re-run SST-2
    assert st.for_task("rte").model_dump(exclude_unset=True, by_alias=True) == {
        "name": "teacher", "kind": "finetune", "learning_rate": 3e-5, "epochs": 5}


@pytest.mark.parametrize("per_task,message", [
    ({"rte": {"learning_rate": -1}}, "stages[0]: per_task.rte.learning_rate: Input should be greater than 0"),
    ({"rtee": {"epochs": 1}}, "stages[0]: per_task: unknown task 'rtee'"),
    ({"rte": {"kind": "distill"}}, "stages[0]: per_task.rte: kind cannot differ per task"),
    ({"rte": {"epochz": 1}}, "per_task.rte.epochz: Extra inputs are not permitted"),
])
def test_bad_per_task_overrides_are_refused(tmp_path, per_task, message):
    with pytest.raises(RecipeError) as e:
        _parse(tmp_path, hub_dataset="nyu-mll/glue", tasks=["sst2", "rte"],
               stages=[{"name": "teacher", "kind": "finetune", "per_task": per_task}])
    assert message in str(e.value)
