"""`python -m hfdistill …` and `accelerate launch -m hfdistill …`."""

import sys

from hfdistill.cli import main

if __name__ == "__main__":
    sys.exit(main())
