"""``python -m msdnet_flax.training``: train an MSD-Net (see :func:`msdnet_flax.training.train`)."""

from msdnet_flax.training.loop import main

if __name__ == "__main__":
    main()
