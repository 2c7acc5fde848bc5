"""fastgd: Numba kernels for activations and fused gradient-descent updates."""
