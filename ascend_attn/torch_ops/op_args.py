"""Each op's argument list, stated once: parsed from its torch.library schema, bound by every layer.

:class:`OpArgs` parses a schema once; the op's kernels (eager, fake, NPU) and its autograd receive the
arguments as the dispatcher passes them (defaults omitted, keyword-only ones as keywords) and bind them
to one ``dict`` in schema order. :meth:`OpArgs.public` turns the public function (its signature and
docstring, fixed by the spec) into the caller of the op, checking at import time that both name the
same arguments.

Host lengths (sequence lengths, KV lengths, offsets) travel through the schemas as 1-D int64 CPU
tensors, not ``int[]``: torch.compile then treats them as data (one graph for every length list of
the same batch count) instead of baking each list into the graph. :func:`lengths_tensor` is the one
conversion the public functions use; :func:`host_lengths` is how the kernels read them back: the real
kernels get the values (and run the full validation before writing anything), the fake kernels get
one ``...`` per value (count known, values unknown), so they check shapes, dtypes and counts only.
Output shapes never depend on length values.
"""
from __future__ import annotations

import functools
import inspect

import torch

from .. import validation as V

NAMESPACE = "ascend_attn"


class OpArgs:
    """One op's schema, parsed once: argument names in order, defaults, and which arguments are
    tensors (metadata for validation) or host lengths (``lengths``: tensors read as host values)."""

    def __init__(self, name: str, schema: str, *, lengths: tuple[str, ...] = ()):
        self.name = name
        self.qualname = f"{NAMESPACE}::{name}"
        self.schema = schema
        parsed = torch._C.parse_schema(self.qualname + schema)
        self.names = tuple(a.name for a in parsed.arguments)
        self.defaults = {a.name: a.default_value for a in parsed.arguments if a.has_default_value()}
        self.lengths = lengths
        tensor_types = ("Tensor", "Optional[Tensor]", "List[Tensor]")
        self.tensors = tuple(a.name for a in parsed.arguments if str(a.type) in tensor_types and a.name not in lengths)
        unknown = set(lengths) - set(self.names)
        assert not unknown, f"{name}: lengths {unknown} are not schema arguments"

    def bind(self, args: tuple, kwargs: dict) -> dict:
        """The dispatcher's ``(args, kwargs)`` -> ``{name: value}`` for every argument, in schema order."""
        values = dict(zip(self.names, args))
        values.update(kwargs)
        return {n: values[n] if n in values else self.defaults[n] for n in self.names}

    def ordered(self, values: dict) -> tuple:
        """The values in schema order (positional call of the op or of the NPU glue)."""
        return tuple(values[n] for n in self.names)

    def define(self, impl, *, mutates_args=()):
        """Register ``impl(values: dict)`` as the op's kernel for every device; returns the CustomOpDef."""
        return torch.library.custom_op(self.qualname, self.binding(impl), mutates_args=mutates_args,
                                       schema=self.schema)

    def binding(self, fn):
        """``fn(values: dict)`` as a kernel the dispatcher can call with ``(*args, **kwargs)``."""
        def kernel(*args, **kwargs):
            return fn(self.bind(args, kwargs))
        kernel.__name__ = kernel.__qualname__ = fn.__name__
        return kernel

    def for_validation(self, values: dict, *, known: bool, op: str) -> dict:
        """Tensors as TensorMeta (lists of them as lists), host lengths as values (``known``) or ``...``."""
        out = dict(values)
        for n in self.tensors:
            x = values[n]
            out[n] = [V.meta_of(t) for t in x] if isinstance(x, (list, tuple)) else V.meta_of(x)
        for n in self.lengths:
            out[n] = host_lengths(op, n, values[n], known=known)
        return out

    def public(self, prepare, finish=None):
        """Decorator: the decorated function's signature and docstring are the public API; calling it
        binds the call to that signature, applies ``prepare(values) -> values`` (normalisation of host
        arguments) and calls the op; ``finish(values, output)``, where given, shapes the op's output into
        the public return value. The body of the decorated function is never run.
        ``<public>.op_arguments(...)`` gives the op's arguments for a call without calling the op
        (tests call the op directly with them: opcheck)."""
        def wrap(api):
            params = inspect.signature(api).parameters
            assert set(params) == set(self.names), f"{api.__name__}: {set(params) ^ set(self.names)}"
            positional = tuple(n for n, p in params.items() if p.kind is p.POSITIONAL_OR_KEYWORD)
            defaults = {n: p.default for n, p in params.items() if p.default is not p.empty}
            packet = getattr(getattr(torch.ops, NAMESPACE), self.name)

            def op_arguments(*args, **kwargs) -> tuple:
                """The op's arguments (schema order) for this public call: what it passes to the op."""
                if len(args) > len(positional):
                    raise TypeError(f"{api.__name__}() takes {len(positional)} positional arguments but "
                                    f"{len(args)} were given")
                values = dict(zip(positional, args))
                for n, v in kwargs.items():
                    if n not in params:
                        raise TypeError(f"{api.__name__}() got an unexpected keyword argument {n!r}")
                    if n in values:
                        raise TypeError(f"{api.__name__}() got multiple values for argument {n!r}")
                    values[n] = v
                missing = [n for n in params if n not in values and n not in defaults]
                if missing:
                    raise TypeError(f"{api.__name__}() missing required argument(s): {', '.join(missing)}")
                return self.ordered(prepare({n: values[n] if n in values else defaults[n] for n in params}))

            @functools.wraps(api)
            def call(*args, **kwargs):
                values = op_arguments(*args, **kwargs)
                output = packet(*values)
                return output if finish is None else finish(dict(zip(self.names, values)), output)
            call.op_arguments = op_arguments
            return call
        return wrap


# ----------------------------------------------------------------------------- host lengths

def lengths_tensor(op: str, arg: str, value) -> torch.Tensor | None:
    """A host length argument as the schemas take it: ``None``, or a 1-D int64 CPU tensor.

    Accepts ``list`` / ``tuple`` of ints (under torch.compile their elements may be SymInts: the
    values become graph data) or a 1-D integer tensor: an int64 CPU tensor is passed as is, other
    integer dtypes are widened, a device tensor is copied to the host once, here (the kernels read
    the lengths on the host).
    """
    if value is None:
        return None
    if isinstance(value, torch.Tensor):
        V.check_int_sequence_meta(op, arg, V.TensorMeta(tuple(value.shape), V.dtype_name(value.dtype)))
        return value.to(device="cpu", dtype=torch.int64)
    return torch.tensor(V.int_list(op, arg, value), dtype=torch.int64)


def host_lengths(op: str, arg: str, lengths: torch.Tensor | None, *, known: bool):
    """What validation gets for a host length tensor: ``None`` when absent, its values as ``list[int]``
    (``known``: the real kernels), else one ``...`` per value (the fake kernels: the count is the
    tensor's size, the values are unknown while tracing; ``validation.lengths_known``)."""
    if lengths is None:
        return None
    V.check_int_sequence_meta(op, arg, V.TensorMeta(tuple(lengths.shape), V.dtype_name(lengths.dtype)))
    if known:
        return [int(v) for v in lengths.tolist()]
    return [...] * int(lengths.shape[0])
