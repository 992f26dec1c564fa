#!/usr/bin/env python3
"""`pass-michel-prune` for a checkout without pip install: see pass_fairseq/cli/michel_prune.py."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pass_fairseq.cli.michel_prune import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
