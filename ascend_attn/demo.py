"""``ascend-attn demo``: every op on realistic small shapes, checked against float64.

Each section is a function returning result rows ``(op, case, dtype, max_abs_err, tolerance,
ms)``; the demo fails (exit 1) when any error exceeds its tolerance. Sections so far:

* RingAttentionUpdate folds attention computed over key chunks into the full attention of
  packed variable-length sequences (TND, both statistics layouts) and of a batch (SBH).
* FlashAttention varlen forward + grad V4 on packed causal GQA sequences (three dtypes), and a
  tiny packed-sequence attention model trained a few steps through them (loss must fall).
* IncreFlashAttention decodes a few tokens (the cache grows by one per step) in fp16, from a
  paged int8 cache (antiquant), and in the three int8 scenarios (A: int8 -> int8,
  B: int8 -> fp16, C: fp16 -> int8); int8 outputs are compared in quantisation steps.
"""
from __future__ import annotations

import sys
import textwrap
import time
import warnings

import numpy as np

# Max abs error allowed against float64 for outputs of size ~1: a few roundings of the dtype.
DTYPE_TOL = {"float32": 1e-5, "bfloat16": 3e-2, "float16": 4e-3}


def _timed(fn, repeat: int = 3):
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return result, best * 1e3


def _chunk_partials(q, k, v, seq_lens, chunks: int, scale: float):
    """Attention of each query over the c-th chunk of its own sequence's keys, c < chunks.

    q/k/v ``[T, N, D]`` (packed), computed in their dtype. Returns per chunk ``(out [T,N,D], max [T,N], sum [T,N])``.
    """
    import torch
    parts = [[], [], []]
    for c in range(chunks):
        outs, maxs, sums = [], [], []
        start = 0
        for length in seq_lens:
            qs, ks, vs = (x[start:start + length] for x in (q, k, v))
            keys = torch.tensor_split(torch.arange(length), chunks)[c]  # needs length >= chunks
            z = torch.einsum("qnd,knd->nqk", qs, ks[keys]) * scale
            m = z.amax(-1)
            e = torch.exp(z - m[..., None])
            s = e.sum(-1)
            outs.append(torch.einsum("nqk,knd->qnd", e, vs[keys]) / s.T[..., None])
            maxs.append(m.T)
            sums.append(s.T)
            start += length
        for acc, piece in zip(parts, (outs, maxs, sums)):
            acc.append(torch.cat(piece))
    return list(zip(*parts))


def _tnd_to_ntd(x, seq_lens):
    """[T, N] token-major rows -> the same [T, N] storage holding per-sequence [N, S_b] blocks."""
    import torch
    blocks, start = [], 0
    for length in seq_lens:
        blocks.append(x[start:start + length].T.reshape(-1))
        start += length
    return torch.cat(blocks).reshape(x.shape)


def _full_attention(q, k, v, seq_lens, scale):
    """float64 reference attention of each packed sequence over all its keys, [T, N, D]."""
    from .testing import reference as ref
    outs, start = [], 0
    for length in seq_lens:
        sl = slice(start, start + length)
        outs.append(ref.partial_attention(q[sl].numpy(), k[sl].numpy(), v[sl].numpy(), scale)[0])
        start += length
    return np.concatenate(outs)


def _fold(inputs, **kwargs):
    import ascend_attn
    acc = inputs[0]
    for nxt in inputs[1:]:
        acc = ascend_attn.ring_attention_update(*acc, *nxt, **kwargs)
    return acc


def section_ring_attention_update(rng, small: bool):
    """Partials of key chunks (exact, float64, then stored as the op's dtypes) folded by the op."""
    import torch

    lanes = lambda x: x.float()[..., None].expand(*x.shape, 8).contiguous()
    heads, dim, chunks = (2, 64, 3) if small else (8, 128, 4)
    seq_lens = [24, 8, 40] if small else [384, 128, 512, 256, 64, 192]
    total = sum(seq_lens)
    q, k, v = (torch.from_numpy(rng.standard_normal((total, heads, dim))) for _ in range(3))
    scale = dim ** -0.5
    partials = _chunk_partials(q, k, v, seq_lens, chunks, scale)
    full = _full_attention(q, k, v, seq_lens, scale)
    seq = [0] + np.cumsum(seq_lens).tolist()
    rows = []
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        name = str(dtype).split(".")[-1]
        for sm_layout in ("", "TND"):
            def as_op(out, m, s):
                if sm_layout == "":
                    m, s = _tnd_to_ntd(m, seq_lens), _tnd_to_ntd(s, seq_lens)
                return out.to(dtype), lanes(m), lanes(s)
            inputs = [as_op(*p) for p in partials]
            acc, ms_time = _timed(lambda: _fold(inputs, actual_seq_qlen=seq, input_layout="TND",
                                                input_softmax_layout=sm_layout))
            err = float(np.abs(acc[0].double().numpy() - full).max())
            rows.append(("ring_attention_update", f"TND {'NTD' if sm_layout == '' else 'TND'} stats, "
                         f"T={total} N={heads} D={dim}, {chunks} key chunks", name, err, DTYPE_TOL[name], ms_time))
    # SBH: a batch of equal-length sequences, the layout of MindSpeed's ring attention.
    batch, s_len = (2, 16) if small else (4, 256)
    q, k, v = (x[: batch * s_len] for x in (q, k, v))
    partials = _chunk_partials(q, k, v, [s_len] * batch, chunks, scale)
    full = _full_attention(q, k, v, [s_len] * batch, scale)

    def to_sbh(out, m, s, dtype):
        attn = out.reshape(batch, s_len, heads * dim).transpose(0, 1).to(dtype).contiguous()
        stat = lambda x: lanes(x.reshape(batch, s_len, heads).permute(0, 2, 1))
        return attn, stat(m), stat(s)
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        name = str(dtype).split(".")[-1]
        inputs = [to_sbh(*p, dtype) for p in partials]
        acc, ms_time = _timed(lambda: _fold(inputs))
        got = acc[0].double().transpose(0, 1).reshape(-1, heads, dim).numpy()
        rows.append(("ring_attention_update", f"SBH S={s_len} B={batch} H={heads * dim}, {chunks} key chunks",
                     name, float(np.abs(got - full).max()), DTYPE_TOL[name], ms_time))
    return rows


def section_flash_attention(rng, small: bool):
    """Forward and gradients of a packed causal GQA batch against the float64 reference."""
    import torch

    import ascend_attn
    from .testing import fa_reference as R
    from .testing.samples import compressed_mask
    seq_lens = [37, 12, 64] if small else [300, 77, 512, 135]
    heads_q, heads_kv, dim = (4, 2, 32) if small else (8, 2, 64)
    total = sum(seq_lens)
    cum = np.cumsum(seq_lens).tolist()
    base = [rng.standard_normal((total, n, dim)) for n in (heads_q, heads_kv, heads_kv)]
    dy = rng.standard_normal((total, heads_q, dim))
    kwargs = dict(scale_value=dim ** -0.5, sparse_mode=3, atten_mask=compressed_mask(3))
    ref = None
    rows = []
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        name = str(dtype).split(".")[-1]
        q, k, v = (torch.from_numpy(x).to(dtype).requires_grad_() for x in base)
        g = torch.from_numpy(dy).to(dtype)

        def step():
            for x in (q, k, v):
                x.grad = None
            out = ascend_attn.flash_attention_varlen_score(q, k, v, heads_q, cum, cum, **kwargs)[0]
            out.backward(g)
            return out
        out, ms_time = _timed(step, repeat=1)
        # The reference sees the same dtype-valued inputs, so the error is the op's alone.
        f64 = [x.detach().double().numpy() for x in (q, k, v)]
        ref_kw = dict(scale_value=kwargs["scale_value"], sparse_mode=3, atten_mask=kwargs["atten_mask"].numpy())
        ref_out, rmax, rsum = R.flash_attention_forward(*f64, heads_q, cum, cum, **ref_kw)
        ref = R.flash_attention_backward(*f64, g.double().numpy(), heads_q, cum, cum, rmax, rsum, ref_out, **ref_kw)
        errs = [np.abs(out.detach().double().numpy() - ref_out).max()] + [
            np.abs(x.grad.double().numpy() - r).max() / max(1.0, np.abs(r).max()) for x, r in zip((q, k, v), ref)]
        case = f"TND causal GQA {heads_q}:{heads_kv}, T={total} in {len(seq_lens)} seqs, D={dim}"
        rows.append(("flash_attention_varlen_score", case, name, float(errs[0]), DTYPE_TOL[name] * 2, ms_time))
        rows.append(("flash_attention_unpadding_score_grad", case + " (dq/dk/dv rel.)", name, float(max(errs[1:])),
                     DTYPE_TOL[name] * 4, float("nan")))
    return rows


def section_train_packed_model(rng, small: bool):
    """A tiny attention model over packed sequences learns to copy the previous token's value."""
    import torch

    import ascend_attn
    from .testing.samples import compressed_mask
    torch.manual_seed(int(rng.integers(1 << 31)))
    seq_lens = [9, 23, 16] if small else [40, 97, 64, 23]
    cum = np.cumsum(seq_lens).tolist()
    total, width, heads, dim = sum(seq_lens), 32, 4, 16
    x = torch.randn(total, width)
    # Target: each token's features shifted from the previous token of its own sequence.
    starts = np.concatenate([[0], cum[:-1]])
    prev = torch.tensor([t - 1 if t not in starts else t for t in range(total)])
    target = x[prev]
    qkv = torch.nn.Linear(width, 3 * heads * dim)
    proj = torch.nn.Linear(heads * dim, width)
    opt = torch.optim.Adam(list(qkv.parameters()) + list(proj.parameters()), lr=1e-2)
    mask = compressed_mask(3)
    losses = []
    start = time.perf_counter()
    for _ in range(12 if small else 30):
        q, k, v = qkv(x).view(total, 3, heads, dim).unbind(1)
        att = ascend_attn.flash_attention_varlen_score(q.contiguous(), k.contiguous(), v.contiguous(), heads, cum,
                                                       cum, scale_value=dim ** -0.5, sparse_mode=3,
                                                       atten_mask=mask)[0]
        loss = torch.nn.functional.mse_loss(proj(att.reshape(total, -1)), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    ms_time = (time.perf_counter() - start) * 1e3 / len(losses)
    falling = losses[-1] < 0.8 * losses[0]
    return [("train step (fwd+grad ops)", f"{len(seq_lens)} packed seqs, loss {losses[0]:.3f} -> {losses[-1]:.3f}",
             "float32", losses[-1] / losses[0], 0.8, ms_time)]


def section_decode(rng, small: bool):
    import torch

    import ascend_attn
    from .testing import ifa_reference as R
    from .testing.samples import numpy_kwargs
    batch, heads_q, heads_kv, dim = (2, 8, 2, 32) if small else (4, 16, 4, 128)
    kv_len, block = (64, 32) if small else (2048, 128)
    start_lens = [kv_len - 3 - 5 * b for b in range(batch)]
    g = torch.Generator().manual_seed(int(rng.integers(1 << 31)))
    q16 = torch.randn(batch, 1, heads_q * dim, generator=g).half()
    k16, v16 = (torch.randn(batch, kv_len, heads_kv * dim, generator=g).half() for _ in range(2))
    # int8 cache: per-channel symmetric quantisation of the fp16 cache
    ks, vs = (x.float().abs().amax((0, 1)) / 127 for x in (k16, v16))
    k8, v8 = ((x.float() / s).round().clamp(-128, 127).to(torch.int8) for x, s in ((k16, ks), (v16, vs)))
    pages = kv_len // block
    table = torch.randperm(batch * pages, generator=g).view(batch, pages).to(torch.int32)
    def to_pages(x):
        cache = torch.empty(batch * pages, block, x.shape[-1], dtype=x.dtype)
        cache[table.long().view(-1)] = x.reshape(batch * pages, block, -1)
        return cache
    # full int8 (scenarios A/B): per-tensor symmetric scales s_q, s_k, s_v
    sq, sk, sv = (float(x.float().abs().max() / 127) for x in (q16, k16, v16))
    q8, k8t, v8t = ((x.float() / s).round().to(torch.int8) for x, s in ((q16, sq), (k16, sk), (v16, sv)))
    base = dict(num_heads=heads_q, num_key_value_heads=heads_kv, scale_value=dim ** -0.5)
    int8_params = dict(dequant_scale1=ascend_attn.trans_quant_param(torch.tensor([sq * sk])),
                       quant_scale1=torch.tensor([127.0]), dequant_scale2=torch.tensor([sv / 127.0]))
    out_scale = torch.full((heads_q * dim,), 40.0)
    cases = [
        ("fp16 cache", "float16", (q16, k16, v16), {}),
        ("paged int8 cache, antiquant per channel", "float16", (q16, to_pages(k8), to_pages(v8)),
         dict(block_table=table, block_size=block, antiquant_scale=torch.stack([ks, vs]).half())),
        ("scenario C: fp16 in, int8 out (per channel)", "int8", (q16, k16, v16), dict(quant_scale2=out_scale)),
        ("scenario B: int8 in, fp16 out", "float16", (q8, k8t, v8t), int8_params),
        ("scenario A: int8 in, int8 out", "int8", (q8, k8t, v8t),
         dict(int8_params, quant_scale2=torch.tensor([40.0]), quant_offset2=torch.tensor([2.0]))),
    ]
    rows = []
    for name, out_kind, (q, k, v), extra in cases:
        worst, total = 0.0, 0.0
        for step in range(3):  # decode: every step sees one more cached token
            lens = [n + step for n in start_lens]
            kw = dict(base, actual_seq_lengths=lens, **extra)
            start = time.perf_counter()
            got = ascend_attn.incre_flash_attention(q, k, v, **kw)
            total += time.perf_counter() - start
            conv = lambda t: t.numpy()
            want = R.incre_flash_attention(conv(q), conv(k), conv(v), round_dtype=None, **numpy_kwargs(kw))
            worst = max(worst, float(np.abs(got.double().numpy() - want).max()))
        tol = 1.0 if out_kind == "int8" else DTYPE_TOL["float16"]
        rows.append(("incre_flash_attention", f"{name}, B={batch} Nq={heads_q} Nkv={heads_kv} D={dim} "
                     f"KV~{kv_len}, 3 steps" + (" (err in int8 steps)" if out_kind == "int8" else ""),
                     str(got.dtype).split(".")[-1], worst, tol, total * 1e3 / 3))
    return rows


def section_self_attention(rng, small: bool):
    """ATB SelfAttention flows (prefill with a KV cache, paged-attention prefill with compressed ALiBi,
    decode over a cache, full quantization) against the float64 reference."""
    import ascend_attn
    from .testing import sa_reference as R
    from .testing.sa_samples import reference_inputs, sa_case
    heads, dim = ((4, 2), 16) if small else ((16, 4), 128)
    cases = [("ENCODER prefill into a KV cache, causal", (), dict(calc_type=1, mask_type=3)),
             ("DECODER step over the cache, logN, high precision", ("logn", "high_precision"), dict(calc_type=2)),
             ("PA_ENCODER, compressed ALiBi, high precision", ("compressed", "high_precision"), dict(mask_type=4)),
             ("PA_ENCODER, offline full int8 quantization", ("quant",), dict(quant_type=2))]
    rows = []
    for name, features, extra in cases:
        args, kwargs = sa_case(features, heads=heads, dim=dim, seed=int(rng.integers(1 << 31)), **extra)
        ref_args, ref_kwargs = reference_inputs(args, kwargs)  # before the op writes the caches
        start = time.perf_counter()
        got = ascend_attn.self_attention(*args, **kwargs)
        ms = (time.perf_counter() - start) * 1e3
        want = R.self_attention(*ref_args, **ref_kwargs)[0]
        dtype = str(got.dtype).split(".")[-1]
        diff = np.abs(got.double().numpy() - want)
        if "quant" in features:
            # an int8 P element rounded from fp32 may land one step away from the float64 reference's: one
            # step moves an output by up to max|V| * vpv_descale (/ 127 online), so the error is in P steps
            step = float(kwargs["vpv_descale"].max()) * float(args[2].abs().max().float())
            err, tol, unit = float(diff.max()) / step, 2.0, "err in P int8 steps"
        else:
            err, tol, unit = float(np.nanmax(diff / (1.0 + np.abs(want)))), DTYPE_TOL[dtype], "relative err"
        rows.append(("self_attention", f"{name}, N={heads[0]} Nkv={heads[1]} D={dim} ({unit})", dtype, err, tol, ms))
    return rows


SECTIONS = [("RingAttentionUpdate: fold key-chunk partials", section_ring_attention_update),
            ("FlashAttention varlen fwd + grad V4", section_flash_attention),
            ("Train a packed-sequence model", section_train_packed_model),
            ("IncreFlashAttention decode", section_decode),
            ("ATB SelfAttention", section_self_attention)]


# What a case's error is measured in, from the note that ends its description.
_UNITS = (("(err in P int8 steps)", "P steps"), ("(err in int8 steps)", "steps"), ("(relative err)", "rel"),
          ("(dq/dk/dv rel.)", "rel"))
CASE_WIDTH = 44  # keeps the table within 100 columns


def _unit(case: str, op: str) -> tuple[str, str]:
    """(case without its unit note, unit of its error)."""
    for note, unit in _UNITS:
        if case.endswith(note):
            return case[: -len(note)].rstrip(" ,"), unit
    return case, "ratio" if op.startswith("train") else "abs"


def format_results(rows) -> list[str]:
    """The results as lines of at most 100 columns: one heading line per op, then its cases
    (descriptions wrapped) with the error, its limit and unit, how much of the limit it uses, and ms."""
    lines = [f"  {'case':<{CASE_WIDTH}}  {'dtype':<8}  {'error':>9}  {'limit':<14}  {'used':>5}  {'ms':>7}"]
    lines.append("  " + "-" * (len(lines[0]) - 2))
    first_seen = {op: i for i, (op, *_rest) in reversed(list(enumerate(rows)))}
    last_op = None
    for op, case, dtype, err, tol, ms in sorted(rows, key=lambda r: first_seen[r[0]]):  # stable: grouped by op
        if op != last_op:
            lines.append(op)
            last_op = op
        text, unit = _unit(case, op)
        wrapped = textwrap.wrap(text, CASE_WIDTH) or [""]
        used = f"{100 * err / tol:.0f}%" if tol else "-"
        timing = "-" if ms != ms else f"{ms:.2f}"
        limit = f"<= {tol:.0e} {unit}" if tol < 0.1 else f"<= {tol:g} {unit}"
        lines.append(f"  {wrapped[0]:<{CASE_WIDTH}}  {dtype:<8}  {err:9.2e}  {limit:<14}  {used:>5}  {timing:>7}")
        lines += [f"    {more}" for more in wrapped[1:]]
    return lines


def run_demo(seed: int = 0, small: bool = False, threads: int | None = None, out=None) -> int:
    import torch
    from tqdm import tqdm

    from .backends import select
    out = out or sys.stdout
    if threads is not None:
        torch.set_num_threads(threads)
    backend, _ = select("torch", "flash_attention_varlen_score", "cpu")
    print(f"ascend-attn demo: CPU, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"FA backend {backend.name}", file=out)
    rng = np.random.default_rng(seed)
    rows = []
    with tqdm(SECTIONS, desc="demo", unit="section", file=sys.stderr, leave=False) as bar:
        for title, section in bar:
            bar.set_postfix_str(title)  # the section now running
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                rows += section(rng, small)
            for w in caught:  # printed through tqdm so they do not break the bar
                bar.write(f"warning in {title!r}: {w.category.__name__}: {w.message}")
    for line in format_results(rows):
        print(line, file=out)
    failed = [r for r in rows if not r[3] <= r[4]]
    print(f"{len(rows) - len(failed)} of {len(rows)} results within their limit", file=out)
    return 1 if failed else 0
