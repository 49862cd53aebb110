"""Old entry point, kept for existing commands: ``python -m msdnet_flax.train`` is ``python -m msdnet_flax.training``."""

if __name__ == "__main__":
    from msdnet_flax.training.loop import main

    main()
