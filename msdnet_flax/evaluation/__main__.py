"""``python -m msdnet_flax.evaluation CHECKPOINT``: anytime and budgeted tables and plots."""

from msdnet_flax.evaluation.core import main

if __name__ == "__main__":
    main()
