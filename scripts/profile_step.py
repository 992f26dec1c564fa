#!/usr/bin/env python3
"""`pass-profile-step` for a checkout without pip install: see pass_fairseq/cli/profile_step.py."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pass_fairseq.cli.profile_step import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
