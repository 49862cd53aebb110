"""Moved to :mod:`jaxcam.studies.exit_analysis`; this name keeps old imports working."""

from jaxcam.studies.exit_analysis import *  # noqa: F401,F403
