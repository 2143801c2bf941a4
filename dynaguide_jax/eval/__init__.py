"""Evaluation above models, data and guidance: offline dynamics evaluation (``eval.dynamics``)."""
