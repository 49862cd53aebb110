"""Studies built on jaxcam that may depend on a particular model family (here MSD-Net).

The library (everything outside :mod:`jaxcam.cli` and :mod:`jaxcam.studies`) imports nothing
from here.
"""
