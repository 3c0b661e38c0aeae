"""The canonical compressed attention masks (semantics.md §4; their shapes and rule:
``validation.common.FA_COMPRESSED`` / ``COMPRESSED_MASK_FORMS``): the one torch builder and content
check, used by the FA / SA kernels, the flash-attn layer and ``testing.samples.compressed_mask``."""
from __future__ import annotations

import functools
import weakref

import torch

from ..validation import common as C


@functools.lru_cache(maxsize=8)
def _canonical(rows: int, device: torch.device) -> torch.Tensor:
    upper = torch.ones(2048, 2048, dtype=torch.bool, device=device).triu(1)
    if rows == 2048:
        return upper
    tail = torch.cat([torch.zeros(1024, 1024, dtype=torch.bool, device=device),
                      torch.ones(1024, 1024, dtype=torch.bool, device=device)], dim=1)
    return torch.cat([upper, tail])


def canonical_compressed_mask(sparse_mode: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """C2048 or C3072 (1 = masked, bool) of ``sparse_mode``, built once per device: building it costs
    more than a small attention call. Read-only: never modify the result (clone it to own one)."""
    return _canonical(C.compressed_mask_rows(sparse_mode), torch.device(device))


def check_compressed_mask(atten_mask: torch.Tensor, sparse_mode: int, op: str) -> None:
    """The CPU fallback verifies compressed mask content (catches inverted polarity, §4 [P])."""
    ref, version = _verified_masks.get(id(atten_mask), (None, None))
    if ref is not None and ref() is atten_mask and version == atten_mask._version:
        return  # this very tensor, unmodified since it passed (a model reuses one mask every call)
    rows = atten_mask.shape[0]
    want = _canonical(rows, atten_mask.device)
    # Byte-wise as int64 words (7x faster than comparing bools): bool and uint8 canonical masks hold
    # the same 0/1 bytes, so this also rejects uint8 values other than 0 and 1.
    as_words = lambda t: t.contiguous().view(torch.uint8).view(torch.int64)
    if not torch.equal(as_words(atten_mask), as_words(want)):
        raise C.compressed_mask_error(op, sparse_mode, rows)
    if len(_verified_masks) > 16:
        _verified_masks.clear()
    _verified_masks[id(atten_mask)] = (weakref.ref(atten_mask), atten_mask._version)


# Compressed masks whose content passed: id -> (weak reference, version counter at the check);
# the reference tells a reused id from the same tensor, in-place writes bump the version.
_verified_masks: dict[int, tuple] = {}
