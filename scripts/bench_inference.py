#!/usr/bin/env python3
"""Inference benchmark of unpruned, gated and pruned models; see pass_fairseq/bench.py.

    scripts/bench_inference.py GATED.pt [--heads 48,32,16,8] [--device cuda] [--work-dir DIR]
"""
import logging
import os
import sys

# fairseq's speech tasks call logging.basicConfig(INFO) on import; keep stderr readable
logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pass_fairseq.bench import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
