"""wearcast: predictive maintenance for rolling bearings."""

__version__ = "0.1.0"
