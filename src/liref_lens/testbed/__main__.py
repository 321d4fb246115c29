"""``python -m liref_lens.testbed OUT_DIR [--seed 0]``: train the testbed model into OUT_DIR."""

from .train import main

main()
