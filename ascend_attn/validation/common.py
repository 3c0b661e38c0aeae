"""What every op's checks share: :class:`TensorMeta`, dtype names, the message template and its
helpers, generic ``check_*`` helpers, host integer lists (lengths, cumulative lengths) and the canon of
the compressed attention masks (semantics.md §4)."""
from __future__ import annotations

from typing import Any, NamedTuple, Sequence

FLOAT_DTYPES = ("float16", "bfloat16", "float32")
INT_DTYPES = ("int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64")


class TensorMeta(NamedTuple):
    """What validation needs to know of a tensor: its shape, canonical dtype name and (torch
    tensors only) device, as ``str(tensor.device)``; ``None`` where a framework has no such notion."""

    shape: tuple[int, ...] | None
    dtype: str | None
    device: str | None = None

    @property
    def ndim(self) -> int | None:
        return None if self.shape is None else len(self.shape)


_DTYPE_ALIASES = {
    "half": "float16", "float": "float32", "double": "float64", "bf16": "bfloat16",
    "fp16": "float16", "fp32": "float32", "long": "int64", "int": "int32", "bool_": "bool",
}


def dtype_name(dtype: Any) -> str:
    """Canonical lower-case dtype name of a torch, MindSpore or numpy dtype.

    torch gives ``torch.float16``, MindSpore ``Float16`` or ``Tensor[Float16]`` (in its infer
    functions), numpy ``float16``; all become ``"float16"``.
    """
    text = str(dtype)
    if text.startswith("Tensor[") and text.endswith("]"):
        text = text[len("Tensor["):-1]
    text = text.rsplit(".", 1)[-1].lower()
    return _DTYPE_ALIASES.get(text, text)


def meta_of(x: Any) -> TensorMeta | None:
    """TensorMeta of a torch / MindSpore / numpy tensor, or None for ``None``."""
    if x is None:
        return None
    if isinstance(x, TensorMeta):
        return x
    # Only torch tensors carry a device worth checking (MindSpore places tensors itself).
    device = str(x.device) if type(x).__module__.startswith("torch") else None
    return TensorMeta(tuple(int(d) for d in x.shape), dtype_name(x.dtype), device)


# ----------------------------------------------------------------------------- messages

def quote(value: Any) -> str:
    """How a given value is shown in a message: strings in double quotes, shapes as lists."""
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, tuple):
        return str(list(value))
    return str(value)


def one_of(options: Sequence[Any]) -> str:
    """``"SBH" or "TND"`` / ``float16, bfloat16 or float32``."""
    shown = [quote(o) for o in options]
    if len(shown) == 1:
        return shown[0]
    return ", ".join(shown[:-1]) + " or " + shown[-1]


def value_error(op: str, arg: str, supported: str, got: Any) -> ValueError:
    return ValueError(f"{op}: {arg} only supports {supported}, but got {got}")


def type_error(op: str, arg: str, supported: str, got: Any) -> TypeError:
    return TypeError(f"{op}: {arg} only supports {supported}, but got {got}")


def check_choice(op: str, arg: str, value: Any, options: Sequence[Any]) -> None:
    if not isinstance(value, type(options[0])) or value not in options:
        raise value_error(op, arg, one_of(options), quote(value))


def check_dtype(op: str, arg: str, meta: TensorMeta, allowed: Sequence[str]) -> None:
    if meta.dtype is not None and meta.dtype not in allowed:
        raise type_error(op, arg, "dtype " + one_of(list(allowed)).replace('"', ""), meta.dtype)


def check_same_dtype(op: str, arg: str, meta: TensorMeta, ref_arg: str, ref: TensorMeta) -> None:
    if meta.dtype is not None and ref.dtype is not None and meta.dtype != ref.dtype:
        raise type_error(op, arg, f"the dtype of {ref_arg} ({ref.dtype})", meta.dtype)


def check_rank(op: str, arg: str, meta: TensorMeta, rank: int, form: str) -> None:
    if meta.shape is not None and len(meta.shape) != rank:
        raise value_error(op, arg, f"{rank}-D shape {form}", f"shape {quote(meta.shape)}")


def check_same_shape(op: str, arg: str, meta: TensorMeta, ref_arg: str, ref: TensorMeta) -> None:
    if meta.shape is not None and ref.shape is not None and meta.shape != ref.shape:
        raise value_error(op, arg, f"the shape of {ref_arg} {quote(ref.shape)}",
                          f"shape {quote(meta.shape)}")


def check_same_device(op: str, ref_arg: str, ref: TensorMeta, **named) -> None:
    """Every tensor argument in ``named`` (a TensorMeta, a list of them, or None) lives on ``ref``'s
    device: kernels index all inputs from one device, so a mixed call (a CPU query with a meta key)
    would read memory that is not there."""
    if ref is None or ref.device is None:
        return
    for name, given in named.items():
        metas = list(given) if isinstance(given, (list, tuple)) and not isinstance(given, TensorMeta) else [given]
        for i, meta in enumerate(metas):
            if meta is not None and meta.device is not None and meta.device != ref.device:
                arg = f"{name}[{i}]" if len(metas) > 1 else name
                raise value_error(op, arg, f"a tensor on the device of {ref_arg} ({ref.device})", meta.device)


def require(meta: TensorMeta | None, op: str, arg: str, why: str) -> TensorMeta:
    if meta is None:
        raise value_error(op, arg, f"a tensor ({why})", "None")
    return meta


# ----------------------------------------------------------------------------- host integer lists

def check_int_sequence_meta(op: str, arg: str, meta: TensorMeta) -> None:
    """A length argument given as a tensor: 1-D, integer dtype."""
    if meta.dtype is not None and meta.dtype not in INT_DTYPES:
        raise type_error(op, arg, "an integer tensor, list or tuple", f"dtype {meta.dtype}")
    if meta.shape is not None and len(meta.shape) != 1:
        raise value_error(op, arg, "a 1-D sequence", f"shape {quote(meta.shape)}")


def _is_integer(v: Any) -> bool:
    import numbers
    return isinstance(v, numbers.Integral) or type(v).__name__ == "SymInt"


def int_list(op: str, arg: str, value: Any) -> list[int] | None:
    """Host integer values of a length argument: ``list[int]``, tuple or 1-D integer tensor.

    Device tensors are read back to the host (the NPU ops take these as host arrays as well).
    """
    if value is None:
        return None
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        check_int_sequence_meta(op, arg, meta_of(value))
        if hasattr(value, "asnumpy"):  # MindSpore
            value = value.asnumpy()
        if hasattr(value, "detach"):  # torch, any device
            value = value.detach().cpu()
        return [int(v) for v in value.tolist()]
    if isinstance(value, (list, tuple)):
        out = []
        for v in value:
            # isinstance against numbers.Integral-like types only: torch.compile traces this with
            # SymInt elements, which are ints for our purpose (SymInt is not an int subclass).
            if isinstance(v, bool) or isinstance(v, float) or not _is_integer(v):
                raise type_error(op, arg, "integers", f"an element {v!r} of type {type(v).__name__}")
            out.append(v if type(v).__name__ == "SymInt" else int(v))
        return out
    raise type_error(op, arg, "a list, tuple or 1-D integer tensor", type(value).__name__)


def lengths_known(values: Any) -> bool:
    """Whether the values of a host length argument are known: ``None`` (absent) or a list of ints.

    Not known: ``...`` (nothing known: MindSpore's graph compile) or a list holding ``...`` (the count
    known, the values not: torch's fake kernels, where lengths are tensor data). Checks that read
    values are skipped then; the kernel that has the values runs them before writing any output.
    """
    return values is not Ellipsis and (values is None or not any(v is Ellipsis for v in values))


def cu_seqlens_list(op: str, arg: str, value: Any) -> list[int]:
    """Host values of a cumulative length array with a leading 0 (1-D integer tensor, list or tuple),
    non-decreasing, at least one sequence: flash-attn's ``cu_seqlens_*`` arguments."""
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        meta = meta_of(value)
        if meta.ndim != 1 or meta.dtype not in INT_DTYPES:
            raise type_error(op, arg, "a 1-D integer tensor (batch_size + 1,)",
                             f"{meta.dtype} tensor of shape {quote(meta.shape)}")
    values = int_list(op, arg, value)
    if len(values) < 2 or values[0] != 0 or any(a > b for a, b in zip(values, values[1:])):
        raise value_error(op, arg, "cumulative lengths (batch_size + 1,) starting at 0, non-decreasing "
                          "(e.g. [0, 2, 5])", quote(values))
    return values


def lengths_of(cu: Sequence[int]) -> list[int]:
    """Per-sequence lengths of a cumulative length list."""
    return [b - a for a, b in zip(cu, cu[1:])]


# ----------------------------------------------------------------------------- compressed masks (semantics.md §4)

# The canonical compressed atten_mask of each compressed sparse_mode, shape (rows, cols), 1 = masked:
# C2048 = triu(ones(2048, 2048), 1); C3072 (sparse_mode 6) = C2048 on top of [zeros(1024, 1024) | ones(1024, 1024)].
FA_COMPRESSED = {2: (2048, 2048), 3: (2048, 2048), 4: (2048, 2048), 6: (3072, 2048),
                 7: (2048, 2048), 8: (2048, 2048)}
COMPRESSED_MASK_FORMS = {2048: "triu(ones(2048, 2048), 1)",
                         3072: "[triu(ones(2048,2048),1); [zeros(1024,1024) | ones(1024,1024)]]"}


def compressed_mask_rows(sparse_mode: int) -> int:
    """Rows of the canonical compressed mask of ``sparse_mode`` (2048, or 3072 for sparse_mode 6)."""
    return FA_COMPRESSED.get(sparse_mode, (2048, 2048))[0]


def compressed_mask_error(op: str, sparse_mode: int, rows: int) -> ValueError:
    """The message when a compressed mask's content is not the canon."""
    return value_error(op, "atten_mask", f"the canonical compressed mask {COMPRESSED_MASK_FORMS[rows]} (1 = masked) "
                       f"for sparse_mode {sparse_mode}", "other content")
