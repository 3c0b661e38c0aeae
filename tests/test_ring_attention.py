"""Ring (context-parallel) attention: ``ascend_attn.ring_attention``.

The distributed tests start 2 (and, for a few cases, 4) gloo processes on this machine (this file
run as a script with ``--worker``, MASTER_ADDR=127.0.0.1 and a free port, bounded by a timeout).
The parent builds the global inputs, the workers shard them (contiguous pieces for
``ring_flash_attn_varlen_func`` / ``ring_flash_attn_func``, zigzag chunks for the zigzag forms),
run forward and backward and save their shards; the parent unshards and compares with
single-process attention on the full sequences (``flash_attn_varlen_func`` + autograd, itself
checked against a float64 reference in test_flash_attn_interface.py), under the same
``torch.manual_seed`` so that dropout draws the same keep bits.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from ascend_attn import ring_attention as R  # noqa: E402
from ascend_attn.ring_attention import (ring_flash_attn_varlen_func, zigzag_ring_flash_attn_varlen_func,  # noqa: E402
                                        zigzag_shard, zigzag_unshard)

TIMEOUT_S = 300  # a hang guard: 4 processes on a loaded 2-core machine take over a minute
SEED = 1234


class Case(dict):
    """lens, heads q / kv, head dim, dtype, split ("zigzag" | "contiguous" | "plain" = uneven
    contiguous), batched (the non-varlen function), and the keyword arguments of the call."""


def case(lens, n, nkv, d, dtype, split, batched=False, **kwargs):
    return Case(lens=lens, n=n, nkv=nkv, d=d, dtype=dtype, split=split, batched=batched, kwargs=kwargs)


CASES = {
    "causal_fp32_gqa_d40_zigzag": case((24, 8, 40), 4, 2, 40, torch.float32, "zigzag", causal=True),
    "causal_fp32_mha_d64_zero_len_zigzag": case((16, 0, 32), 2, 2, 64, torch.float32, "zigzag", causal=True),
    "full_fp32_gqa_d64_plain_uneven": case((23, 3, 42), 4, 1, 64, torch.float32, "plain"),
    "causal_window_fp32_plain_uneven": case((23, 3, 42), 4, 2, 40, torch.float32, "plain", causal=True,
                                            window_size=(7, -1)),
    "full_fp32_mha_d40_zigzag": case((24, 8, 40), 2, 2, 40, torch.float32, "zigzag"),
    "causal_bf16_gqa_d64_zigzag": case((24, 16, 32), 4, 2, 64, torch.bfloat16, "zigzag", causal=True),
    "causal_fp32_contiguous": case((24, 8, 40), 4, 2, 40, torch.float32, "contiguous", causal=True),
    "causal_window_alibi_bn_contiguous": case((24, 8, 40), 4, 2, 40, torch.float32, "contiguous", causal=True,
                                              window_size=(5, 0), alibi="BN"),
    "window_alibi_n_zigzag": case((24, 8, 40), 4, 2, 40, torch.float32, "zigzag", window_size=[3, 6], alibi="N"),
    "causal_dropout_contiguous": case((24, 8, 40), 2, 1, 40, torch.float32, "contiguous", causal=True, dropout_p=0.25),
    "dropout_window_zigzag": case((24, 8, 40), 2, 2, 40, torch.float32, "zigzag", window_size=(4, 2),
                                  dropout_p=0.25),
    "causal_window_alibi_dropout_contiguous": case((24, 8, 40), 4, 2, 40, torch.float32, "contiguous", causal=True,
                                                  window_size=(9, -1), alibi="N", dropout_p=0.2),
    "causal_batched_contiguous": case((16, 16, 16), 4, 2, 40, torch.float32, "contiguous", batched=True, causal=True),
    "causal_window_batched_zigzag": case((16, 16), 4, 4, 40, torch.float32, "zigzag", batched=True, causal=True,
                                         window_size=(6, -1)),
}
WORLD4_CASES = ("causal_window_alibi_dropout_contiguous",)


def _cu(lens):
    cu = [0]
    for L in lens:
        cu.append(cu[-1] + L)
    return cu


def _plain_bounds(L, world):
    """Contiguous uneven split of one sequence: rank r gets rows [b[r], b[r+1])."""
    base, extra = divmod(L, world)
    sizes = [base + (1 if r < extra else 0) for r in range(world)]
    sizes = sizes[::-1]  # put the short pieces first so that low ranks may be empty
    b = [0]
    for s in sizes:
        b.append(b[-1] + s)
    return b


def shard(x, lens, rank, world, split, dim=0):
    """(local tensor, local cu) of a packed global tensor."""
    cu = _cu(lens)
    if split in ("zigzag", "contiguous"):
        fn = zigzag_shard if split == "zigzag" else R.contiguous_shard
        t, lcu = fn(x, cu, rank, world, dim=dim)
        return t, [int(c) for c in lcu.tolist()]
    pieces, lcu = [], [0]
    for start, L in zip(cu, lens):
        b = _plain_bounds(L, world)
        pieces.append(x.narrow(dim, start + b[rank], b[rank + 1] - b[rank]))
        lcu.append(lcu[-1] + b[rank + 1] - b[rank])
    return torch.cat(pieces, dim=dim), lcu


def unshard(shards, lens, world, split, dim=0):
    if split in ("zigzag", "contiguous"):
        fn = zigzag_unshard if split == "zigzag" else R.contiguous_unshard
        return fn(shards, _cu(lens), world, dim=dim)
    offs = [0] * world
    pieces = []
    for L in lens:
        b = _plain_bounds(L, world)
        for r in range(world):
            n = b[r + 1] - b[r]
            pieces.append(shards[r].narrow(dim, offs[r], n))
            offs[r] += n
    return torch.cat(pieces, dim=dim)


def make_inputs(name):
    c = CASES[name]
    g = torch.Generator().manual_seed(zlib.crc32(name.encode()))
    T = sum(c["lens"])
    q = torch.randn(T, c["n"], c["d"], generator=g).to(c["dtype"])
    k = torch.randn(T, c["nkv"], c["d"], generator=g).to(c["dtype"])
    v = torch.randn(T, c["nkv"], c["d"], generator=g).to(c["dtype"])
    dout = torch.randn(T, c["n"], c["d"], generator=g).to(c["dtype"])
    kwargs = dict(c["kwargs"])
    if "alibi" in kwargs:
        shape = (c["n"],) if kwargs.pop("alibi") == "N" else (len(c["lens"]), c["n"])
        kwargs["alibi_slopes"] = torch.rand(shape, generator=g) * 0.5
    return q, k, v, dout, kwargs


def reference(name):
    """Single-process flash_attn_varlen_func on the full sequences, float32, same dropout seed."""
    import ascend_attn
    c = CASES[name]
    q, k, v, dout, kwargs = make_inputs(name)
    q, k, v, dout = (t.float() for t in (q, k, v, dout))
    q, k, v = (t.requires_grad_() for t in (q, k, v))
    cu = torch.tensor(_cu(c["lens"]), dtype=torch.int32)
    torch.manual_seed(SEED)
    out, lse, _ = ascend_attn.flash_attn_varlen_func(q, k, v, cu, cu, max(c["lens"]), max(c["lens"]),
                                                     return_attn_probs=True, **kwargs)
    dq, dk, dv = torch.autograd.grad(out, (q, k, v), dout)
    return {"out": out.detach(), "lse": lse, "dq": dq, "dk": dk, "dv": dv}


def ring_call(name, q, k, v, lcu):
    """The ring function of the case on local TND shards; returns (out, lse [N, T_local], third)."""
    c = CASES[name]
    kwargs = make_inputs(name)[4]
    zigzag = c["split"] == "zigzag"
    torch.manual_seed(SEED)
    if not c["batched"]:
        fn = zigzag_ring_flash_attn_varlen_func if zigzag else ring_flash_attn_varlen_func
        return fn(q, k, v, torch.tensor(lcu, dtype=torch.int32), max(max(lcu[i + 1] - lcu[i] for i in
                  range(len(lcu) - 1)), 1), return_attn_probs=True, **kwargs)
    fn = R.zigzag_ring_flash_attn_func if zigzag else R.ring_flash_attn_func
    b = len(c["lens"])
    as4 = lambda t: t.reshape(b, -1, *t.shape[1:])
    out, lse, third = fn(as4(q), as4(k), as4(v), return_attn_probs=True, **kwargs)
    assert lse.shape == (b, c["n"], q.shape[0] // b)
    return out.reshape(q.shape), lse.transpose(0, 1).reshape(c["n"], -1), third


# ----------------------------------------------------------------------------- worker side

def worker_main(outdir, names):
    import torch.distributed as dist
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    results = {}
    for name in names:
        c = CASES[name]
        q, k, v, dout, _ = make_inputs(name)
        (q, lcu), (k, _), (v, _), (dout, _) = (shard(t, c["lens"], rank, world, c["split"]) for t in (q, k, v, dout))
        q, k, v = (t.clone().requires_grad_() for t in (q, k, v))
        out, lse, third = ring_call(name, q, k, v, lcu)
        out.backward(dout)
        results[name] = {"out": out.detach(), "lse": lse, "none": third, "dq": q.grad, "dk": k.grad, "dv": v.grad}
    torch.save(results, os.path.join(outdir, f"rank{rank}.pt"))
    dist.barrier()
    dist.destroy_process_group()


# ----------------------------------------------------------------------------- parent side

def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_workers(world, names, outdir):
    env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()), WORLD_SIZE=str(world),
               OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    if sys.platform.startswith("linux"):
        env.setdefault("GLOO_SOCKET_IFNAME", "lo")  # loopback only: the host name may not resolve locally
    procs = []
    for rank in range(world):
        procs.append(subprocess.Popen([sys.executable, __file__, "--worker", str(outdir), ",".join(names)],
                                      env=dict(env, RANK=str(rank), LOCAL_RANK=str(rank)),
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    deadline = time.monotonic() + TIMEOUT_S
    logs = []
    try:
        for p in procs:
            out, _ = p.communicate(timeout=max(1.0, deadline - time.monotonic()))
            logs.append(out)
    except subprocess.TimeoutExpired:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        pytest.fail(f"ring workers (world {world}) did not finish within {TIMEOUT_S} s")
    for rank, (p, log) in enumerate(zip(procs, logs)):
        assert p.returncode == 0, f"rank {rank} of {world} failed:\n{log[-4000:]}"
    return [torch.load(os.path.join(outdir, f"rank{r}.pt")) for r in range(world)]


@pytest.fixture(scope="module")
def ring_runs(tmp_path_factory):
    cache = {}

    def get(world):
        if world not in cache:
            names = list(CASES) if world == 2 else list(WORLD4_CASES)
            cache[world] = run_workers(world, names, tmp_path_factory.mktemp(f"ring{world}"))
        return cache[world]

    return get


def _tol(dtype):
    return dict(atol=2e-5, rtol=1e-5) if dtype == torch.float32 else dict(atol=4e-2, rtol=4e-2)


@pytest.mark.parametrize("world,name", [(2, n) for n in CASES] + [(4, n) for n in WORLD4_CASES])
def test_ring_matches_single_process(ring_runs, world, name):
    c = CASES[name]
    per_rank = ring_runs(world)
    ref = reference(name)
    tol = _tol(c["dtype"])
    for key in ("out", "dq", "dk", "dv"):
        got = unshard([r[name][key] for r in per_rank], c["lens"], world, c["split"])
        assert got.dtype == c["dtype"] and got.shape == ref[key].shape, key
        torch.testing.assert_close(got.float(), ref[key], **tol, msg=lambda m: f"{key}: {m}")
    lse = unshard([r[name]["lse"] for r in per_rank], c["lens"], world, c["split"], dim=1)
    assert lse.dtype == torch.float32 and lse.shape == (c["n"], sum(c["lens"]))
    torch.testing.assert_close(lse, ref["lse"], atol=1e-5 if c["dtype"] == torch.float32 else 1e-2, rtol=1e-5)
    assert all(r[name]["none"] is None for r in per_rank)


def test_zigzag_shard_unshard_roundtrip():
    lens = (8, 0, 24, 16)
    cu = torch.tensor(_cu(lens), dtype=torch.int32)
    x = torch.arange(sum(lens) + 3, dtype=torch.float32)[:, None, None].expand(-1, 2, 3).contiguous()  # 3 tail rows
    for world in (1, 2, 4):
        shards = [zigzag_shard(x, cu, r, world) for r in range(world)]
        for s, lcu in shards:
            assert lcu.tolist() == _cu([L // world for L in lens])
        torch.testing.assert_close(zigzag_unshard([s for s, _ in shards], cu, world), x[:sum(lens)], rtol=0, atol=0)
    # rank r holds chunks r and 2*world-1-r of every sequence
    s1, _ = zigzag_shard(x, cu, 1, 2)
    # (world 2: 4 chunks per sequence; lengths 8, 0, 24, 16 -> chunk sizes 2, 0, 6, 4; rank 1: chunks 1, 2)
    assert s1[:, 0, 0].tolist() == [2, 3, 4, 5] + list(range(8 + 6, 8 + 18)) + list(range(32 + 4, 32 + 12))
    with pytest.raises(ValueError, match="divisible by 2 \\* world"):
        zigzag_shard(x, [0, 6], 0, 2)


@pytest.mark.parametrize("d", [40, 64])  # SBH view / TND layout of RingAttentionUpdate
def test_merge_empty_partials(d):
    """semantics.md §8.4: an empty partial gets weight 0 without NaN; two empty ones stay empty."""
    from ascend_attn.ring_attention import FLT_MAX, _merge
    T, N = 3, 2
    g = torch.Generator().manual_seed(1)
    full = (torch.randn(T, N, d, generator=g), torch.randn(T, N, 1, generator=g).expand(T, N, 8).contiguous(),
            (1 + torch.rand(T, N, 1, generator=g)).expand(T, N, 8).contiguous())
    empty = (torch.zeros(T, N, d), torch.full((T, N, 8), -FLT_MAX), torch.full((T, N, 8), FLT_MAX))
    for a, b in ((full, empty), (empty, full)):
        out, mx, sm = _merge(a, b)
        for x, y in zip((out, mx, sm), full):
            torch.testing.assert_close(x, y, rtol=0, atol=0)
    out, mx, sm = _merge(empty, empty)
    assert not out.isnan().any() and (out == 0).all()
    assert (mx == -FLT_MAX).all() and (sm == FLT_MAX).all()
    # then a non-empty partial after two empty ones: exactly the non-empty one
    for x, y in zip(_merge((out, mx, sm), full), full):
        torch.testing.assert_close(x, y, rtol=0, atol=0)


@pytest.mark.parametrize("name", ["causal_fp32_gqa_d40_zigzag", "causal_window_alibi_bn_contiguous",
                                  "causal_dropout_contiguous", "causal_batched_contiguous"])
def test_single_process_without_distributed(name):
    """world 1 (no process group): plain attention; out, LSE and gradients equal flash-attn's."""
    c = CASES[name]
    ref = reference(name)
    q, k, v, dout, _ = make_inputs(name)
    q, k, v = (t.requires_grad_() for t in (q, k, v))
    out, lse, _ = ring_call(name, q, k, v, _cu(c["lens"]))
    out.backward(dout)
    for key, got in (("out", out), ("lse", lse), ("dq", q.grad), ("dk", k.grad), ("dv", v.grad)):
        torch.testing.assert_close(got.detach(), ref[key], atol=1e-6, rtol=1e-6)


def test_contiguous_shard_unshard_roundtrip():
    lens = (8, 0, 12)
    x = torch.arange(sum(lens), dtype=torch.float32)[:, None]
    for world in (1, 2, 4):
        shards = [R.contiguous_shard(x, _cu(lens), r, world) for r in range(world)]
        assert all(lcu.tolist() == [c // world for c in _cu(lens)] for _, lcu in shards)
        torch.testing.assert_close(R.contiguous_unshard([s for s, _ in shards], _cu(lens)), x, rtol=0, atol=0)
    assert R.contiguous_shard(x, _cu(lens), 1, 2)[0][:, 0].tolist() == [4, 5, 6, 7] + list(range(14, 20))
    with pytest.raises(ValueError, match="contiguous_shard: cu_seqlens only supports sequence lengths divisible by"):
        R.contiguous_shard(x, [0, 6], 0, 4)


ERRORS = [  # (function, how the inputs change, the argument the message must name)
    (ring_flash_attn_varlen_func, dict(window_size=(1.5, 0)), "window_size"),
    (ring_flash_attn_varlen_func, dict(alibi_slopes=torch.ones(3)), "alibi_slopes"),
    (ring_flash_attn_varlen_func, dict(alibi_slopes=torch.ones(2, dtype=torch.float64)), "alibi_slopes"),
    (ring_flash_attn_varlen_func, dict(dropout_p=1.0), "dropout_p"),
    (ring_flash_attn_varlen_func, dict(cu_seqlens=[1, 4]), "cu_seqlens"),
    (ring_flash_attn_varlen_func, dict(cu_seqlens=[0, 4, 9]), "cu_seqlens"),
    (ring_flash_attn_varlen_func, dict(max_seqlen=2), "max_seqlen"),
    (ring_flash_attn_varlen_func, dict(k=torch.randn(8, 3, 16)), "k"),
    (ring_flash_attn_varlen_func, dict(v=torch.randn(8, 2, 8)), "v"),
    (ring_flash_attn_varlen_func, dict(q=torch.randn(1, 8, 2, 16)), "q"),
    (ring_flash_attn_varlen_func, dict(k=torch.randn(8, 2, 16).half()), "k"),
    (R.ring_flash_attn_func, dict(q=torch.randn(8, 2, 16)), "q"),
    (R.ring_flash_attn_varlen_kvpacked_func, dict(kv=torch.randn(8, 3, 2, 16)), "kv"),
]


@pytest.mark.parametrize("fn,change,arg", ERRORS, ids=[f"{e[0].__name__}-{e[2]}-{i}" for i, e in enumerate(ERRORS)])
def test_errors_name_the_argument(fn, change, arg):
    q = torch.randn(8, 2, 16)
    args = dict(q=q, k=q.clone(), v=q.clone(), cu_seqlens=[0, 4, 8], max_seqlen=4)
    if fn is R.ring_flash_attn_func:
        args = dict(q=q.view(2, 4, 2, 16), k=q.view(2, 4, 2, 16), v=q.view(2, 4, 2, 16))
    if fn is R.ring_flash_attn_varlen_kvpacked_func:
        args = dict(q=q, kv=torch.stack([q, q], 1), cu_seqlens=[0, 4, 8], max_seqlen=4)
    args.update(change)
    with pytest.raises((ValueError, TypeError)) as info:
        fn(**args)
    assert str(info.value).startswith(f"{fn.__name__}: {arg} only supports"), str(info.value)


if __name__ == "__main__" and len(sys.argv) == 4 and sys.argv[1] == "--worker":
    worker_main(sys.argv[2], sys.argv[3].split(","))
