"""The benchmarks' code (JSON rows, never asserted in tests): ``guided_inference`` (a guided action
chunk and the policy alone), ``dynamics_training`` (training throughput, features vs pixels) and
``input_pipeline`` (can the host feed the step); ``timing`` holds their shared timers. Their
command-line front ends are in ``dynaguide_jax.cli.bench`` (``dynaguide bench``, ``benchmarks/``)."""
