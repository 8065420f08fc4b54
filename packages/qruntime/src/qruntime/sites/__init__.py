"""Quantizer-site discovery: which modules of a model get quantizers, and under which keys."""
