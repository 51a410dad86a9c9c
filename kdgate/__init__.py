"""kdgate: distil a student, route traffic to it safely, roll back on drift."""
__version__ = "0.1.0"
