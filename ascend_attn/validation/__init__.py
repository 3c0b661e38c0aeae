"""Framework-neutral input validation, shared by every frontend.

Every frontend (PyTorch eager, the fake/meta kernels, MindSpore PyNative and the MindSpore
GRAPH_MODE infer functions) describes its inputs as :class:`TensorMeta` (shape + canonical dtype
name) and calls the ``check_*`` function of the op here, so the error a user sees is the same
text whichever framework they use.

Messages follow one template (``docs/errors.md``)::

    <op>: <argument> only supports <what is supported>, but got <what was given>

``ValueError`` is raised for wrong values, shapes, layouts and combinations; ``TypeError`` for
wrong dtypes. Checks only read metadata and host values, so nothing is ever written to a user
tensor when they raise.

A meta whose ``shape`` or ``dtype`` is ``None`` means "not known here" (MindSpore's graph
compiler infers shapes and dtypes in two separate calls); checks that need the missing part are
skipped and run again once both are known.

One module per op (``ring_attention_update``, ``flash_attention``, ``flash_attention_score``,
``incre_flash_attention``, ``self_attention``) over ``common``; this package re-exports their public
names, so frontends write ``from .. import validation as V; V.check_...``.
"""
from __future__ import annotations

from .common import (FLOAT_DTYPES, INT_DTYPES, TensorMeta, dtype_name, meta_of, quote, one_of, value_error,
                     type_error, check_choice, check_dtype, check_same_dtype, check_rank, check_same_shape,
                     check_same_device, require, check_int_sequence_meta, int_list, lengths_known,
                     cu_seqlens_list, lengths_of, FA_COMPRESSED, COMPRESSED_MASK_FORMS, compressed_mask_rows,
                     compressed_mask_error)
from .ring_attention_update import (RAU_OP, RAU_LAYOUTS, RAU_SOFTMAX_LAYOUTS, RAU_STAT_NAMES, RAU_MAX_HEADS,
                                    RAU_MAX_HEAD_DIM, RAU_HEAD_DIM_ALIGN, MS_RAU_UB_BYTES, RingUpdatePlan,
                                    ms_rau_ub_bytes, check_ring_attention_update, check_rau_seq_qlen)
from .flash_attention import (FA_FWD_OP, FA_GRAD_OP, FA_SOFTMAX_LAYOUTS, FA_MAX_HEADS, FA_MAX_HEAD_DIM,
                              FA_MAX_BATCH, FA_MAX_BATCH_PREFIX, FA_MAX_TOKENS, FA_ALIBI_ROWS,
                              MAX_TOKENS_DEFAULT, allow_float64, fa_float_dtypes, FlashPlan, fa_seq_lengths,
                              check_flash_attention, check_flash_attention_grad)
from .flash_attention_score import (FA_SCORE_UNIFORM_LAYOUTS, FA_SCORE_LAYOUTS, FA_SCORE_UNIFORM_SPARSE_MODES,
                                    FaLayoutPlan, check_fa_score_attributes, check_fa_score_layout,
                                    fa_score_mask_form, fa_score_pse_form, fa_score_tnd_values)
from .incre_flash_attention import (IFA_OP, IFA_LAYOUTS, IFA_QUERY_DTYPES, IFA_MASK_DTYPES, IFA_DEQUANT_DTYPES,
                                    QUANT_SCENARIO_ARGS, QUANT_SCENARIOS, IncrePlan,
                                    check_incre_flash_attention, ifa_left_padding)
from .self_attention import (ENUMS, enum_choices, enum_value, enum_name, Feature, FEATURES, CONFLICTS,
                             COMPRESSED_MASKS, ALIBI_COMPRESSED, active_features, check_coexistence, SA_DTYPES,
                             SA_MAX_HEADS, SA_MAX_HEAD_DIM, SA_MAX_HEAD_DIM_ALIBI, NORM_COMPRESS_SHAPE,
                             ALIBI_COMPRESS_SHAPE, SAPlan, output_dtype, check_float, check_attributes,
                             check_self_attention)
from .common import _is_integer  # noqa: F401  (flash_attn_interface reads integer-likes the same way)
