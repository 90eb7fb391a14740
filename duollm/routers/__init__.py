"""Learned routing policies: one linear layer per layer over the pre-FFN state, trained the paper's way or on
oracle labels (train/router_fit.py), calibrated to the budget (calibrate.py)."""

from duollm.routers.calibrate import calibrate, realised_on
from duollm.routers.linear import LinearRouter
from duollm.routers.storage import load_router

__all__ = ["LinearRouter", "calibrate", "load_router", "realised_on"]
