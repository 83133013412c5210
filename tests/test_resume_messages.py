"""Resume says what it does (Ctrl-C, re-run, changed recipe); finished runs leave no empty .work/ folders and
model files are readable by others (issue 15)."""

import signal
import stat
import subprocess
import sys
import time

import yaml


def _recipe(tmp_path, tiny_bert, glue_dir, steps, lr=1e-3, every=5):
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump({
        "name": "r", "model": str(tiny_bert), "tasks": ["sst2"], "glue_dir": str(glue_dir), "max_train_samples": 256,
        "max_eval_samples": 40, "max_seq_length": 32, "latency_samples": 30,
        "stages": [{"name": "teacher", "kind": "finetune", "max_steps": steps, "batch_size": 8,
                    "checkpoint_every": every, "learning_rate": lr}]}))
    return path


def _run(path, **kw):
    return subprocess.Popen([sys.executable, "-m", "hfdistill", "run", str(path), "--no-push"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def test_ctrl_c_keeps_the_checkpoint_and_the_rerun_says_it_resumes(tmp_path, tiny_bert, glue_dir):
    # a checkpoint every 50 steps, not 5: on a quiet machine (58 steps/s) a checkpoint every 5 steps kept the loop
    # inside accelerate's save_state half the time, and a Ctrl-C landing there was once lost (the run finished)
    path = _recipe(tmp_path, tiny_bert, glue_dir, steps=5000, every=50)
    ckpts = tmp_path / "runs" / "r" / ".work" / "teacher" / "sst2" / "checkpoints"
    proc = _run(path)
    deadline = time.time() + 240
    while time.time() < deadline and not any((d / "hfdistill_state.json").is_file()
                                             for d in (ckpts.iterdir() if ckpts.is_dir() else [])):
        time.sleep(0.2)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    kept = max(int(d.name.split("_")[1]) for d in ckpts.iterdir())
    assert f"teacher/sst2: interrupted — checkpoint at step {kept} kept, re-run the recipe to resume" in err
    assert "hfdistill: interrupted" in err
    assert not (tmp_path / "runs" / "r" / "teacher" / "sst2").exists()  # no half-written model folder

    # the same recipe again: it resumes from that checkpoint (and says so); interrupt it once it has
    proc = _run(path)
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if "resuming teacher/sst2 from step" in line:
            proc.send_signal(signal.SIGINT)
            break
    proc.communicate(timeout=120)
    assert any(f"resuming teacher/sst2 from step {kept}/5000" in line for line in seen), "".join(seen)[-3000:]

    # a changed stage (max_steps is part of its key) cannot continue that checkpoint: it says it starts afresh
    path.write_text(path.read_text().replace("max_steps: 5000", "max_steps: 6"))
    out, err = _run(path).communicate(timeout=600)
    assert "discarding the checkpoint of an earlier attempt (the stage or its inputs changed since)" in out, err


def test_finished_runs_leave_no_empty_work_folders_and_readable_files(tmp_path, tiny_bert, glue_dir):
    path = _recipe(tmp_path, tiny_bert, glue_dir, steps=3)
    proc = _run(path)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-2000:]
    run = tmp_path / "runs" / "r"
    assert not (run / ".work").exists()
    for f in (run / "teacher" / "sst2").iterdir():
        mode = stat.S_IMODE(f.stat().st_mode)
        assert mode & 0o044 == 0o044, f"{f.name} is {oct(mode)}"  # group and others can read
    # a changed recipe entry: the stage says why it runs again
    path.write_text(path.read_text().replace("learning_rate: 0.001", "learning_rate: 0.002"))
    out, _ = _run(path).communicate(timeout=600)
    assert "(re-run: the recipe entry, its parent or the data changed since this folder was made)" in out
