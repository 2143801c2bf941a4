"""Evaluation above models, data, guidance and environments: offline dynamics evaluation
(``dynamics``), behaviour detection (``behaviours``), closed-loop rollouts (``rollout``) of the
compared methods (``methods``), and result tables and plots (``tables``)."""
