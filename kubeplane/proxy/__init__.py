"""The service proxy: a pure per-node plan (plan.py) shared by every mode, and the mode backends."""
