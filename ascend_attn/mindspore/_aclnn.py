"""MindSpore on Ascend: the aclnn ops of ``ascend_attn/aclnn.py`` as aot Custom ops.

``ops.Custom(func="aclnn<OpType>", func_type="aot")`` on an Ascend device target makes MindSpore
(2.10) read the op's registration from the OPP (``$ASCEND_OPP_PATH/vendors/<vendor>`` in
``config.ini`` priority, then the built-in ops), generate the ``aclnn<OpType>GetWorkspaceSize``
call and run it in PyNative (pyboost) and GRAPH_MODE. Attributes travel as trailing scalar
inputs, in IR order; :meth:`AclnnApi.arguments` writes that order once for both frameworks.

The Python infer functions here only give output shapes and dtypes: the shared validation has
already run on the host in the primitive's ``__call__``. This path is thin by design; it cannot run
here (no Ascend device), so the tests check its selection and its argument order, with
``ops.Custom`` recorded instead of built.
"""
from __future__ import annotations

from mindspore import ops

from ..aclnn import AclnnApi


def aot_op(api: AclnnApi, infer_shape, infer_dtype, bprop=None) -> ops.Custom:
    """The aot Custom op of ``api``; ``infer_shape`` / ``infer_dtype`` receive the inputs' shapes /
    dtypes in :attr:`AclnnApi.inputs` order (attributes may follow) and return the outputs'."""
    return ops.Custom(func=api.api, out_shape=infer_shape, out_dtype=infer_dtype, func_type="aot", bprop=bprop)


def same_as_inputs(count: int):
    """Infer function: outputs shaped / typed like the first ``count`` inputs."""
    return lambda *items: tuple(items[:count]) if count > 1 else items[0]
