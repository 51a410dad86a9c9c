"""``make demo``: distil, serve, canary, promote, roll back; its setup, load, plots and report.

``python -m kdgate.demo`` runs :func:`kdgate.demo.run.main`.
"""
