"""``python -m benchmarks``: jaxcam vs the PyTorch CAM libraries on MSD-Net (flags: cli.py)."""

from benchmarks.suite import main

raise SystemExit(main())
