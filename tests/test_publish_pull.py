"""Pulling a published model back: a tampered file fails the pull by name (exit 1), and `--verify` re-measures
the card's claims on the full dev split with the real evaluation (tiny random BERT, the real SST-2 dev set)."""

from __future__ import annotations

import hashlib
import json

import pytest
from huggingface_hub import HfApi, ModelCard

from hfdistill.cli import main
from hfdistill.evaluation import evaluate_folder
from hfdistill.publish.pull import pull
from hfdistill.publish.push import push_folder
from tests.hub_fixtures import TOKEN

FAST = (0.05, 0.05)


def _flip_a_byte(storage, local_file) -> None:
    """Corrupt the server's stored copy of `local_file` (objects/<sha256[:2]>/<sha256>)."""
    sha = hashlib.sha256(local_file.read_bytes()).hexdigest()
    blob = storage / "objects" / sha[:2] / sha
    assert blob.is_file(), f"no blob for {local_file.name} under {storage}"
    blob.chmod(0o644)
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF
    blob.write_bytes(bytes(data))


def test_a_tampered_file_fails_the_pull_naming_it(tiny_run, hub_server, tmp_path, capsys):
    folder = tiny_run / "teacher" / "sst2"
    push_folder(folder, "local/t", endpoint=hub_server.url, retry_waits=FAST, log=lambda line: None)
    _flip_a_byte(hub_server.storage, folder / "model.safetensors")
    _flip_a_byte(hub_server.storage, folder / "config.json")

    code = main(["pull", "local/t", "--endpoint", hub_server.url, "--local-dir", str(tmp_path / "p")])
    out = capsys.readouterr()
    assert code == 1, out.err
    assert "hash mismatch: model.safetensors" in out.out and "hash mismatch: config.json" in out.out
    assert out.out.strip().endswith("FAILED") and "Traceback" not in out.err


# ------------------------------------------------------------------------------------------------- --verify
@pytest.fixture
def published(tiny_run, hub_server):
    """The tiny teacher as a publisher with `max_eval_samples: 4` would push it: its card claims the accuracy
    measured on the first 4 dev rows. Returns (measured on the full dev split, on 4 rows)."""
    folder = tiny_run / "teacher" / "sst2"
    full = evaluate_folder(folder, "sst2", max_seq_length=64, latency_samples=30)
    four = evaluate_folder(folder, "sst2", max_samples=4, max_seq_length=64, latency_samples=30)
    (folder / "metrics.json").write_text(json.dumps(four, indent=2))
    lineage = json.loads((folder / "lineage.json").read_text())
    lineage["data"]["max_eval_samples"] = 4
    (folder / "lineage.json").write_text(json.dumps(lineage, indent=2))
    from hfdistill.publish.cards import write_card

    write_card(folder, repo_ids={folder: "local/teacher"})
    push_folder(folder, "local/teacher", endpoint=hub_server.url, retry_waits=FAST, log=lambda line: None)
    return full["metrics"]["accuracy"], four["metrics"]["accuracy"], full["num_examples"]


def _claim(hub_server, tmp_path, accuracy: float) -> None:
    """Edit the pushed card's model-index to claim `accuracy` (as a hand-edited card would)."""
    api = HfApi(endpoint=hub_server.url, token=TOKEN)
    readme = api.hf_hub_download("local/teacher", "README.md", local_dir=tmp_path / f"card-{accuracy}")
    card = ModelCard.load(readme)
    card.data.eval_results[0].metric_value = accuracy
    api.upload_file(path_or_fileobj=str(card).encode(), path_in_repo="README.md", repo_id="local/teacher")


def test_verify_measures_on_the_full_dev_split_not_the_cards_few_rows(published, hub_server, tmp_path, capsys):
    full, four, n_dev = published
    res = pull("local/teacher", local_dir=tmp_path / "a", endpoint=hub_server.url, verify=True)
    (check,) = res.checks
    assert res.examples == {"sst2": n_dev} and n_dev == 872
    assert check.claimed == pytest.approx(four, abs=1e-6) and check.measured == pytest.approx(full, abs=1e-6)
    assert res.ok == (four - full <= 0.005)
    assert "re-evaluated on 872 dev examples" in "\n".join(res.report())

    few = pull("local/teacher", local_dir=tmp_path / "b", endpoint=hub_server.url, verify=True, max_samples=4)
    assert few.examples == {"sst2": 4} and few.checks[0].measured == pytest.approx(four, abs=1e-6) and few.ok

    assert main(["pull", "local/teacher", "--endpoint", hub_server.url, "--local-dir", str(tmp_path / "c"),
                 "--verify", "--max-samples", "4"]) == 0
    assert "re-evaluated on 4 dev examples" in capsys.readouterr().out


def test_verify_fails_an_inflated_claim_and_accepts_a_modest_one(published, hub_server, tmp_path, capsys):
    full, _, _ = published
    _claim(hub_server, tmp_path, round(full + 0.2, 6))
    code = main(["pull", "local/teacher", "--endpoint", hub_server.url, "--local-dir", str(tmp_path / "a"),
                 "--verify"])
    out = capsys.readouterr().out
    assert code == 1 and "CLAIM TOO HIGH" in out and out.strip().endswith("FAILED")
    assert f"claimed {full + 0.2:.4f}, measured {full:.4f}" in out

    _claim(hub_server, tmp_path, round(full - 0.1, 6))  # claiming less than the model does is no error
    modest = pull("local/teacher", local_dir=tmp_path / "b", endpoint=hub_server.url, verify=True)
    assert modest.ok and modest.checks[0].measured == pytest.approx(full, abs=1e-6)
    within = pull("local/teacher", local_dir=tmp_path / "c", endpoint=hub_server.url, verify=True,
                  tolerance=0.25)
    assert within.ok
