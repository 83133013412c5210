"""The whole chain on a tiny BERT: fine-tune → distil → prune → quantize, every model evaluated, carded, pushed
to the embedded Hub with the real huggingface_hub client, then pulled back, loaded and re-verified on GLUE."""

from __future__ import annotations

import json

import yaml

from hfdistill.folder import ModelFolder
from hfdistill.publish.pull import pull
from hfdistill.pipeline import run
from tests.hub_fixtures import TOKEN


def test_recipe_chain_publishes_every_model_and_pull_verify_reproduces_the_card(
        tiny_bert, glue_dir, tmp_path, hub_server, monkeypatch):
    monkeypatch.setenv("HFDISTILL_GLUE_DIR", str(glue_dir))
    monkeypatch.setenv("HFDISTILL_PUBLISH_TOKEN", TOKEN)  # the recipe names the endpoint: opt in to a token
    recipe = tmp_path / "chain.yaml"
    recipe.write_text(yaml.safe_dump({
        "name": "chain", "model": str(tiny_bert), "tasks": ["mrpc"], "max_seq_length": 64,
        "max_train_samples": 96, "max_eval_samples": 40, "latency_samples": 30, "output_dir": str(tmp_path / "run"),
        "stages": [
            {"name": "teacher", "kind": "finetune", "max_steps": 6, "batch_size": 16, "learning_rate": 1e-3},
            {"name": "student", "kind": "distill", "layers": [0], "architecture": "distilbert", "max_steps": 6,
             "batch_size": 16},
            {"name": "pruned", "kind": "prune", "from": "teacher", "sparsity": 0.5, "iterations": 2,
             "num_examples": 32},
            {"name": "student-8bit", "kind": "quantize", "from": "student", "method": "bnb-8bit"},
        ],
        "publish": {"endpoint": hub_server.url, "repo_prefix": "local/chain"},
    }))
    results = run(recipe)
    assert [(r.name, r.skipped) for r in results] == [("teacher", False), ("student", False), ("pruned", False),
                                                      ("student-8bit", False)]
    for r in results:
        folder = ModelFolder(r.path)
        assert folder.is_complete() and folder.metrics["num_examples"] == 40
        card = (r.path / "README.md").read_text()
        assert f"{folder.metrics['score']:.4f}" in card  # the measured score, not a placeholder
        assert str(glue_dir) not in card  # a published card does not reveal local paths
    student = ModelFolder(results[1].path)
    assert student.config["model_type"] == "distilbert" and student.config["n_layers"] == 1
    assert ModelFolder(results[2].path).metrics["params"] < ModelFolder(results[0].path).metrics["params"]

    # every model is on the Hub, parents first, with its card, metrics and lineage
    from huggingface_hub import HfApi

    api = HfApi(endpoint=hub_server.url)
    for r in results:
        files = set(api.list_repo_files(f"local/chain-{r.name}-mrpc"))
        assert {"README.md", "config.json", "metrics.json", "lineage.json"} <= files

    # pull the student back, check hashes, re-run the evaluation its card claims on the same 40 GLUE dev rows
    got = pull("local/chain-student-mrpc", local_dir=tmp_path / "pulled", endpoint=hub_server.url, verify=True,
               max_samples=40)
    assert got.ok and got.verified and not got.hash_mismatches and got.checks and got.examples == {"mrpc": 40}
    assert all(c.ok for c in got.checks)
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(str(got.path))
    assert model.config.model_type == "distilbert"

    # a card that claims more than the model does fails verification
    student_dir = results[1].path
    metrics = json.loads((student_dir / "metrics.json").read_text())
    metrics["metrics"]["accuracy"] = min(1.0, metrics["metrics"]["accuracy"] + 0.2)
    (student_dir / "metrics.json").write_text(json.dumps(metrics))
    from hfdistill.hub import push_run

    push_run(tmp_path / "run")
    bad = pull("local/chain-student-mrpc", local_dir=tmp_path / "pulled2", endpoint=hub_server.url, verify=True,
               max_samples=40)
    assert bad.verified and not bad.ok
