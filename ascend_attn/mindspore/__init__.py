"""MindSpore frontend: functional forms with MindSpore's signatures, and primitive classes.

Works in PyNative and GRAPH_MODE; on CPU through ``ops.Custom`` pyfunc kernels around the
shared torch core, on Ascend through the native / custom-op package kernels.
"""
from .flash_attention import FlashAttentionUnpaddingScoreGradV4, FlashAttentionVarLenScoreV4
from .flash_attention_score import flash_attention_score
from .incre_flash_attention import IncreFlashAttentionV2, incre_flash_attention
from .ring_attention_update import RingAttentionUpdate, ring_attention_update
from .self_attention import SelfAttention, self_attention

__all__ = ["RingAttentionUpdate", "ring_attention_update", "FlashAttentionVarLenScoreV4",
           "FlashAttentionUnpaddingScoreGradV4", "flash_attention_score", "IncreFlashAttentionV2",
           "incre_flash_attention", "SelfAttention", "self_attention"]
