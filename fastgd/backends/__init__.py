"""Execution backends: numpy (reference), numba (CPU), cuda."""
