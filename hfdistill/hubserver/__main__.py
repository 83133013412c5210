"""`python -m hfdistill.hubserver --storage DIR [--host H] [--port P] [--org NAME ...]`: the embedded Hub in the
foreground, without the rest of hfdistill (tests start several on one folder; `--port 0` prints the port picked).
Writes need $HFDISTILL_HUB_TOKEN when it is set."""

import argparse

from hfdistill.hubserver.runner import serve

if __name__ == "__main__":
    p = argparse.ArgumentParser(prog="python -m hfdistill.hubserver", description=__doc__)
    p.add_argument("--storage", default="hub-storage")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8787)
    p.add_argument("--org", action="append", default=[], help="a namespace token holders may also write to")
    a = p.parse_args()
    serve(a.host, a.port, a.storage, orgs=tuple(a.org))
