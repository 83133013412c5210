"""`hf distill …`: hfdistill as an extension of huggingface_hub's own `hf` CLI, run through the real `hf` command.

`hf extensions install OWNER/hf-distill` pip-installs the package into a virtualenv and records its `hf-distill`
console script in `~/.local/share/hf/extensions/hf-distill/manifest.json`; `hf distill ARGS` then runs that
script with ARGS. Offline, the test writes the same manifest with huggingface_hub's own `ExtensionManifest` (what
the installer saves), pointing at the `hf-distill` script installed beside this Python, under a private HOME.
"""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


@pytest.fixture
def hf_home(tmp_path) -> dict[str, str]:
    """A HOME where `hf-distill` is registered as `hf extensions install` registers a Python extension."""
    from huggingface_hub.cli import extensions

    script = BIN / "hf-distill"
    if not script.is_file():
        pytest.fail(f"{script} is missing: reinstall hfdistill (pip install -e .) to create its console scripts")
    home = tmp_path / "home"
    env = {**os.environ, "HOME": str(home), "HF_HUB_DISABLE_UPDATE_CHECK": "1", "HF_HUB_OFFLINE": "1",
           "NO_COLOR": "1", "COLUMNS": "200"}
    folder = home / ".local" / "share" / "hf" / "extensions" / "hf-distill"
    extensions.ExtensionManifest(owner="hfdistill", repo="hf-distill", repo_id="hfdistill/hf-distill",
                                 short_name="distill", executable_path=str(script), type="python",
                                 installed_at=datetime.now(timezone.utc),
                                 description="Compress GLUE classifiers and publish them").save(folder)
    # the folder `hf` itself reads (its EXTENSIONS_ROOT under the HOME the subprocess gets)
    assert extensions.EXTENSIONS_ROOT == Path("~/.local/share/hf/extensions")
    return env


def _hf(env, *args):
    return subprocess.run([str(BIN / "hf"), *args], capture_output=True, text=True, env=env, cwd=REPO, timeout=120)


def test_hf_lists_and_runs_the_distill_extension(hf_home):
    listed = _hf(hf_home, "extensions", "list", "--format", "json")
    assert listed.returncode == 0, listed.stderr
    assert '"hf distill"' in listed.stdout and "hfdistill/hf-distill" in listed.stdout

    helped = _hf(hf_home, "distill", "--help")
    assert helped.returncode == 0, helped.stderr
    assert helped.stdout.startswith("usage: hf distill ")
    for command in ("run", "validate", "push", "pull", "webhook"):
        assert command in helped.stdout

    checked = _hf(hf_home, "distill", "validate", "recipes/quickstart.yaml")
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.strip().startswith("recipes/quickstart.yaml: OK — quickstart: tasks sst2; stages teacher "
                                             "(finetune), student (distill), student-int8 (quantize)")


def test_hf_distill_passes_usage_errors_and_exit_codes_through(hf_home):
    proc = _hf(hf_home, "distill", "validate")  # no recipe: argparse's one-line error, exit 2, nothing heavy loads
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == "hf distill validate: error: the following arguments are " \
                                                   "required: recipe"
