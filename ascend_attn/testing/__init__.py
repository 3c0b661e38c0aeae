"""Independent float64 references (numpy), used by the tests and by ``ascend-attn demo``.

They are written straight from ``docs/semantics.md``, share no code with the kernels, and favour
clarity over speed: loops over sequences and heads, whole score matrices, float64 throughout.
"""
