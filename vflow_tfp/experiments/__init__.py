"""Experiments of the papers: the 2-D checkerboard toy of VFlow (§5)."""

from vflow_tfp.experiments import checkerboard

__all__ = ['checkerboard']
