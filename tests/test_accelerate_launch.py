"""`accelerate launch` with two CPU processes: data-parallel training, one writer, a clean end."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml

from hfdistill.folder import ModelFolder
from tests.conftest import copy_tokenizer


def test_two_process_accelerate_launch_runs_a_recipe(tiny_bert, glue_dir, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({
        "name": "ddp", "model": str(tiny_bert), "tasks": ["mrpc"], "glue_dir": str(glue_dir),
        "max_seq_length": 64, "max_train_samples": 64, "max_eval_samples": 41, "latency_samples": 30,
        "output_dir": str(tmp_path / "run"),
        "stages": [{"name": "teacher", "kind": "finetune", "max_steps": 4, "batch_size": 8, "log_every": 1}]}))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
         "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
         "-m", "hfdistill", "run", str(recipe)],
        capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = tmp_path / "run" / "teacher" / "mrpc"
    folder = ModelFolder(out)
    assert folder.is_complete()
    m = folder.metrics
    # 41 dev rows sharded over 2 processes and gathered without duplicates
    assert m["num_examples"] == 41
    assert folder.lineage["info"]["steps"] == 4 and folder.lineage["processes"] == 2
    # one writer: a single completion line, no leftovers
    assert proc.stdout.count("teacher: score") == 1
    assert not list((tmp_path / "run").rglob(".*.tmp"))
    assert json.loads((out / "metrics.json").read_text())["latency_ms"]["num_samples"] == 30


# ------------------------------------------------------------------------------------- launch helpers and more runs
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


def launch(*args: str, processes: int = 2, machines: int = 1, rank: int = 0, port: int = 0,
           precision: str = "no") -> list[str]:
    """`accelerate launch` of `args` with the CPU DDP flags (several "machines": one launcher per machine rank,
    all meeting at 127.0.0.1:`port`)."""
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
           "--num_machines", str(machines), "--mixed_precision", precision, "--dynamo_backend", "no"]
    if machines > 1:
        cmd += ["--machine_rank", str(rank), "--main_process_ip", "127.0.0.1", "--main_process_port", str(port)]
    return cmd + list(args)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


SCORE_SCRIPT = '''
import json, sys
import torch
from hfdistill import glue
from hfdistill.evaluation import evaluate_model, predict
from hfdistill.models import load_model, load_tokenizer
from hfdistill.pipeline import make_accelerator

out, jobs = sys.argv[1], json.loads(sys.argv[2])
acc = make_accelerator()
results = {}
for name, (model_dir, task, glue_dir) in jobs.items():
    data = glue.load_task(task, glue_dir=glue_dir, max_eval_samples=41, splits=("dev",))
    model, tok = load_model(model_dir, device=acc.device), load_tokenizer(model_dir)
    rows = [0]
    model.register_forward_hook(lambda m, a, kw, o: rows.__setitem__(0, rows[0] + len(kw["input_ids"])),
                                with_kwargs=True)
    preds, labels = predict(model, tok, data.dev, data.task, 64, batch_size=3, accelerator=acc)
    seen = acc.gather(torch.tensor([rows[0]])).tolist()
    m = evaluate_model(model, tok, data, max_seq_length=64, batch_size=3, latency_samples=30, accelerator=acc,
                       model_dir=model_dir)
    results[name] = {"preds": preds.tolist(), "labels": labels.tolist(), "metrics": m["metrics"],
                     "score": m["score"], "num_examples": m["num_examples"], "rows_per_process": seen,
                     "latency": "latency_ms" in m}
if acc.is_main_process:
    json.dump(results, open(out, "w"))
'''


def scoring_models(tiny_bert, tmp_path, glue_dir):
    """A classifier that predicts both classes on the MRPC dev rows (its bias splits them at the median), and a
    regression head (float predictions)."""
    import torch
    from transformers import BertForSequenceClassification

    from hfdistill import glue
    from hfdistill.models import load_tokenizer

    torch.manual_seed(0)
    cls = BertForSequenceClassification.from_pretrained(str(tiny_bert), num_labels=2).eval()
    dev = glue.encode(glue.load_task("mrpc", glue_dir=glue_dir, max_eval_samples=41, splits=("dev",)).dev,
                      load_tokenizer(tiny_bert), 64, with_labels=False)
    with torch.no_grad():
        logits = torch.cat([cls(**{k: torch.tensor([v]) for k, v in ex.items()}).logits for ex in dev])
        cls.classifier.bias[1] -= float((logits[:, 1] - logits[:, 0]).median())
    cls.save_pretrained(tmp_path / "cls")
    reg = BertForSequenceClassification.from_pretrained(str(tiny_bert), num_labels=1, problem_type="regression")
    reg.save_pretrained(tmp_path / "reg")
    for d in ("cls", "reg"):
        copy_tokenizer(tiny_bert, tmp_path / d)
    return tmp_path / "cls", tmp_path / "reg"


def test_two_processes_score_the_dev_set_exactly_as_one(tiny_bert, glue_dir, fixture_glue_dir, tmp_path):
    """Dev scoring is sharded (each process scores about half the rows, whole batches) and gathered with
    gather_for_metrics: predictions, their order and the metrics equal one process's exactly, including an odd
    number of rows (41 MRPC rows in batches of 3: the last shard is padded with duplicates that must be dropped)."""
    from hfdistill import glue
    from hfdistill.evaluation import evaluate_model, predict, torch_threads
    from hfdistill.models import load_model, load_tokenizer

    cls, reg = scoring_models(tiny_bert, tmp_path, glue_dir)
    jobs = {"mrpc": [str(cls), "mrpc", str(glue_dir)], "stsb": [str(reg), "stsb", str(fixture_glue_dir)]}
    (tmp_path / "score.py").write_text(SCORE_SCRIPT)
    proc = subprocess.run(launch(str(tmp_path / "score.py"), str(tmp_path / "two.json"), json.dumps(jobs)),
                          capture_output=True, text=True, env=ENV, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    two = json.loads((tmp_path / "two.json").read_text())
    for name, (model_dir, task, gdir) in jobs.items():
        data = glue.load_task(task, glue_dir=gdir, max_eval_samples=41, splits=("dev",))
        model, tok = load_model(model_dir), load_tokenizer(model_dir)
        with torch_threads(1):  # as each launched process (OMP_NUM_THREADS=1)
            preds, labels = predict(model, tok, data.dev, data.task, 64, batch_size=3)
            one = evaluate_model(model, tok, data, max_seq_length=64, batch_size=3, latency_samples=30)
        got = two[name]
        n = len(data.dev)
        assert got["preds"] == preds.tolist() and got["labels"] == labels.tolist()
        assert got["metrics"] == one["metrics"] and got["score"] == one["score"] and got["num_examples"] == n
        assert got["latency"]  # measured on the main process
        per = got["rows_per_process"]
        assert len(per) == 2 and all(r < n for r in per) and n <= sum(per) < n + 2 * 3, per  # sharded, not repeated
    assert len(set(two["mrpc"]["preds"])) == 2  # both classes predicted: the order of the shards matters


def tiny_recipe(path, tiny_bert, glue_dir, **stage) -> str:
    path.write_text(yaml.safe_dump({
        "name": "nodes", "model": str(tiny_bert), "tasks": ["mrpc"], "glue_dir": str(glue_dir),
        "max_seq_length": 64, "max_train_samples": 64, "max_eval_samples": 41, "latency_samples": 30,
        "output_dir": str(path.parent / "run"),
        "stages": [{"name": "teacher", "kind": "finetune", "batch_size": 8, "log_every": 1, **stage}]}))
    return str(path)


def start_machines(recipe: str, tmp_path, port: int, precision: str = "no") -> list[subprocess.Popen]:
    """Two launchers, as on two machines (one process each), sharing the run folder."""
    return [subprocess.Popen(launch("-m", "hfdistill", "run", recipe, machines=2, rank=rank, port=port,
                                    precision=precision),
                             stdout=open(tmp_path / f"rank{rank}.out", "w"),
                             stderr=open(tmp_path / f"rank{rank}.err", "w"), env=ENV, text=True)
            for rank in (0, 1)]


@pytest.mark.slow
def test_two_machines_run_a_recipe_end_to_end(tiny_bert, glue_dir, tmp_path):
    """`--num_machines 2 --machine_rank 0|1 --main_process_ip --main_process_port`: one process per "machine",
    the launcher's `--mixed_precision bf16` applied and recorded, one writer."""
    recipe = tiny_recipe(tmp_path / "r.yaml", tiny_bert, glue_dir, max_steps=4)
    procs = start_machines(recipe, tmp_path, free_port(), precision="bf16")
    codes = [p.wait(timeout=600) for p in procs]
    assert codes == [0, 0], (tmp_path / "rank0.err").read_text()[-3000:] + (tmp_path / "rank1.err").read_text()[-3000:]
    folder = ModelFolder(tmp_path / "run" / "teacher" / "mrpc")
    assert folder.is_complete()
    assert folder.lineage["processes"] == 2 and folder.lineage["mixed_precision"] == "bf16"
    assert folder.lineage["info"]["steps"] == 4 and folder.metrics["num_examples"] == 41
    out = [(tmp_path / f"rank{r}.out").read_text() for r in (0, 1)]
    assert out[0].count("teacher: score") == 1 and "teacher: score" not in out[1]  # only the main process writes


@pytest.mark.slow
def test_a_rank_that_dies_stops_the_other_and_a_rerun_resumes(tiny_bert, glue_dir, tmp_path):
    """Kill the second machine's process mid-training: the first exits non-zero within a bounded time, no model
    folder appears, and a re-run (here on one process) resumes from the last checkpoint."""
    import signal
    import time

    import psutil

    recipe = tiny_recipe(tmp_path / "r.yaml", tiny_bert, glue_dir, max_steps=200, checkpoint_every=2)
    procs = start_machines(recipe, tmp_path, free_port())
    checkpoints = tmp_path / "run" / ".work" / "teacher" / "mrpc" / "checkpoints"
    started = time.time()
    try:
        while not list(checkpoints.glob("*/hfdistill_state.json")):
            assert time.time() - started < 300 and all(p.poll() is None for p in procs), "no checkpoint written"
            time.sleep(0.1)
        workers = [c for c in psutil.Process(procs[1].pid).children(recursive=True)
                   if "hfdistill" in c.cmdline()]
        assert len(workers) == 1
        workers[0].send_signal(signal.SIGKILL)
        killed = time.time()
        codes = [p.wait(timeout=120) for p in procs]
        waited = time.time() - killed
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert codes[0] != 0 and codes[1] != 0 and waited < 120, (codes, waited)
    assert "Connection" in (tmp_path / "rank0.err").read_text()  # gloo: the peer is gone
    run = tmp_path / "run"
    assert not (run / "teacher" / "mrpc").exists() and not list(run.rglob(".*.tmp"))
    assert list(checkpoints.glob("*/hfdistill_state.json"))  # the checkpoint survives

    rerun = subprocess.run([sys.executable, "-m", "hfdistill", "run", recipe], capture_output=True, text=True,
                           env=ENV, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "resuming teacher/mrpc from step" in rerun.stdout
    folder = ModelFolder(run / "teacher" / "mrpc")
    assert folder.is_complete() and folder.lineage["info"]["resumed_from_step"] >= 2
    assert folder.lineage["info"]["steps"] == 200
