"""Experiment harness: `python -m experiments.run --config=experiments/<task>.py`."""
