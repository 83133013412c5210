"""Issue 12.13: with HF_HUB_OFFLINE=1 (what offline users set) the embedded Hub still works through hfdistill."""

import os
import subprocess
import sys


def test_push_and_pull_with_the_embedded_hub_while_offline(tiny_run, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf-home"), "HF_HUB_DISABLE_XET": "1"}
    storage = tmp_path / "hub"

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "hfdistill", *map(str, args)], env=env, capture_output=True,
                              text=True, timeout=300)

    push = cli("push", tiny_run, "--endpoint", "embedded", "--storage", storage)
    assert push.returncode == 0, push.stderr[-2000:]
    assert "3 of 3 model(s) changed" in push.stdout
    pull = cli("pull", "local/tinyrun-student-sst2", "--endpoint", "embedded", "--storage", storage,
               "--local-dir", tmp_path / "got")
    assert pull.returncode == 0, pull.stderr[-2000:]
    assert pull.stdout.strip().endswith("OK") and (tmp_path / "got" / "model.safetensors").is_file()
