"""``dynaguide train``: the policy and dynamics trainers (``train_policy``, ``train_dynamics``)."""
from __future__ import annotations

from dynaguide_jax.cli import train_dynamics, train_policy


def add_parser(sub) -> None:
    train = sub.add_parser("train", help="train models (resumes automatically from OUT)")
    tsub = train.add_subparsers(dest="what", required=True, metavar="{policy,dynamics}")
    train_policy.add_parser(tsub)
    train_dynamics.add_parser(tsub)
