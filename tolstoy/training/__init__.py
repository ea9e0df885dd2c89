"""A training run (run.py) and its parts: arguments, plan, checkpoints, callbacks, processes."""
