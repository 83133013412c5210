"""`hfdistill leaderboard` and the embedded Hub's pages: an author's models in one table from their cards' metadata
(the model-index and the `hfdistill:` block), as text, Markdown, plot and a pushed summary README; the model list's
score, size and latency columns and their sort."""

from __future__ import annotations

import re

import httpx2

from hfdistill.cli import main
from hfdistill.publish.leaderboard import Entry, leaderboard, rows_of

QUIET = {"log": lambda _m: None, "progress": False, "retry_waits": (0.05,)}


def test_rows_group_a_stage_across_tasks_with_the_macro_score_and_means():
    entries = [Entry("me/t-sst2", "r", "teacher", "finetune", "sst2", 0.90, 1e6, 4e6, 4.0),
               Entry("me/t-mrpc", "r", "teacher", "finetune", "mrpc", 0.80, 1e6, 4e6, 6.0),
               Entry("me/s-sst2", "r", "student", "distill", "sst2", 0.88, 5e5, 2e6, 2.0, "me/t-sst2", 0.9778),
               Entry("me/x-sst2", "other", "student", "distill", "sst2", 0.95, 5e5, 2e6, 2.0)]
    tasks, rows = rows_of(entries)
    assert tasks == ["mrpc", "sst2"]
    assert [(r.name, round(r.macro, 2)) for r in rows] == [("other/student", 95.0), ("r/student", 88.0),
                                                           ("r/teacher", 85.0)]
    teacher = rows[2]
    assert teacher.scores == {"sst2": 90.0, "mrpc": 80.0} and teacher.latency_ms == 5.0
    assert rows[1].parent == "teacher" and rows[1].retention == 0.9778  # a parent of the author, by its stage


def test_leaderboard_reads_the_cards_writes_markdown_and_plot_and_pushes_a_summary_once(published_hub, tmp_path):
    board = leaderboard("me", endpoint=published_hub.url, out_dir=tmp_path / "board", push="me/leaderboard",
                        **QUIET)
    assert board.tasks == ["sst2"]
    assert [(r.name, r.kind, r.scores["sst2"], r.parent) for r in board.rows] == [
        ("tinyrun/teacher", "finetune", 91.2, "sentence-transformers/all-MiniLM-L6-v2"),
        ("tinyrun/student", "distill", 88.7, "teacher"), ("tinyrun/student-8bit", "quantize", 88.1, "student")]
    assert [r.latency_ms for r in board.rows] == [4.0, 2.0, 1.6] and board.rows[0].params == 1_050_000
    assert board.rows[2].retention == round(0.881 / 0.912, 4) and board.rows[0].retention is None
    text = board.text().splitlines()
    assert text[0].split()[:4] == ["model", "kind", "SST2", "macro"] and text[2].startswith("tinyrun/teacher")
    assert "| tinyrun/student-8bit | quantize | [88.1](/me/tiny-student-8bit-sst2) | 88.1 | 1.04M |" in board.markdown
    assert "96.6 %" in board.markdown and "![macro score against size](leaderboard.png)" in board.markdown
    png = (tmp_path / "board" / "leaderboard.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and (tmp_path / "board" / "README.md").read_text() == board.markdown
    assert board.changed and board.pushed

    again = leaderboard("me", endpoint=published_hub.url, push="me/leaderboard", **QUIET)
    assert (again.pushed, again.changed) == (board.pushed, False)  # same table, same plot bytes: no commit
    pushed = httpx2.get(f"{published_hub.url}/me/leaderboard/resolve/main/README.md", timeout=10).text
    assert pushed == board.markdown
    assert [r.name for r in leaderboard("me", endpoint=published_hub.url, **QUIET).rows] == \
        [r.name for r in board.rows]  # the summary repo itself is no model of the board


def test_web_page_lists_score_size_latency_sorts_by_them_and_shows_the_leaderboard(published_hub):
    def ids(query: str) -> list[str]:
        page = httpx2.get(f"{published_hub.url}/{query}", timeout=10).text
        return re.findall(r'<td><a href="/me/tiny-([\w-]+)-sst2">', page)

    assert ids("") == ["student-8bit", "student", "teacher"]  # by name
    assert ids("?sort=score") == ["teacher", "student", "student-8bit"]
    assert ids("?sort=latency") == ["student-8bit", "student", "teacher"]
    assert ids("?sort=score&direction=asc") == ["student-8bit", "student", "teacher"]
    assert ids("?sort=size")[-1] == "teacher"
    page = httpx2.get(f"{published_hub.url}/?sort=score", timeout=10).text
    row = page[page.index('href="/me/tiny-teacher-sst2"'):]
    row = row[:row.index("</tr>")]
    assert '<td class="score">0.9120</td>' in row and '<td class="latency">4.00 ms</td>' in row
    assert re.search(r'<td class="size">\d+\.\d MB <span class="muted">\(1\.05M params\)</span></td>', row)

    board = httpx2.get(f"{published_hub.url}/leaderboard?author=me", timeout=10).text
    table = board[board.index('<table id="leaderboard">'):]
    assert [m for m in re.findall(r"<td>(tinyrun/[\w-]+)</td>", table)] == \
        ["tinyrun/teacher", "tinyrun/student", "tinyrun/student-8bit"]
    assert '<a href="/me/tiny-student-sst2">88.7</a>' in table and "96.6 %" in table
    assert "No hfdistill models by nobody" in httpx2.get(f"{published_hub.url}/leaderboard?author=nobody").text


def test_hub_commands_on_the_embedded_hub_from_the_cli(published_hub, tmp_path, capsys):
    hub = ["--endpoint", "embedded", "--storage", str(published_hub.storage)]  # a second server on the same folder
    assert main(["refresh", "--author", "me", *hub, "--quiet"]) == 0
    assert capsys.readouterr().out == "0 of 3 repo(s) changed\n"
    assert main(["leaderboard", "--author", "me", *hub, "--quiet"]) == 0
    assert capsys.readouterr().out.splitlines()[2].startswith("tinyrun/teacher ")
    assert main(["collection", str(published_hub.run), "--repo-prefix", "me/tiny", *hub, "--quiet"]) == 0
    assert "3 added" in capsys.readouterr().out
    assert main(["refresh", "me/nope", *hub]) == 2
    assert capsys.readouterr().err.startswith("hfdistill: error: refresh me/nope: not found (404)")
    assert main(["leaderboard", "--author", "me", "--endpoint", "embedded", "--storage", str(tmp_path / "no")]) == 2
    assert "holds no embedded Hub" in capsys.readouterr().err
