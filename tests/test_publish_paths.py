"""What a run publishes, as a reader sees it: no absolute path of the publisher's machine in any pushed file,
GLUE class names instead of 0/1, and the recipe stage as its author wrote it.

One real run (tiny local BERT base folder, the local GLUE folder, a text file in `unlabeled` and `text_file`):
finetune → distill → prune, and quantize to int8-cpu and to bnb-8bit with recovery adapters."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from huggingface_hub import HfApi, snapshot_download

from hfdistill.errors import HubError
from hfdistill.hub import push_run
from hfdistill.pipeline import run

STAGES = ["teacher", "student", "pruned", "int8", "q8"]


@pytest.fixture(scope="module")
def local_run(tiny_bert, glue_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("machine-paths")
    (root / "extra.txt").write_text("a fine film\nawful stuff\nwhat a waste of two hours\n")
    recipe = root / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({
        "name": "local", "model": str(tiny_bert), "tasks": ["sst2"], "glue_dir": str(glue_dir),
        "max_seq_length": 32, "max_train_samples": 64, "max_eval_samples": 32, "latency_samples": 30,
        "stages": [
            {"name": "teacher", "kind": "finetune", "max_steps": 3, "batch_size": 16, "learning_rate": 1e-3},
            {"name": "student", "kind": "distill", "layers": [0], "max_steps": 3, "batch_size": 16,
             "unlabeled": ["extra.txt"]},
            {"name": "pruned", "kind": "prune", "from": "teacher", "sparsity": 0.5, "iterations": 1,
             "num_examples": 16, "text_file": "extra.txt"},
            {"name": "int8", "kind": "quantize", "from": "student", "method": "int8-cpu"},
            {"name": "q8", "kind": "quantize", "from": "student", "method": "bnb-8bit",
             "recover": {"max_steps": 2, "batch_size": 8}},
        ]}))
    results = run(recipe, publish=False)
    assert [r.name for r in results] == STAGES and not any(r.skipped for r in results)
    return root / "runs" / "local", recipe


def test_nothing_pushed_names_a_path_of_the_machine_and_resuming_still_works(local_run, hub_server, glue_dir,
                                                                           tiny_bert, tmp_path,
                                                                           tmp_path_factory):
    run_dir, recipe = local_run
    push_run(run_dir, endpoint=hub_server.url, log=lambda line: None)
    forbidden = {str(tmp_path_factory.getbasetemp()).encode(), str(run_dir).encode(), str(glue_dir).encode(),
                 str(tiny_bert).encode(), str(Path(glue_dir).resolve()).encode()}
    api = HfApi(endpoint=hub_server.url)
    checked = 0
    for stage in STAGES:
        local = Path(snapshot_download(f"local/local-{stage}-sst2", local_dir=tmp_path / stage,
                                       endpoint=hub_server.url))
        for f in local.rglob("*"):
            if f.is_file() and ".cache" not in f.relative_to(local).parts:
                data = f.read_bytes()
                assert not [p for p in forbidden if p in data], f"{stage}/{f.relative_to(local)}"
                checked += 1
        assert "lineage.json" in api.list_repo_files(f"local/local-{stage}-sst2")
    assert checked >= 5 * 8

    lineage = json.loads((run_dir / "pruned" / "sst2" / "lineage.json").read_text())
    assert lineage["data"]["source"].startswith("glue/SST-2@")
    assert lineage["base_model"].startswith(f"{tiny_bert.name}@") and lineage["parent"] == "../../teacher/sst2"
    assert lineage["stage_config"]["text_file"].startswith("extra.txt@")
    teacher = json.loads((run_dir / "teacher" / "sst2" / "lineage.json").read_text())
    assert teacher["parent"] == teacher["base_model"]
    metrics = json.loads((run_dir / "teacher" / "sst2" / "metrics.json").read_text())
    assert metrics["data_source"] == lineage["data"]["source"]

    again = run(recipe, publish=False)  # the stage keys still match: nothing re-runs
    assert all(r.skipped for r in again)


def test_every_saved_model_and_card_names_the_glue_classes(local_run):
    run_dir, _ = local_run
    for stage in STAGES:
        folder = run_dir / stage / "sst2"
        config = json.loads((folder / "config.json").read_text())
        assert config["id2label"] == {"0": "negative", "1": "positive"}, stage
        assert config["label2id"] == {"negative": 0, "positive": 1}, stage
        assert "Labels: `0` = negative, `1` = positive." in (folder / "README.md").read_text(), stage


def _stage_yaml(card: str) -> dict:
    block = card.split("The recipe stage that produced it:", 1)[1].split("```yaml\n", 1)[1].split("```", 1)[0]
    (stage,) = yaml.safe_load(block)
    return stage


def test_the_card_shows_the_stage_as_written_with_the_parent_it_resolved_to(local_run):
    run_dir, _ = local_run
    student = _stage_yaml((run_dir / "student" / "sst2" / "README.md").read_text())
    assert set(student) == {"name", "kind", "from", "layers", "max_steps", "batch_size", "unlabeled"}
    assert student["from"] == "teacher" and student["layers"] == [0]
    assert len(student["unlabeled"]) == 1 and student["unlabeled"][0].startswith("extra.txt@")
    int8 = _stage_yaml((run_dir / "int8" / "sst2" / "README.md").read_text())
    assert int8 == {"name": "int8", "kind": "quantize", "from": "student", "method": "int8-cpu"}
    q8 = _stage_yaml((run_dir / "q8" / "sst2" / "README.md").read_text())
    assert q8["recover"] == {"max_steps": 2, "batch_size": 8}


def test_records_of_an_older_run_are_published_without_its_paths(tiny_run, hub_server, glue_dir, tmp_path):
    """Runs made before the fix recorded absolute paths; a push names them by public name, keeping the stage key."""
    folder = tiny_run / "student" / "sst2"
    (tiny_run / "extra.txt").write_text("more text\n")
    lineage = json.loads((folder / "lineage.json").read_text())
    lineage["data"]["source"] = str(glue_dir)
    lineage["stage_config"]["unlabeled"] = [str(tiny_run / "extra.txt")]
    (folder / "lineage.json").write_text(json.dumps(lineage))
    metrics = json.loads((folder / "metrics.json").read_text())
    (folder / "metrics.json").write_text(json.dumps({**metrics, "data_source": str(glue_dir)}))

    push_run(tiny_run, endpoint=hub_server.url, log=lambda line: None)
    got = Path(snapshot_download("local/tinyrun-student-sst2", local_dir=tmp_path / "s", endpoint=hub_server.url))
    published = json.loads((got / "lineage.json").read_text())
    assert published["data"]["source"].startswith("glue/SST-2@") and published["stage_key"] == "key-student"
    assert published["stage_config"]["unlabeled"][0].startswith("extra.txt@")
    assert json.loads((got / "metrics.json").read_text())["data_source"] == published["data"]["source"]
    assert str(glue_dir) not in (got / "README.md").read_text()


def test_a_file_naming_the_run_folder_is_not_published(tiny_run, hub_server):
    (tiny_run / "teacher" / "sst2" / "notes.md").write_text(f"trained in {tiny_run}/teacher\n")
    with pytest.raises(HubError, match=r"teacher/sst2/notes\.md names the local path .*run; refusing"):
        push_run(tiny_run, endpoint=hub_server.url, log=lambda line: None)
    assert not list(HfApi(endpoint=hub_server.url).list_models())
