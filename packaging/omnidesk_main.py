"""The frozen app's entry point: the `omnidesk` command line (no command: the window)."""

import sys

from app.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
