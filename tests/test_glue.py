"""GLUE readers on every layout, metrics against hand-computed values, and `data check` on the real files."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys

import numpy as np
import pytest

from hfdistill import glue
from hfdistill.errors import DataError


def test_cola_has_no_header_and_reads_label_and_sentence(glue_dir):
    d = glue.load_task("cola", glue_dir)
    assert (len(d.train), len(d.dev), len(d.test)) == (8551, 1043, 1063)
    assert d.dev[0]["sentence1"] == "The sailors rode the breeze clear of the rocks."
    assert d.dev[0]["label"] == 1 and d.dev[0]["sentence2"] is None
    assert d.test[0]["label"] == -1


def test_sst2_reads_sentence_and_label(glue_dir):
    d = glue.load_task("sst2", glue_dir, splits=("dev", "test"))
    assert d.dev[0] == {"idx": 0, "sentence1": "it 's a charming and often affecting journey . ",
                        "sentence2": None, "label": 1}
    assert len(d.test) == 1821 and set(d.test["label"]) == {-1}


def test_mrpc_reads_quality_and_both_strings_despite_bom_and_stray_quotes(glue_dir):
    d = glue.load_task("mrpc", glue_dir)
    assert (len(d.train), len(d.dev), len(d.test)) == (3668, 408, 1725)
    assert d.dev[0]["label"] == 1
    assert d.dev[0]["sentence2"] == '"The foodservice pie business does not fit our long-term growth strategy.'


def test_qnli_maps_entailment_labels(glue_dir):
    d = glue.load_task("qnli", glue_dir)
    assert d.train is None and len(d.dev) == 5463
    assert d.dev[0]["label"] == 0 and d.dev[1]["label"] == 1  # entailment, not_entailment
    assert d.dev[0]["sentence1"].startswith("What came into force")


def test_wnli_reads_pairs(glue_dir):
    d = glue.load_task("wnli", glue_dir)
    assert (len(d.train), len(d.dev), len(d.test)) == (635, 71, 146)
    assert d.dev[0]["sentence2"] == "The hair has to be cleaned."


def test_stsb_is_regression_with_float_scores(fixture_glue_dir):
    d = glue.load_task("stsb", fixture_glue_dir)
    assert d.task.is_regression and d.task.num_labels == 1
    assert d.train[1]["label"] == pytest.approx(4.2)
    assert d.train[4]["sentence1"] == 'The "new" policy starts today.'
    assert all(math.isnan(x) for x in d.test["label"])


def test_qqp_reads_questions_and_duplicate_flag(fixture_glue_dir):
    d = glue.load_task("qqp", fixture_glue_dir)
    assert d.train[0]["sentence1"] == "How do I learn Python?" and d.train[0]["label"] == 1
    assert len(d.test) == 3 and d.test[0]["sentence2"] == "What is the best way to learn Python?"


def test_mnli_takes_gold_label_from_last_column_and_has_mismatched_dev(fixture_glue_dir):
    d = glue.load_task("mnli", fixture_glue_dir)
    ids = {n: i for i, n in enumerate(d.task.labels)}
    assert d.dev["label"][:3] == [ids["entailment"], ids["contradiction"], ids["neutral"]]
    assert len(d.extra_dev["dev_mismatched"]) == 4
    assert len(d.test) == 3


def test_rte_maps_not_entailment(fixture_glue_dir):
    d = glue.load_task("rte", fixture_glue_dir)
    assert d.train["label"] == [0, 1, 0, 1]


def test_limits_take_a_seeded_train_subset_and_the_first_dev_rows(glue_dir):
    a = glue.load_task("sst2", glue_dir, max_train_samples=50, max_eval_samples=10, seed=1)
    b = glue.load_task("sst2", glue_dir, max_train_samples=50, max_eval_samples=10, seed=1)
    assert len(a.train) == 50 and a.train["sentence1"] == b.train["sentence1"]
    assert a.dev["sentence1"] == glue.load_task("sst2", glue_dir, splits=("dev",)).dev["sentence1"][:10]


def test_malformed_row_is_named_with_file_and_line(tmp_path, fixture_glue_dir):
    shutil.copytree(fixture_glue_dir / "RTE", tmp_path / "RTE")
    with open(tmp_path / "RTE" / "dev.tsv", "a") as f:
        f.write("9\tonly two columns\n")
    with pytest.raises(DataError, match=r"RTE/dev.tsv line 6: expected 4 tab-separated columns, found 2"):
        glue.load_task("rte", tmp_path)
    with open(tmp_path / "RTE" / "train.tsv", "a") as f:
        f.write("9\ta\tb\tmaybe\n")
    with pytest.raises(DataError, match=r"train.tsv line 6: label 'maybe' is not one of"):
        glue.read_split(glue.TASKS["rte"], tmp_path, "train")


# ------------------------------------------------------------------------------------------------ metrics

def test_accuracy_and_f1_match_hand_computed_values():
    m = glue.compute_metrics("mrpc", np.array([1, 0, 1, 1]), np.array([1, 0, 0, 1]))
    assert m["accuracy"] == pytest.approx(0.75)
    assert m["f1"] == pytest.approx(0.8)  # tp=2 fp=1 fn=0: P=2/3, R=1
    assert glue.task_score("mrpc", m) == pytest.approx(0.775)


def test_matthews_correlation_matches_hand_computed_value():
    m = glue.compute_metrics("cola", np.array([1, 1, 0, 0]), np.array([1, 0, 0, 0]))
    assert m["matthews_correlation"] == pytest.approx(2 / math.sqrt(12))  # TP1 TN2 FP1 FN0


def test_pearson_and_spearman_match_hand_computed_values():
    m = glue.compute_metrics("stsb", np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 4.0]))
    assert m["pearson"] == pytest.approx(3 / (math.sqrt(2) * math.sqrt(42 / 9)))
    assert m["spearmanr"] == pytest.approx(1.0)


def test_mnli_score_is_matched_accuracy_only():
    m = glue.compute_metrics("mnli", np.array([0, 1, 2, 2]), np.array([0, 1, 2, 0]),
                             mismatched=(np.array([0, 0]), np.array([1, 1])))
    assert m == {"accuracy": 0.75, "accuracy_mismatched": 0.0}
    assert glue.task_score("mnli", m) == 0.75


def test_macro_score_is_mean_of_task_scores_times_100():
    assert glue.macro_score({"sst2": 0.9, "cola": 0.5, "mrpc": 0.7}) == pytest.approx(70.0)


# ------------------------------------------------------------------------------------------------ data check

def test_data_check_reports_the_real_row_counts(glue_dir):
    proc = subprocess.run([sys.executable, "-m", "hfdistill", "data", "check", "--glue-dir", str(glue_dir), "--json"],
                          capture_output=True, text=True, check=True)
    report = json.loads(proc.stdout)
    counts = {t: e["splits"] for t, e in report["tasks"].items()}
    assert counts == {
        "cola": {"train": 8551, "dev": 1043, "test": 1063},
        "sst2": {"train": 67349, "dev": 872, "test": 1821},
        "mrpc": {"train": 3668, "dev": 408, "test": 1725},
        "qnli": {"train": None, "dev": 5463, "test": 5463},
        "wnli": {"train": 635, "dev": 71, "test": 146},
    }
    assert sorted(report["missing"]) == ["mnli", "qqp", "rte", "stsb"]


def test_data_check_names_malformed_files_instead_of_crashing(tmp_path, fixture_glue_dir):
    shutil.copytree(fixture_glue_dir, tmp_path, dirs_exist_ok=True)
    (tmp_path / "QQP" / "dev.tsv").write_text("id\tquestion1\n1\tonly\n")
    proc = subprocess.run([sys.executable, "-m", "hfdistill", "data", "check", "--glue-dir", str(tmp_path), "--json"],
                          capture_output=True, text=True)
    assert proc.returncode == 1
    report = json.loads(proc.stdout)
    assert report["ok"] is False
    assert "QQP/dev.tsv: header" in report["tasks"]["qqp"]["errors"][0]
    assert report["tasks"]["stsb"]["splits"] == {"train": 8, "dev": 8, "test": 4}


def test_hub_dataset_is_read_with_datasets_load_dataset(tmp_path, glue_dir):
    """`hub_dataset:` goes through `datasets.load_dataset(id, task)`; here a local repo in nyu-mll/glue's layout
    (parquet per config and split, configs declared in its README) stands in for the Hub."""
    import pandas as pd

    rows = glue.load_task("mrpc", glue_dir, max_train_samples=20, max_eval_samples=12)
    (tmp_path / "mrpc").mkdir()
    for split, ds in (("train", rows.train), ("validation", rows.dev), ("test", rows.dev)):
        pd.DataFrame({"sentence1": list(ds["sentence1"]), "sentence2": list(ds["sentence2"]),
                      "label": list(ds["label"]) if split != "test" else [-1] * len(ds),
                      "idx": list(range(len(ds)))}).to_parquet(tmp_path / "mrpc" / f"{split}-00000-of-00001.parquet")
    (tmp_path / "README.md").write_text(
        "---\nconfigs:\n- config_name: mrpc\n  data_files:\n"
        "  - {split: train, path: mrpc/train-*}\n  - {split: validation, path: mrpc/validation-*}\n"
        "  - {split: test, path: mrpc/test-*}\n---\n")
    d = glue.load_task("mrpc", hub_dataset=str(tmp_path))
    assert d.source == f"hub:{tmp_path}"
    assert list(d.dev["sentence1"]) == list(rows.dev["sentence1"])
    assert list(d.dev["label"]) == list(rows.dev["label"]) and len(d.train) == 20
    with pytest.raises(DataError, match=r"hub_dataset .*\(cola/"):
        glue.load_task("cola", hub_dataset=str(tmp_path))


def test_data_check_of_a_folder_without_glue_tasks_says_what_it_expects(tmp_path):
    import json
    import subprocess
    import sys

    (tmp_path / "sst2").mkdir()  # a plausible mistake: lower-case task names instead of GLUE's folder names
    proc = subprocess.run([sys.executable, "-m", "hfdistill", "data", "check", "--glue-dir", str(tmp_path), "--json"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr
    report = json.loads(proc.stdout)
    assert report["ok"] is False and report["tasks"] == {}
    assert "SST-2" in report["problem"] and "train.tsv" in report["problem"]
