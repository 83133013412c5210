"""Sweeps: the matrix expands into uniquely named stages that share their common prefix (one teacher, one teacher
cache), a re-run skips every finished variant, the Pareto front is right on hand-made points and is written,
plotted and tagged after a sweep, and a target stops the exploration at the first variant that meets it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

import hfdistill
from hfdistill import cli
from hfdistill.errors import RecipeError
from hfdistill.folder import RunModel
from hfdistill.recipe import Target, parse_recipe
from hfdistill.sweeps import TargetTracker, meets, pareto_front, task_front
from tests.conftest import FIXTURE_GLUE


def _recipe(tiny_bert: Path, out: Path, sweep: dict, stages: list | None = None, **extra) -> dict:
    return {"name": "sw", "model": str(tiny_bert), "tasks": ["stsb"], "glue_dir": str(FIXTURE_GLUE),
            "output_dir": str(out), "max_seq_length": 32, "latency_samples": 30,
            "stages": stages or [
                {"name": "teacher", "kind": "finetune", "max_steps": 4, "batch_size": 4, "learning_rate": 1e-3},
                {"name": "student", "kind": "distill", "max_steps": 4, "batch_size": 4, "cos_layers": "last"},
                {"name": "pruned", "kind": "prune", "sparsity": 0.5, "iterations": 1, "num_examples": 8},
                {"name": "quant", "kind": "quantize", "method": "int8-cpu"}],
            "sweep": sweep, **extra}


# ------------------------------------------------------------------------------------------------ expansion
def test_sweep_expands_into_named_stages_rewired_to_their_variant(tiny_bert, tmp_path):
    data = _recipe(tiny_bert, tmp_path / "run", {"student.num_layers": [1, 2], "pruned.sparsity": [0, 0.5],
                                                 "quant.method": ["none", "int8-cpu"]})
    r = parse_recipe(data, tmp_path)
    got = [(s.name, s.from_) for s in r.stages]
    assert got == [("teacher", None), ("student-l1", "teacher"), ("quant-l1-int8-cpu", "student-l1"),
                   ("pruned-l1-s0.5", "student-l1"), ("quant-l1-s0.5-int8-cpu", "pruned-l1-s0.5"),
                   ("student-l2", "teacher"), ("quant-l2-int8-cpu", "student-l2"),
                   ("pruned-l2-s0.5", "student-l2"), ("quant-l2-s0.5-int8-cpu", "pruned-l2-s0.5")]
    assert [s.num_layers for s in r.stages if s.kind == "distill"] == [1, 2]
    assert [s.sparsity for s in r.stages if s.kind == "prune"] == [0.5, 0.5]
    # sparsity 0 = no pruning: the variant's quantized model comes from the student itself; `none` skips quant
    assert [(v.name, v.stages) for v in r.variants[:4]] == [
        ("l1-s0-no-quant", ("teacher", "student-l1")),
        ("l1-s0-int8-cpu", ("teacher", "student-l1", "quant-l1-int8-cpu")),
        ("l1-s0.5-no-quant", ("teacher", "student-l1", "pruned-l1-s0.5")),
        ("l1-s0.5-int8-cpu", ("teacher", "student-l1", "pruned-l1-s0.5", "quant-l1-s0.5-int8-cpu"))]
    assert len(r.variants) == 8
    again = parse_recipe(data, tmp_path)  # deterministic
    assert [s.model_dump() for s in again.stages] == [s.model_dump() for s in r.stages]
    assert [v.name for v in again.variants] == [v.name for v in r.variants]


@pytest.mark.parametrize("sweep, message", [
    ({"studnet.num_layers": [1]}, "sweep.studnet.num_layers: no stage named 'studnet' (stages: teacher, student, "
                                  "pruned, quant) (did you mean `student`?)"),
    ({"student.num_layer": [1]}, "sweep.student.num_layer: stage 'student' (distill) has no field 'num_layer' to "
                                 "sweep (did you mean `num_layers`?)"),
    ({"student.name": ["x"]}, "sweep.student.name: stage 'student' (distill) has no field 'name' to sweep"),
    ({"student": [1]}, "sweep.student: name a stage field"),
    ({"student.num_layers": []}, "sweep.student.num_layers: needs at least one value"),
    ({"student.num_layers": [1, 1]}, "sweep.student.num_layers: a value is listed twice"),
    ({"student.num_layers": [0, 1]}, "sweep.student.num_layers: value 0: must be > 0"),
    ({"student.num_layers": [1, 0]}, "sweep.student.num_layers: stage 'student-l0' (student.num_layers=0): "
                                     "num_layers: must be > 0"),
    ({"student.text_column": ["a b"]}, "sweep.student.text_column: makes stage name 'student-text_column-a b', "
                                       "not a valid repo name"),
])
def test_bad_sweep_is_one_line_naming_the_key(tiny_bert, tmp_path, sweep, message):
    with pytest.raises(RecipeError) as e:
        parse_recipe(_recipe(tiny_bert, tmp_path / "run", sweep), tmp_path, source="r.yaml")
    assert str(e.value).startswith(f"r.yaml: {message}") and "\n" not in str(e.value)


# ---------------------------------------------------------------------------------------------------- front
def test_pareto_front_keeps_exactly_the_non_dominated_points_and_ties():
    pts = [(0.90, 10.0, 100),   # 0 teacher: best score
           (0.85, 5.0, 50),     # 1 on the front
           (0.80, 6.0, 60),     # 2 dominated by 1 (worse everywhere)
           (0.85, 5.0, 60),     # 3 dominated by 1 (same score and latency, bigger)
           (0.70, 2.0, 20),     # 4 fastest and smallest
           (0.70, 2.0, 20),     # 5 equal to 4: a tie, both stay
           (0.86, 9.0, 40),     # 6 trade-off: better score than 1, slower, smaller
           (0.60, 3.0, 30)]     # 7 dominated by 4
    assert pareto_front(pts) == [0, 1, 4, 5, 6]
    assert pareto_front([(0.5, 1.0, 1)]) == [0]
    assert pareto_front([]) == []


def _model(stage: str, score: float, ms: float, mb: float, threads: int = 1, base: bool = False) -> RunModel:
    lat = {"median": ms, "cpu": "x", "threads": threads, "batch_size": 1, "max_seq_length": 32, "num_samples": 30}
    return RunModel(Path(f"/run/{stage}/sst2"), {"name": stage, "task": "sst2", "kind": "distill",
                                                 "parent_kind": "base" if base else "stage"},
                    {"score": score, "latency_ms": lat, "disk_bytes": int(mb * 1e6), "device": "cpu",
                     "majority_baseline": {"score": 0.5, "margin": 0.03}})


def test_front_compares_only_latencies_measured_alike_and_leaves_off_guessers():
    models = [_model("teacher", 0.90, 20.0, 90, base=True), _model("student", 0.88, 10.0, 45),
              _model("slow-student", 0.87, 12.0, 50), _model("other-threads", 0.89, 1.0, 10, threads=4),
              _model("guesser", 0.51, 1.0, 1)]
    tf = task_front("sst2", models)
    assert tf.reference == "teacher" and tf.front == ["teacher", "student"]
    notes = {p.model: p.note for p in tf.points}
    assert "other conditions" in notes["other-threads"] and "majority" in notes["guesser"]
    assert notes["slow-student"] == ""  # compared, and dominated


def test_target_bounds_are_all_required():
    teacher, student = _model("teacher", 0.90, 20.0, 90, base=True), _model("student", 0.885, 10.0, 45)
    assert meets(student, Target(retention=0.98), teacher)                       # 98.3 %
    assert not meets(student, Target(retention=0.99), teacher)
    assert meets(student, Target(retention=0.98, max_latency_ms=10.0, max_disk_mb=45), teacher)
    assert not meets(student, Target(retention=0.98, max_latency_ms=9.9), teacher)
    assert not meets(student, Target(max_disk_mb=44.9), teacher)
    assert not meets(_model("guesser", 0.51, 1.0, 1), Target(max_disk_mb=100), teacher)
    with pytest.raises(ValueError):
        Target()


# ------------------------------------------------------------------------------------------- a real sweep
def test_sweep_shares_the_teacher_resumes_and_tags_the_front(tiny_bert, tmp_path, capsys):
    run_dir = tmp_path / "run"
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(_recipe(tiny_bert, run_dir, {"student.num_layers": [1, 2],
                                                               "pruned.sparsity": [0, 0.5]},
                                           stages=_recipe(tiny_bert, run_dir, {})["stages"][:3]), sort_keys=False))
    results = hfdistill.run(path, publish=False)
    names = ["teacher", "student-l1", "pruned-l1-s0.5", "student-l2", "pruned-l2-s0.5"]
    assert [(r.name, r.skipped) for r in results] == [(n, False) for n in names]
    assert sorted(p.name for p in run_dir.iterdir() if p.is_dir() and not p.name.startswith(".")) == sorted(names)
    for n in ("student-l1", "student-l2"):  # both students distil the one teacher, from one cache entry
        lineage = json.loads((run_dir / n / "stsb" / "lineage.json").read_text())
        assert lineage["parent_stage"] == "teacher"
    assert len(list((run_dir / ".cache" / "teacher").iterdir())) == 1
    copy = yaml.safe_load((run_dir / "recipe.yaml").read_text())
    assert "sweep" not in copy and [s["name"] for s in copy["stages"]] == names

    front = json.loads((run_dir / "front.json").read_text())["tasks"]["stsb"]
    pts = [m for m in front["models"] if not m["note"]]
    on = [pts[i]["model"] for i in pareto_front([(m["score"], m["latency_ms"], m["disk_bytes"]) for m in pts])]
    assert front["front"] == on and on and (run_dir / front["plot"]).is_file()
    from huggingface_hub import metadata_load

    for n in names:
        tags = metadata_load(run_dir / n / "stsb" / "README.md")["tags"]
        assert ("pareto" in tags) == (n in on), (n, tags)
    assert "Pareto front" in (run_dir / "SUMMARY.md").read_text()
    assert "## Pareto front: stsb" in capsys.readouterr().out

    again = hfdistill.run(path, publish=False)  # resumable like a single run: every variant is finished
    assert [(r.name, r.skipped) for r in again] == [(n, True) for n in names]

    capsys.readouterr()
    assert cli.main(["front", str(run_dir), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["tasks"]["stsb"]["front"] == on


def test_target_met_by_the_first_variant_stops_the_sweep(tiny_bert, tmp_path):
    run_dir = tmp_path / "run"
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(_recipe(tiny_bert, run_dir, {}, stages=_recipe(tiny_bert, run_dir, {})
                                           ["stages"][:2]), sort_keys=False))
    front = hfdistill.sweep(path, {"student.num_layers": [1, 2]}, target={"max_disk_mb": 1000}, publish=False)
    assert (run_dir / "student-l1" / "stsb").is_dir()
    assert not (run_dir / "student-l2").exists() and not (run_dir / ".work" / "student-l2").exists()
    hit = front.targets["stsb"]
    assert hit["met"] and hit["model"] == "student-l1" and hit["variants_explored"] == 1 and hit["variants"] == 2
    assert json.loads((run_dir / "front.json").read_text())["targets"]["stsb"]["model"] == "student-l1"


def test_tracker_checks_variants_in_the_listed_order(tiny_bert, tmp_path):
    """A variant is checked only when all its stages are done and the variants before it were checked."""
    r = parse_recipe(_recipe(tiny_bert, tmp_path / "run", {"student.num_layers": [1, 2], "pruned.sparsity": [0.5]},
                             target={"max_disk_mb": 1}), tmp_path)
    t = TargetTracker(r, "stsb")
    assert [v.stages for v in t.variants] == [
        ("teacher", "student-l1", "pruned-l1-s0.5", "quant-l1-s0.5"),
        ("teacher", "student-l2", "pruned-l2-s0.5", "quant-l2-s0.5")]
    for s in ("teacher", "student-l1", "pruned-l1-s0.5"):
        assert t.done(s, tmp_path / "missing") is None and t.checked == 0


def test_students_of_different_depths_share_one_teacher_pass_and_train_as_if_alone(tiny_bert, tmp_path):
    """`cos_layers: matched` students keeping teacher layer [1] and layers [0, 1] align different teacher hidden
    states ([2] and [1, 2]): the first student's teacher pass stores the union, the second reads it (no second
    pass), and each trains exactly as it does on its own (its L_cos reads its own layer out of the union)."""
    from safetensors.torch import load_file

    stages = _recipe(tiny_bert, tmp_path, {})["stages"][:2]
    stages[1] = {**stages[1], "cos_layers": "matched"}
    sweep_dir, alone_dir = tmp_path / "sweep", tmp_path / "alone"
    hfdistill.run(parse_recipe(_recipe(tiny_bert, sweep_dir, {"student.layers": [[1], [0, 1]]}, stages=stages),
                               tmp_path), publish=False)
    entries = [json.loads(p.read_text()) for p in (sweep_dir / ".cache" / "teacher").glob("*/meta.json")]
    assert [e["hidden_layers"] for e in entries] == [[1, 2]]  # one teacher pass: the union of both students' layers
    caches = {n: json.loads((sweep_dir / n / "stsb" / "lineage.json").read_text())["info"]["teacher_cache"]
              for n in ("student-l1", "student-l0_1")}
    assert caches["student-l1"]["reused"] is False and caches["student-l0_1"]["reused"] is True
    assert caches["student-l1"]["key"] == caches["student-l0_1"]["key"]

    alone = {**_recipe(tiny_bert, alone_dir, {}, stages=[stages[0], {**stages[1], "layers": [1]}])}
    del alone["sweep"]
    hfdistill.run(parse_recipe(alone, tmp_path), publish=False)
    assert [json.loads(p.read_text())["hidden_layers"]
            for p in (alone_dir / ".cache" / "teacher").glob("*/meta.json")] == [[2]]
    got = load_file(sweep_dir / "student-l1" / "stsb" / "model.safetensors")
    ref = load_file(alone_dir / "student" / "stsb" / "model.safetensors")
    assert got.keys() == ref.keys() and all(torch.equal(got[k], ref[k]) for k in ref)  # the same layers aligned

    # `hfdistill plan` says the same before any work: one entry with both layers, written by the first student
    from hfdistill.planning import plan

    by = {s.stage: s for s in plan(parse_recipe(_recipe(tiny_bert, tmp_path / "p", {"student.layers": [[1], [0, 1]]},
                                                        stages=stages), tmp_path)).stages}
    assert by["student-l1"].teacher_cache_hidden_layers == 2 and by["student-l1"].teacher_cache_bytes > 0
    assert by["student-l0_1"].teacher_cache_bytes is None
    assert "teacher cache shared with student-l1 (no second teacher pass)" in by["student-l0_1"].notes
    # a `num_layers` student aligns the layers build_student keeps (2 of 2 here), not a prefix of the default choice
    alone_plan = {**alone, "stages": [stages[0], {**stages[1], "num_layers": 2}], "output_dir": str(tmp_path / "q")}
    assert plan(parse_recipe(alone_plan, tmp_path)).stages[1].teacher_cache_hidden_layers == 2


def test_a_cache_entry_serves_any_subset_of_its_layers_and_nothing_else(tiny_bert, tmp_path):
    from hfdistill.distillation.teacher_cache import cache_key, find_entry

    def entry(layers, precision="no", teacher="t"):
        path = tmp_path / "teacher" / cache_key(teacher, "d", 32, layers, precision)
        path.mkdir(parents=True)
        (path / "meta.json").write_text(json.dumps({"version": 2, "teacher_hash": teacher, "data_hash": "d",
                                                    "max_seq_length": 32, "hidden_layers": layers,
                                                    "precision": precision}))
        return path

    wide, narrow = entry([1, 2, 3, 4]), entry([2, 3])
    entry([1], precision="bf16")
    entry([1], teacher="other")
    assert find_entry(tmp_path, "t", "d", 32, [2, 3]) == narrow      # its own key
    assert find_entry(tmp_path, "t", "d", 32, [3]) == narrow         # the smallest entry holding the layers
    assert find_entry(tmp_path, "t", "d", 32, [1, 4]) == wide
    assert find_entry(tmp_path, "t", "d", 32, []) == narrow          # logits only: any entry of these inputs
    assert find_entry(tmp_path, "t", "d", 32, [5]) is None
    assert find_entry(tmp_path, "t", "d", 64, [2]) is None           # another length, precision or teacher: none
    assert find_entry(tmp_path, "t", "d", 32, [2], precision="bf16") is None
