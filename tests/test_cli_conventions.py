"""The CLI follows the conventions users of `hf`, `git` and `accelerate` expect (issue 15)."""

import json
import socket
import subprocess
import sys

import pytest

from hfdistill.cli import build_parser


def _cli(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "hfdistill", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


def test_version():
    from hfdistill import __version__

    proc = _cli("--version")
    assert proc.returncode == 0 and proc.stdout.strip() == f"hfdistill {__version__}"


def _subparsers(parser):
    for action in parser._actions:
        if action.__class__.__name__ == "_SubParsersAction":
            for name, sub in action.choices.items():
                yield name, sub
                yield from ((f"{name} {n}", s) for n, s in _subparsers(sub))


def test_every_command_has_help_for_each_option_an_example_and_the_exit_codes():
    for name, sub in _subparsers(build_parser()):
        assert "examples:" in (sub.epilog or "") and "exit codes:" in sub.epilog, name
        for action in sub._actions:
            if action.dest in ("help",) or action.__class__.__name__ == "_SubParsersAction":
                continue
            assert action.help, f"{name}: {action.option_strings or action.dest} has no help text"


@pytest.mark.parametrize("command", [["validate"], ["eval"], ["data", "check"], ["push"], ["pull"], ["cache"]])
def test_json_is_offered_consistently(command):
    parser = build_parser()
    sub = dict(_subparsers(parser))[" ".join(command)]
    assert any("--json" in a.option_strings for a in sub._actions)
    assert any("--quiet" in a.option_strings for a in sub._actions)


def test_validate_json(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: r\ntasks: [SST-2]\nhub_dataset: nyu-mll/glue\nstages: [{name: t, kind: finetune}]\n")
    proc = _cli("validate", recipe, "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["ok"] and out["tasks"] == ["sst2"] and out["stages"] == [{"name": "t", "kind": "finetune"}]


def test_serving_on_a_busy_port_is_one_line_and_exit_2(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        proc = _cli("hub", "serve", "--storage", tmp_path / "hub", "--create", "--port", port)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"hfdistill: error: cannot serve on 127.0.0.1:{port}: "
                                                "the port is in use (another `hub serve`?): choose another with --port"]


def test_serving_or_pulling_a_folder_without_a_hub_says_so_and_creates_nothing(tmp_path):
    proc = _cli("hub", "serve", "--storage", tmp_path / "typo")
    assert proc.returncode == 2 and "holds no embedded Hub: pass --create" in proc.stderr
    proc = _cli("pull", "local/x", "--endpoint", "embedded", "--storage", tmp_path / "typo")
    assert proc.returncode == 2 and "holds no embedded Hub" in proc.stderr
    assert not (tmp_path / "typo").exists()


def test_push_dry_run_lists_repos_and_files_and_changes_nothing(tiny_run):
    readme = (tiny_run / "student" / "sst2" / "README.md")
    before = readme.read_text() if readme.exists() else None
    proc = _cli("push", tiny_run, "--dry-run", "--endpoint", "embedded", "--storage", tiny_run / "hub", "--json")
    assert proc.returncode == 0, proc.stderr
    plan = {p["model"]: p for p in json.loads(proc.stdout)}
    assert set(plan) == {"teacher/sst2", "student/sst2", "student-8bit/sst2"}
    assert plan["student/sst2"]["repo_id"] == "local/tinyrun-student-sst2"
    files = set(plan["student/sst2"]["files"])
    assert {"config.json", "model.safetensors", "README.md", ".hfdistill-files.json"} <= files
    assert not (tiny_run / "hub").exists()
    assert (readme.read_text() if readme.exists() else None) == before


def test_cache_command_shows_and_cleans(tmp_path):
    run = tmp_path / "run"
    for key in ("a" * 32, "b" * 32):
        (run / ".cache" / "teacher" / key).mkdir(parents=True)
        (run / ".cache" / "teacher" / key / "logits.npy").write_bytes(b"x" * 1000)
        (run / ".cache" / "teacher" / key / "meta.json").write_text(json.dumps({"num_examples": 7,
                                                                                "hidden_layers": []}))
    (run / "student" / "sst2").mkdir(parents=True)
    (run / "student" / "sst2" / "lineage.json").write_text(json.dumps({"info": {"teacher_cache": {"key": "a" * 32}}}))
    out = json.loads(_cli("cache", run, "--json").stdout)
    assert {e["key"][:1]: e["used_by"] for e in out} == {"a": ["student/sst2"], "b": []}
    proc = _cli("cache", run, "--clean")
    assert proc.returncode == 0 and "removed 1 entry" in proc.stdout
    assert [p.name[:1] for p in (run / ".cache" / "teacher").iterdir()] == ["a"]


def test_eval_reads_task_and_length_from_the_folder_and_keeps_library_noise_out(tiny_run, glue_dir):
    folder = tiny_run / "student" / "sst2"  # its lineage records task sst2 and max_seq_length 64
    proc = _cli("eval", folder, "--glue-dir", glue_dir, "--max-samples", 40, "--latency-samples", 30, "--json",
                timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(proc.stdout)
    assert res["task"] == "sst2" and res["latency_ms"]["max_seq_length"] == 64
    for noise in ("Loading weights", "LOAD REPORT", "pip install kernels", "FutureWarning"):
        assert noise not in proc.stderr
    bare = tiny_run / "bare"
    bare.mkdir()
    for f in folder.iterdir():
        if f.name not in ("metrics.json", "lineage.json"):
            (bare / f.name).write_bytes(f.read_bytes())
    proc = _cli("eval", bare, "--glue-dir", glue_dir)
    assert proc.returncode == 2 and "records no GLUE task" in proc.stderr and "--task" in proc.stderr
