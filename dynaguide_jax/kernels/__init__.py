"""Hand-written kernels (Pallas) behind config fields; each has a plain-JAX reference it is tested against."""
