"""Old entry point, kept for existing commands: ``python -m msdnet_flax.bundle`` is ``python -m msdnet_flax.training.bundle``."""

if __name__ == "__main__":
    from msdnet_flax.training.bundle import main

    main()
