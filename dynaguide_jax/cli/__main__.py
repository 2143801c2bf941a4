"""``python -m dynaguide_jax.cli``: the ``dynaguide`` command."""
import sys

from dynaguide_jax.cli import main

sys.exit(main())
