"""The embedded Hub's web page in a real headless Chromium: the model list, and a model's rendered card with
its results table and plot. Skips when no Chromium is installed (CI: `apt-get install -y chromium`)."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from hfdistill.hub import push_run
from hfdistill.schema import PublishConfig

BROWSER = next((b for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)
pytestmark = pytest.mark.skipif(BROWSER is None, reason="no chromium (apt-get install -y chromium)")


def dump_dom(url: str, profile) -> str:
    """The DOM after the page (and its load handlers) ran."""
    args = [BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--virtual-time-budget=5000", "--dump-dom", url]
    out = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-1500:]
    return out.stdout


def test_browser_shows_the_model_list_and_a_rendered_card_with_table_and_plot(tiny_run, hub_server, tmp_path):
    push_run(tiny_run, PublishConfig(repo_prefix="me/tiny"), endpoint=hub_server.url, log=lambda m: None)

    index = dump_dom(f"{hub_server.url}/", tmp_path / "profile1")
    assert re.findall(r'href="/(me/tiny-[\w-]+)"', index) == \
        ["me/tiny-student-8bit-sst2", "me/tiny-student-sst2", "me/tiny-teacher-sst2"]

    page = dump_dom(f"{hub_server.url}/me/tiny-student-8bit-sst2", tmp_path / "profile2")
    card = page[page.index('<article id="card">'):page.index("</article>")]
    assert "<h1>me/tiny-student-8bit-sst2</h1>" in card
    results = card[card.index("Results on GLUE SST2"):]
    table = results[results.index("<table>"):results.index("</table>")]
    assert "<th>retention vs. teacher</th>" in table and "<td>0.8810</td>" in table and "<td>0.9120</td>" in table
    assert '<a href="/me/tiny-student-sst2">student</a>' in table
    assert re.search(r'<img src="/me/tiny-student-8bit-sst2/resolve/[0-9a-f]{40}/(\./)?size_vs_score.png"', card)
    assert 'data-images-loaded="1"' in page  # the plot was fetched and decoded by the browser
    assert "---" not in card and "model-index" not in card  # metadata is not shown as text
