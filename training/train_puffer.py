"""The first version's entry point, kept for its users: same flags, same artifacts.

`python training/train_puffer.py ...` is `prospector train ...`: one code path underneath.
"""

import os
import sys

if __package__ in (None, ""):  # run as a script: make the repo root importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ray_app.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
