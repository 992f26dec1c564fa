#!/usr/bin/env python3
"""Print every --pass-* flag with its help (fairseq-train --help cannot show them); see
pass_fairseq/flags.py.

    scripts/pass_flags.py
"""
import logging
import os
import sys

# fairseq's speech tasks call logging.basicConfig(INFO) on import; keep stderr to our lines
logging.basicConfig(level=logging.WARNING)
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pass_fairseq.flags import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
