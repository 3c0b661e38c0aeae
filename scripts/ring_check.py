#!/usr/bin/env python
"""Check ring attention on a real process group and time it (not used by CI).

    torchrun --nproc_per_node=N scripts/ring_check.py --backend nccl --device cuda
    torchrun --nproc_per_node=N scripts/ring_check.py --backend gloo --device cpu
    torchrun --nproc_per_node=N scripts/ring_check.py --backend hccl --device npu

Every rank builds the same global packed inputs (fixed seed), takes its shard (zigzag chunks for
``zigzag_ring_flash_attn_varlen_func``, contiguous pieces for ``ring_flash_attn_varlen_func``;
``--split``), runs the ring function forward + backward, and compares
its shard of out / LSE / dq / dk / dv with single-process attention on the full sequences
(``flash_attention_varlen_score`` + autograd in float32 on the same device). Prints the max
errors and the mean forward / backward time per rank; exits 1 if an error exceeds the tolerance.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backend", default="gloo", help="torch.distributed backend: gloo, nccl, hccl, ...")
    p.add_argument("--device", default="cpu", help="cpu, cuda or npu")
    p.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    p.add_argument("--lens", default="256,64,192", help="global sequence lengths (each divisible by 2*world)")
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--kv-heads", type=int, default=2)
    p.add_argument("--head-dim", type=int, default=64)
    p.add_argument("--causal", default="both", choices=["both", "true", "false"])
    p.add_argument("--split", default="both", choices=["both", "zigzag", "contiguous"])
    p.add_argument("--iters", type=int, default=3, help="timed iterations (after one warm-up)")
    return p.parse_args()


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "npu":
        torch.npu.synchronize()


def main():
    args = parse_args()
    args.iters = max(1, args.iters)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if args.device == "cuda":
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    elif args.device == "npu":
        import torch_npu  # noqa: F401
        torch.npu.set_device(local_rank)
        device = torch.device("npu", local_rank)
    else:
        device = torch.device(args.device)
    if device.type == "cuda":
        dist.init_process_group(args.backend, device_id=device)
    else:
        dist.init_process_group(args.backend)
    rank, world = dist.get_rank(), dist.get_world_size()

    import ascend_attn
    from ascend_attn import ring_attention as R
    from ascend_attn.testing.samples import compressed_mask

    dtype = getattr(torch, args.dtype)
    lens = [int(x) for x in args.lens.split(",")]
    bad = [L for L in lens if L % (2 * world)]
    if bad:
        raise SystemExit(f"--lens: every length must be divisible by 2*world = {2 * world}, got {bad}")
    cu = [0]
    for L in lens:
        cu.append(cu[-1] + L)
    T, n, nkv, d = cu[-1], args.heads, args.kv_heads, args.head_dim
    g = torch.Generator().manual_seed(0)
    q, k, v, dout = (torch.randn(T, h, d, generator=g).to(dtype).to(device) for h in (n, nkv, nkv, n))
    scale = 1.0 / math.sqrt(d)
    tol = 2e-4 if dtype == torch.float32 else 5e-2
    failed = False

    splits = ("zigzag", "contiguous") if args.split == "both" else (args.split,)
    cases = [(causal, split) for causal in {"both": (False, True), "true": (True,), "false": (False,)}[args.causal]
             for split in splits]
    for causal, split in cases:
        shard_fn = R.zigzag_shard if split == "zigzag" else R.contiguous_shard
        ring_fn = R.zigzag_ring_flash_attn_varlen_func if split == "zigzag" else R.ring_flash_attn_varlen_func
        # reference: single process, full sequences, float32
        rq, rk, rv = (t.detach().float().clone().requires_grad_() for t in (q, k, v))
        kw = dict(atten_mask=compressed_mask(3).to(device), sparse_mode=3) if causal else {}
        ro, rmx, rsm = ascend_attn.flash_attention_varlen_score(rq, rk, rv, n, cu[1:], cu[1:], scale_value=scale,
                                                                softmax_out_layout="same_as_input", **kw)
        rdq, rdk, rdv = torch.autograd.grad(ro, (rq, rk, rv), dout.float())
        rlse = (rmx[..., 0] + rsm[..., 0].log()).t()

        def mine(x, dim=0):
            return shard_fn(x, cu, rank, world, dim=dim)[0]

        lq, lk, lv, ldout = (mine(t) for t in (q, k, v, dout))
        lcu = shard_fn(q, cu, rank, world)[1]
        fwd_t, bwd_t = [], []
        for it in range(args.iters + 1):
            xq, xk, xv = (t.detach().clone().requires_grad_() for t in (lq, lk, lv))
            dist.barrier()
            sync(device)
            t0 = time.perf_counter()
            out, lse, _ = ring_fn(xq, xk, xv, lcu, max(lens), softmax_scale=scale, causal=causal,
                                  return_attn_probs=True)
            sync(device)
            t1 = time.perf_counter()
            out.backward(ldout)
            sync(device)
            t2 = time.perf_counter()
            if it:
                fwd_t.append(t1 - t0)
                bwd_t.append(t2 - t1)
        pairs = {"out": (out, mine(ro.detach())), "lse": (lse, mine(rlse, dim=1)), "dq": (xq.grad, mine(rdq)),
                 "dk": (xk.grad, mine(rdk)), "dv": (xv.grad, mine(rdv))}
        errs = {key: (a.float() - b).abs().max().item() for key, (a, b) in pairs.items()}
        # tolerance relative to the reference's magnitude (gradients grow with the sequence length)
        ok = all(errs[key] <= tol * max(1.0, b.abs().max().item()) for key, (a, b) in pairs.items())
        failed |= not ok
        line = " ".join(f"{k}={e:.2e}" for k, e in errs.items())
        msg = (f"[rank {rank}/{world} {args.backend} {device} {args.dtype} causal={causal} {split}] max|err| {line} "
               f"(tol {tol:.0e} x max(1, max|ref|)) fwd {1e3 * sum(fwd_t) / len(fwd_t):.2f} ms "
               f"bwd {1e3 * sum(bwd_t) / len(bwd_t):.2f} ms "
               f"{'OK' if ok else 'FAIL'}")
        for r in range(world):  # print in rank order
            if r == rank:
                print(msg, flush=True)
            dist.barrier()
    dist.destroy_process_group()
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
