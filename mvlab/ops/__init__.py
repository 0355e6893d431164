"""Numerical kernels. The selective scan is the only one the models call."""
from mvlab.ops.scan import available_backends, resolve_backend, selective_scan

__all__ = ["selective_scan", "available_backends", "resolve_backend"]
