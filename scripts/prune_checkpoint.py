#!/usr/bin/env python3
"""Prune the heads of a transformer_pass checkpoint; see pass_fairseq/prune_checkpoint.py.

    scripts/prune_checkpoint.py IN.pt OUT.pt [--heads K | --threshold T] [--format pruned|stock]
"""
import logging
import os
import sys

# fairseq's speech tasks call logging.basicConfig(INFO) on import; keep stderr to our lines
logging.basicConfig(level=logging.WARNING)
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pass_fairseq.prune_checkpoint import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
