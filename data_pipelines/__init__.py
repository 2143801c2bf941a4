"""Dataset builders: raw robot data -> RLDS (TFDS)."""
