"""Model cards: Hub-valid metadata, every number taken from the run's files, no empty sections."""

from __future__ import annotations

import json
import re

from huggingface_hub import ModelCard, metadata_load

from hfdistill.publish.cards import PLOT_FILE, write_card
from tests.hub_fixtures import METRICS

IDS = {"teacher/sst2": "me/tinyrun-teacher-sst2", "student/sst2": "me/tinyrun-student-sst2",
       "student-8bit/sst2": "me/tinyrun-student-8bit-sst2"}


def test_card_metadata_round_trips_through_modelcard_and_metadata_load(tiny_run):
    path = write_card(tiny_run / "student-8bit" / "sst2", repo_ids=IDS)
    meta = metadata_load(path)
    assert meta["library_name"] == "transformers"
    assert meta["pipeline_tag"] == "text-classification"
    assert meta["license"] == "apache-2.0"  # inherited from the packaged base model's card
    assert {"hfdistill", "quantization", "glue"} <= set(meta["tags"])
    assert meta["datasets"] == ["nyu-mll/glue"]
    assert meta["base_model"] == "me/tinyrun-student-sst2" and meta["base_model_relation"] == "quantized"

    card = ModelCard.load(path)
    (result,) = card.data.eval_results
    assert (result.task_type, result.dataset_type, result.dataset_config, result.dataset_split) == \
        ("text-classification", "nyu-mll/glue", "sst2", "validation")
    assert (result.metric_type, result.metric_value) == ("accuracy", METRICS["student-8bit"][0])
    again = ModelCard(str(card))  # re-parse the serialised card: same metadata
    assert again.data.to_dict() == card.data.to_dict()


def test_first_stage_links_its_hub_base_model_and_distill_is_a_finetune(tiny_run):
    teacher = metadata_load(write_card(tiny_run / "teacher" / "sst2", repo_ids=IDS))
    assert teacher["base_model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert teacher["base_model_relation"] == "finetune"
    student = metadata_load(write_card(tiny_run / "student" / "sst2", repo_ids=IDS))
    assert student["base_model"] == IDS["teacher/sst2"] and "distillation" in student["tags"]


def test_card_body_reports_the_measured_numbers_against_the_teacher(tiny_run):
    folder = tiny_run / "student-8bit" / "sst2"
    text = write_card(folder, repo_ids=IDS).read_text()
    metrics = json.loads((folder / "metrics.json").read_text())
    teacher_acc, student_acc, acc = (METRICS[s][0] for s in ("teacher", "student", "student-8bit"))
    assert f"{acc:.4f}" in text and f"{teacher_acc:.4f}" in text
    assert f"{100 * acc / teacher_acc:.1f}%" in text          # retention vs. the teacher
    assert f"{100 * acc / student_acc:.1f}%" in text          # retention vs. the parent
    assert f"{METRICS['teacher'][2] / METRICS['student-8bit'][2]:.2f}×" in text  # speed-up
    assert f"{metrics['disk_bytes'] / 1e6:.1f} MB" in text
    assert "temperature" not in text  # the quantize stage's own config, not its parent's
    assert "bits: 8" in text and "quantization.method" in text
    assert "teacher** (finetune)" not in text and "[teacher](/me/tinyrun-teacher-sst2) (finetune)" in text
    assert "2,000 training examples" in text  # the small training subset is a stated limitation
    assert "trust_remote_code" not in text and "peft" not in text  # a plain transformers model


def test_card_has_no_placeholders_or_empty_sections(tiny_run):
    text = write_card(tiny_run / "student" / "sst2", repo_ids=IDS).read_text()
    body = text.split("---", 2)[2]
    for bad in ("None", "nan", "TODO", "{{", "[More Information Needed]", "??"):
        assert bad not in body, bad
    sections = re.split(r"^## ", body, flags=re.M)[1:]
    assert [s.splitlines()[0] for s in sections] == [
        "How it was made", "Results on GLUE SST2 (dev)", "Size vs. score", "How to use", "Limitations"]
    assert all(s.strip().count("\n") >= 2 for s in sections)


def test_size_vs_score_plot_is_written_and_deterministic(tiny_run):
    folder = tiny_run / "student" / "sst2"
    write_card(folder, repo_ids=IDS)
    png = (folder / PLOT_FILE).read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 5000
    write_card(folder, repo_ids=IDS)
    assert (folder / PLOT_FILE).read_bytes() == png  # same run → same bytes → re-push is a no-op


def test_model_without_metrics_gets_a_card_that_says_so(tiny_run):
    folder = tiny_run / "student" / "sst2"
    (folder / "metrics.json").unlink()
    text = write_card(folder, repo_ids=IDS).read_text()
    meta = metadata_load(folder / "README.md")
    assert "model-index" not in meta and "has not been evaluated" in text
    assert "## Results" in text and "| model |" not in text
    assert "0.8870" not in text  # its (deleted) numbers appear nowhere


def test_card_without_repo_ids_loads_from_the_local_folder(tiny_run):
    folder = tiny_run / "teacher" / "sst2"
    text = write_card(folder).read_text()
    assert f'from_pretrained("{folder.resolve()}")' in text
    assert metadata_load(folder / "README.md")["base_model"] == "sentence-transformers/all-MiniLM-L6-v2"


def test_how_to_use_an_int8_cpu_model_is_plain_code(tiny_run):
    folder = tiny_run / "student-8bit" / "sst2"
    (folder / "model.onnx").write_bytes(b"an ONNX graph")  # what makes the card an int8-cpu card
    text = write_card(folder, repo_ids=IDS).read_text()
    assert "__import__" not in text
    assert 'path = snapshot_download("me/tinyrun-student-8bit-sst2")\n' in text
    assert "from huggingface_hub import snapshot_download\n" in text
    local = write_card(folder).read_text()  # no repo yet: the code loads the folder itself
    assert f'path = "{folder.resolve()}"\n' in local and "snapshot_download" not in local


def test_how_to_use_names_hf_endpoint_on_the_embedded_hub_and_no_pull_for_unpublished_cards(tiny_run):
    from hfdistill.publish.cards import write_card
    from hfdistill.schema import PublishConfig

    folder = tiny_run / "student" / "sst2"
    text = write_card(folder).read_text()  # no repo id known: an unpublished card
    assert "hfdistill pull" not in text and "has not been published" in text
    text = write_card(folder, repo_ids={folder: "local/tinyrun-student-sst2"},
                      publish=PublishConfig(endpoint="embedded")).read_text()
    assert "HF_ENDPOINT=http://127.0.0.1:8787" in text
    assert "hfdistill pull local/tinyrun-student-sst2 --verify --endpoint embedded" in text
    text = write_card(folder, repo_ids={folder: "me/tinyrun-student-sst2"}, publish=PublishConfig()).read_text()
    assert "HF_ENDPOINT" not in text and "hfdistill pull me/tinyrun-student-sst2 --verify`" in text


def test_every_card_lists_the_runs_models_of_its_task_with_the_teacher_as_reference(tiny_run):
    from hfdistill.publish.cards import write_card

    text = write_card(tiny_run / "teacher" / "sst2").read_text()
    table = text.split("| model |", 1)[1].split("\n\n", 1)[0]
    assert "teacher (this model)" in table and "student " in table and "student-8bit" in table
    assert "2.00×" in table and "2.50×" in table  # speed-ups against the teacher (4.0 ms → 2.0 / 1.6 ms)
