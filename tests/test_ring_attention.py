"""Ring (context-parallel) attention: ``ascend_attn.ring_attention``.

The distributed tests start 2 and 4 gloo processes on this machine (this file run as a script
with ``--worker``, MASTER_ADDR=127.0.0.1 and a free port, bounded by a timeout). The parent
builds the global inputs, the workers shard them (zigzag for causal, zigzag or a plain uneven
split for non-causal), run ``ring_flash_attn_varlen_func`` forward and backward and save their
shards; the parent unshards and compares with single-process attention on the full sequences
(``flash_attention_varlen_score`` + autograd).
"""
from __future__ import annotations

import math
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

from ascend_attn.ring_attention import ring_flash_attn_varlen_func, zigzag_shard, zigzag_unshard  # noqa: E402

TIMEOUT_S = 60

# name: (seq lengths, heads q, heads kv, head dim, dtype, causal, split)
CASES = {
    "causal_fp32_gqa_d40": ((24, 8, 40), 4, 2, 40, torch.float32, True, "zigzag"),
    "causal_fp32_mha_d64_zero_len": ((16, 0, 32), 2, 2, 64, torch.float32, True, "zigzag"),
    "full_fp32_gqa_d64_plain_uneven": ((23, 3, 42), 4, 1, 64, torch.float32, False, "plain"),
    "full_fp32_mha_d40_zigzag": ((24, 8, 40), 2, 2, 40, torch.float32, False, "zigzag"),
    "causal_bf16_gqa_d64": ((24, 16, 32), 4, 2, 64, torch.bfloat16, True, "zigzag"),
}
WORLDS = (2, 4)


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
    if split == "zigzag":
        t, lcu = zigzag_shard(x, cu, rank, world, dim=dim)
        return t, [int(c) for c in lcu.tolist()]
    pieces, lcu = [], [0]
    for start, L in zip(cu, lens):
        b = _plain_bounds(L, world)
        pieces.append(x.narrow(dim, start + b[rank], b[rank + 1] - b[rank]))
        lcu.append(lcu[-1] + b[rank + 1] - b[rank])
    return torch.cat(pieces, dim=dim), lcu


def unshard(shards, lens, world, split, dim=0):
    if split == "zigzag":
        return zigzag_unshard(shards, _cu(lens), world, dim=dim)
    offs = [0] * world
    pieces = []
    for L in lens:
        b = _plain_bounds(L, world)
        for r in range(world):
            n = b[r + 1] - b[r]
            pieces.append(shards[r].narrow(dim, offs[r], n))
            offs[r] += n
    return torch.cat(pieces, dim=dim)


def make_inputs(name, spec=None):
    lens, n, nkv, d, dtype, causal, split = spec or CASES[name]
    g = torch.Generator().manual_seed(zlib.crc32(name.encode()))
    T = sum(lens)
    q = torch.randn(T, n, d, generator=g).to(dtype)
    k = torch.randn(T, nkv, d, generator=g).to(dtype)
    v = torch.randn(T, nkv, d, generator=g).to(dtype)
    dout = torch.randn(T, n, d, generator=g).to(dtype)
    return q, k, v, dout


def reference(name, spec=None):
    """Single-process attention on the full sequences, float32 (FA op + autograd)."""
    import ascend_attn
    from ascend_attn.testing.samples import compressed_mask
    lens, n, nkv, d, dtype, causal, split = spec or CASES[name]
    q, k, v, dout = (t.float() for t in make_inputs(name, spec))
    q, k, v = (t.requires_grad_() for t in (q, k, v))
    seq = _cu(lens)[1:]
    kw = dict(atten_mask=compressed_mask(3), sparse_mode=3) if causal else {}
    out, mx, sm = ascend_attn.flash_attention_varlen_score(q, k, v, n, seq, seq, scale_value=1 / math.sqrt(d),
                                                           softmax_out_layout="same_as_input", **kw)
    dq, dk, dv = torch.autograd.grad(out, (q, k, v), dout)
    empty = mx[..., 0] <= -3.4e38
    lse = torch.where(empty, torch.full_like(mx[..., 0], -math.inf), mx[..., 0] + sm[..., 0].log()).t()
    return {"out": out.detach(), "lse": lse, "dq": dq, "dk": dk, "dv": dv}


# ----------------------------------------------------------------------------- worker side

def worker_main(outdir, names):
    import torch.distributed as dist
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    results = {}
    for name in names:
        lens, n, nkv, d, dtype, causal, split = CASES[name]
        q, k, v, dout = (shard(t, lens, rank, world, split)[0] for t in make_inputs(name))
        lcu = shard(make_inputs(name)[0], lens, rank, world, split)[1]
        q, k, v = (t.clone().requires_grad_() for t in (q, k, v))
        t0 = time.perf_counter()
        out, lse, none = ring_flash_attn_varlen_func(q, k, v, torch.tensor(lcu, dtype=torch.int32),
                                                     max(max(lens), 1), causal=causal, return_attn_probs=True)
        t1 = time.perf_counter()
        out.backward(dout)
        t2 = time.perf_counter()
        results[name] = {"out": out.detach(), "lse": lse, "none": none, "dq": q.grad, "dk": k.grad, "dv": v.grad,
                         "fwd_s": t1 - t0, "bwd_s": t2 - t1}
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
            cache[world] = run_workers(world, list(CASES), tmp_path_factory.mktemp(f"ring{world}"))
        return cache[world]

    return get


def _tol(dtype):
    return dict(atol=2e-5, rtol=1e-5) if dtype == torch.float32 else dict(atol=4e-2, rtol=4e-2)


@pytest.mark.parametrize("world", WORLDS)
@pytest.mark.parametrize("name", list(CASES))
def test_ring_matches_single_process(ring_runs, world, name):
    lens, n, nkv, d, dtype, causal, split = CASES[name]
    per_rank = ring_runs(world)
    ref = reference(name)
    tol = _tol(dtype)
    for key in ("out", "dq", "dk", "dv"):
        got = unshard([r[name][key] for r in per_rank], lens, world, split)
        assert got.dtype == dtype and got.shape == ref[key].shape, key
        torch.testing.assert_close(got.float(), ref[key], **tol, msg=lambda m: f"{key}: {m}")
    lse = unshard([r[name]["lse"] for r in per_rank], lens, world, split, dim=1)
    assert lse.dtype == torch.float32 and lse.shape == (n, sum(lens))
    torch.testing.assert_close(lse, ref["lse"], atol=1e-5 if dtype == torch.float32 else 1e-2, rtol=1e-5)
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


@pytest.mark.parametrize("causal", [False, True])
def test_single_process_without_distributed(causal):
    """world 1 (no process group): plain attention, LSE and gradients equal the FA op's."""
    name = "causal_fp32_gqa_d40"
    lens, n, nkv, d, dtype, _, _ = CASES[name]
    spec = (lens, n, nkv, d, dtype, causal, "zigzag")
    ref = reference(name, spec)
    q, k, v, dout = make_inputs(name, spec)
    q, k, v = (t.requires_grad_() for t in (q, k, v))
    out, lse, _ = ring_flash_attn_varlen_func(q, k, v, _cu(lens), max(lens), causal=causal, return_attn_probs=True)
    out.backward(dout)
    for key, got in (("out", out), ("lse", lse), ("dq", q.grad), ("dk", k.grad), ("dv", v.grad)):
        torch.testing.assert_close(got.detach(), ref[key], atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("kwargs, arg", [
    (dict(window_size=(4, 0)), "window_size only supports \\(-1, -1\\), but got \\(4, 0\\)"),
    (dict(alibi_slopes=torch.ones(2)), "alibi_slopes only supports None"),
    (dict(dropout_p=0.1), "dropout_p only supports 0.0, but got 0.1"),
    (dict(cu_seqlens=[1, 4]), "cu_seqlens"),
    (dict(max_seqlen=2), "max_seqlen"),
])
def test_unsupported_arguments_raise(kwargs, arg):
    q = torch.randn(8, 2, 16)
    args = dict(cu_seqlens=[0, 4, 8], max_seqlen=4)
    args.update(kwargs)
    with pytest.raises(ValueError, match=f"ring_flash_attn_varlen_func: {arg}"):
        ring_flash_attn_varlen_func(q, q, q, **args)


def test_dtype_mismatch_raises():
    q = torch.randn(8, 2, 16)
    with pytest.raises(TypeError, match="ring_flash_attn_varlen_func: k/v dtype"):
        ring_flash_attn_varlen_func(q, q.half(), q.half(), [0, 8], 8)


if __name__ == "__main__" and len(sys.argv) == 4 and sys.argv[1] == "--worker":
    worker_main(sys.argv[2], sys.argv[3].split(","))
