"""Compatibility layers for code written against other attention libraries.

:mod:`ascend_attn.compat.flash_attn` installs opt-in import aliases so that unchanged
``from flash_attn import ...`` / ``from ring_flash_attn import ...`` code runs on ascend_attn.
"""
