"""The skeleton every MindSpore op of the package is built from (RingAttentionUpdate, FlashAttention V4
forward / grad, IncreFlashAttention, SelfAttention).

An op is a primitive-like ``nn.Cell`` (attributes in the constructor, tensors and host integer lists as
call inputs) whose CPU path is an ``ops.Custom`` pyfunc around the op's torch core. The shared validation
runs at three points:

* :class:`Primitive` ``__call__`` (from Python: PyNative, or the top level of GRAPH_MODE): everything, on the
  host, before any kernel runs, including the values of host lists; MindSpore swallows pyfunc errors in
  PyNative, so this is where errors reach the caller. Host lists then travel as int64 tensors.
* :class:`PyfuncOp` infer functions (GRAPH_MODE compile): shapes and dtypes. The graph compiler calls
  infer_shape, then infer_dtype, separately; the shape pass keeps the shapes so the dtype pass sees both.
* :class:`PyfuncOp` kernel (run time): everything again, on torch views of MindSpore's numpy arrays.

Absent optional inputs travel as a one-byte placeholder (:func:`absent_placeholder`); which inputs are
real, which were bf16 (they cross the pyfunc as float32, exact, and are turned back into bf16 inside it)
and the per-batch lengths of a tensor list concatenated in ``construct`` form the :class:`OpKey` of a
lazily built Custom op, cached per attribute set and key by each op module (GRAPH_MODE evaluates a call of
that cache at compile time as plain Python, and equal primitives share their ops).

Messages name MindSpore's arguments: :func:`renamed` re-raises validation errors under MindSpore's name
of the argument (``pse`` -> ``real_shift`` ...).
"""
from __future__ import annotations

import contextlib
import functools
import inspect
import re
from dataclasses import dataclass

import numpy as np

import mindspore as ms
from mindspore import nn, ops

from .. import validation as V
from ._bridge import bind_inputs, hostint64_tensor, to_numpy, to_torch

_ARG_MESSAGE = re.compile(r"(?P<op>[^:\s]+): (?P<arg>\S+) only supports")


@contextlib.contextmanager
def renamed(names: dict):
    """Re-raise validation errors under MindSpore's argument names (``names``: validation name -> MindSpore's).

    Only the argument the message is about (``<op>: <arg> only supports``) is renamed; type and text
    otherwise stay those of the validation.
    """
    try:
        yield
    except (ValueError, TypeError) as exc:
        text = str(exc)
        match = _ARG_MESSAGE.match(text)
        if match and match["arg"] in names:
            raise type(exc)(f"{match['op']}: {names[match['arg']]}" + text[match.end("arg"):]) from None
        raise


def per_attribute_set(primitive_class):
    """``primitive_class(*attributes)`` made once per attribute set, on first use: the primitives behind the
    functional forms. (An lru_cache: GRAPH_MODE evaluates a call of it at compile time as plain Python, and
    equal calls share one Cell and its Custom ops.)"""
    return functools.lru_cache(maxsize=None)(primitive_class)


def absent_placeholder():
    """The tensor an absent optional input travels as (its slot is not in the OpKey's ``present``)."""
    return ms.Tensor(np.zeros((1,), np.uint8))


def shape_meta(shape) -> tuple | None:
    """A shape handed to an infer function as a TensorMeta shape: None when a dimension is dynamic."""
    shape = tuple(int(d) for d in shape)
    return None if any(d < 0 for d in shape) else shape


def split_metas(meta, splits, axis: int):
    """The per-batch metas of a tensor list concatenated along ``axis`` (``splits``: its lengths there);
    the meta itself when there was no list."""
    if splits is None or meta is None:
        return meta
    if meta.shape is None:
        return [V.TensorMeta(None, meta.dtype) for _ in splits]
    axis %= len(meta.shape)
    return [V.TensorMeta(meta.shape[:axis] + (s,) + meta.shape[axis + 1:], meta.dtype) for s in splits]


def list_splits(op: str, key_arg: str, value_arg: str, key_shapes: tuple, value_shapes: tuple, axis: int,
                axis_name: str, rank: int | None = None, rank_form: str = "") -> tuple[int, ...]:
    """Lengths along ``axis`` of a per-batch tensor list (``key_arg`` / ``value_arg`` lists of tensors) that
    ``construct`` concatenates, after the shape rules the concatenation needs, with validation's messages
    (the full check runs in the infer functions). ``rank``: the rank every tensor must have."""
    if len(key_shapes) != len(value_shapes):
        raise V.value_error(op, value_arg, f"the same form as {key_arg} (a tensor, or a list of as many tensors)",
                            f"{len(value_shapes)} tensor(s) for {len(key_shapes)} {key_arg} tensor(s)")
    need = axis + 1 if axis >= 0 else -axis

    def rest(shape):  # the shape without the concatenation axis
        return shape[:axis] + shape[axis + 1:] if axis != -1 else shape[:-1]

    first = None
    for i, (k, v) in enumerate(zip(key_shapes, value_shapes)):
        k, v = tuple(k), tuple(v)
        if rank is not None:
            V.check_rank(op, f"{key_arg}[{i}]", V.TensorMeta(k, None), rank, rank_form)
        V.check_same_shape(op, f"{value_arg}[{i}]", V.TensorMeta(v, None), f"{key_arg}[{i}]", V.TensorMeta(k, None))
        first = rest(k) if first is None else first
        if len(k) < need or rest(k) != first:
            raise V.value_error(op, f"{key_arg}[{i}]", f"the shape of {key_arg}[0] except {axis_name}",
                                f"shape {V.quote(k)}")
    return tuple(int(k[axis]) for k in key_shapes)


@dataclass(frozen=True)
class OpKey:
    """What one Custom op is specialised on: the given optional inputs, those given as bf16, and the
    per-batch lengths of a tensor list concatenated in ``construct`` (None: no list)."""

    present: tuple[str, ...]
    bf16: tuple[str, ...]
    splits: tuple[int, ...] | None = None


class PyfuncOp:
    """One op's ``ops.Custom`` pyfunc around its torch core: infer functions, kernel function, bridging.

    Subclasses name the op (``OP``, as in validation messages), the Custom op's inputs in the order
    ``construct`` passes them (``SLOTS``, the names the hooks use), the slots that carry host integer
    lists as int64 tensors (``INT_LISTS``) and MindSpore's names for messages (``MS_NAMES``: slot or
    validation name -> MindSpore's), and give three hooks: :meth:`infer_shapes`, :meth:`infer_dtypes` and
    :meth:`run`. One instance per Custom op (attributes + :class:`OpKey`); :meth:`custom` builds the op.
    """

    OP = ""
    SLOTS: tuple = ()
    INT_LISTS: tuple = ()
    MS_NAMES: dict = {}

    def __init__(self, attrs, key: OpKey):
        self.attrs, self.key, self._shapes = attrs, key, None

    # ------------------------------------------------------------------ hooks

    def infer_shapes(self, metas: dict, shapes: tuple):
        """Output shapes. ``metas``: slot -> TensorMeta (shape only) of the given slots."""
        raise NotImplementedError

    def infer_dtypes(self, metas: dict, dtypes: tuple, shapes: tuple | None):
        """Output dtypes (float32 for a bf16 output: ``construct`` casts it back). ``metas`` carry the
        dtypes and the shapes of the shape pass (``shapes``; None when it did not run)."""
        raise NotImplementedError

    def run(self, tensors: dict, lists: dict):
        """The pyfunc body on torch tensors (``tensors``: slot -> tensor, bf16 restored, None if absent;
        ``lists``: given int-list slot -> list of ints): check, compute, return a tensor or a tuple."""
        raise NotImplementedError

    # ------------------------------------------------------------------ machinery

    def metas(self, shapes, dtypes) -> dict:
        """Slot -> TensorMeta of each given slot (an input cast from bf16 reads as bfloat16); the int-list
        slots are checked as 1-D integer tensors."""
        metas = {}
        for i, name in enumerate(self.SLOTS):
            if name not in self.key.present:
                continue
            shape = None if shapes is None else shape_meta(shapes[i])
            dtype = None if dtypes is None else ("bfloat16" if name in self.key.bf16 else V.dtype_name(dtypes[i]))
            metas[name] = V.TensorMeta(shape, dtype)
            if name in self.INT_LISTS:
                V.check_int_sequence_meta(self.OP, name, metas[name])
        return metas

    def infer_shape(self, *shapes):
        self._shapes = shapes
        with renamed(self.MS_NAMES):
            return self.infer_shapes(self.metas(shapes, None), shapes)

    def infer_dtype(self, *dtypes):
        shapes, self._shapes = self._shapes, None
        with renamed(self.MS_NAMES):
            return self.infer_dtypes(self.metas(shapes, dtypes), dtypes, shapes)

    def kernel(self, *arrays):
        """numpy arrays of all slots -> torch (bf16 restored, lists as ints) -> :meth:`run` -> numpy."""
        import torch
        tensors, lists = {}, {}
        for name, array in zip(self.SLOTS, arrays):
            if name not in self.key.present:
                tensors[name] = None
            elif name in self.INT_LISTS:
                lists[name] = [int(x) for x in np.asarray(array).reshape(-1)]
            else:
                t = to_torch(array)
                tensors[name] = t.to(torch.bfloat16) if name in self.key.bf16 else t
        with renamed(self.MS_NAMES):
            out = self.run(tensors, lists)
        return tuple(to_numpy(o) for o in out) if isinstance(out, (tuple, list)) else to_numpy(out)

    def custom(self, bprop=None) -> ops.Custom:
        """The ``ops.Custom`` pyfunc. Its kernel function states one parameter per slot: pyfunc counts the
        parameters of the signature (a plain ``*args`` function would be taken as one tuple input)."""
        def kernel(*arrays):
            return self.kernel(*arrays)

        kernel.__signature__ = inspect.Signature(
            [inspect.Parameter(name, inspect.Parameter.POSITIONAL_ONLY) for name in self.SLOTS])
        return ops.Custom(func=kernel, out_shape=self.infer_shape, out_dtype=self.infer_dtype, func_type="pyfunc",
                          bprop=bprop)


class Primitive(nn.Cell):
    """Host side of a primitive-like Cell: ``__call__`` runs :meth:`check` (everything, on the host, so errors
    are raised before any kernel runs, identical to the torch op), then hands the host integer lists on to
    ``construct`` as int64 tensors and tuples of tensors as lists.

    Subclasses set ``OP``, ``INPUTS`` (call inputs, MindSpore's names and order) and ``INT_LISTS`` (the host
    lists among them), and implement :meth:`check`.
    """

    OP = ""
    INPUTS: tuple = ()
    INT_LISTS: tuple = ()

    def bind(self, args: tuple, kwargs: dict, required: tuple = ()) -> dict:
        """Call inputs -> {name: value} over all ``INPUTS`` (None when not given); ``required`` must be given."""
        bound = bind_inputs(self.INPUTS, args, kwargs, self.OP)
        for name in required:
            if bound.get(name) is None:
                raise TypeError(f"{self.OP}: missing input {name!r}")
        return {n: bound.get(n) for n in self.INPUTS}

    def check(self, *args, **kwargs) -> dict:
        """Everything on the host; returns the call inputs by name, host lists as lists of ints."""
        raise NotImplementedError

    def host_list_input(self, name: str, values, bound: dict):
        """How a checked host list reaches ``construct`` (``bound``: the checked call): an int64 tensor (FA
        overrides this for CANN's aclnn ops, which take host int arrays)."""
        return hostint64_tensor(values)

    def __call__(self, *args, **kwargs):
        bound, call = self.check(*args, **kwargs), {}
        for name, value in bound.items():
            if name in self.INT_LISTS:
                value = self.host_list_input(name, value, bound)
            elif isinstance(value, tuple):
                value = list(value)
            call[name] = value
        return super().__call__(**call)
