"""Evaluating an MSD-Net the two ways the paper does (anytime and budgeted), and its plots."""

from msdnet_flax.evaluation.core import anytime, budgeted, exit_accuracy, max_softmax, predict

__all__ = ["anytime", "budgeted", "exit_accuracy", "max_softmax", "predict"]
