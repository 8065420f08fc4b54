"""Format kernel modules; each registers itself with :func:`..registry.register_kernel`.

Every public module here is imported on the first kernel lookup (they need Triton).
"""
