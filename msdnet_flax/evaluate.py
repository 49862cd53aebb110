"""Old entry point, kept for existing commands: ``python -m msdnet_flax.evaluate`` is ``python -m msdnet_flax.evaluation``."""

if __name__ == "__main__":
    from msdnet_flax.evaluation.core import main

    main()
