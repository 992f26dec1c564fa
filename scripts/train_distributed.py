#!/usr/bin/env python3
"""`pass-train-distributed` for a checkout without pip install: see pass_fairseq/cli/train_distributed.py."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pass_fairseq.cli.train_distributed import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
