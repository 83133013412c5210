"""Rate-limit benchmark (not a test): is a 429's `Retry-After` honoured? The same small push to the embedded Hub,
its first commit answered 429 with no header, `Retry-After: 1` and `Retry-After: 3`, and unrefused, side by side in
one run; our own back-off is off (retry waits 0 s), so any extra time is the wait the Hub asked for.

    python bench/retry_after.py
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.update(HF_HUB_OFFLINE="0", HF_HUB_DISABLE_XET="1", HF_HUB_DISABLE_PROGRESS_BARS="1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hfdistill.hubserver import start_in_thread  # noqa: E402
from hfdistill.publish.push import push_folder  # noqa: E402
from tests.hub_fixtures import build_tiny_run  # noqa: E402


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="retry-after-"))
    os.environ["HF_HOME"] = str(work / "hf")
    run = build_tiny_run(work / "run")
    hub = start_in_thread(work / "hub")
    rows = []
    cases = [("429, no Retry-After", {}), ("429, Retry-After: 1", {"Retry-After": "1"}),
             ("429, Retry-After: 3", {"Retry-After": "3"}), ("no fault", None)]
    try:
        for i, (label, headers) in enumerate(cases):
            if headers is not None:
                hub.faults.add("POST", "/commit/", status=429, headers=headers)
            started = time.monotonic()
            push_folder(run / "teacher" / "sst2", f"local/m{i}", endpoint=hub.url, retry_waits=(0.0,),
                        log=lambda m: None)
            rows.append((label, time.monotonic() - started))
    finally:
        hub.stop()
    base = rows[-1][1]
    print("| first commit answered | push (s) | minus the unrefused push (s) |\n|---|---|---|")
    for label, seconds in rows:
        print(f"| {label} | {seconds:.2f} | {seconds - base:+.2f} |")


if __name__ == "__main__":
    main()
