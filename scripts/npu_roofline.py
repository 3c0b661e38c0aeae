#!/usr/bin/env python3
"""Roofline estimate of the ascend_attn AscendC kernels on an Ascend 910B (no NPU needed).

For one reference shape per op it counts, from the kernel's own tiling and dataflow (the block sizes
and GM round trips of ops_kernels/<op>/op_kernel), the cube FLOPs, the vector element operations and
the GM bytes moved, and prints the roofline time max(cube, vector, memory) per op:

    python scripts/npu_roofline.py [--markdown] [--aic 24 --clock-ghz 1.8 --hbm-tbps 1.6]

Chip figures (override on the command line):
* Cube: one float16 16x16 by 16x16 matrix product per cycle per AI Core ("Cube每次执行可完成两个float16
  类型的16x16矩阵的乘法", Ascend C 基本架构, hiascend.com CANN 8.x docs) = 4096 MAC = 8192 FLOP/cycle;
  int8 16x32 by 32x16 (twice the MACs).
* Vector: 256 bytes per repeat per cycle per AIV ("ONE_REPEAT_BYTE_SIZE", Ascend C vector API general
  description) = 64 fp32 lanes; AIC:AIV = 1:2 on Atlas A2 (separated mode, same pages).
* Cores, clock, HBM: 24 AI Cores / 48 AIV, 1.8 GHz, 1.6 TB/s HBM2e are assumptions for an Atlas 800T A2
  class 910B (Huawei publishes the per-SKU values in the product datasheets, which vary by SKU: pass
  the ones of your part). With them the cube peak is 24 x 8192 x 1.8e9 = 354 TFLOPS fp16.
This is a model of the kernels as written (e.g. FA grad keeps S / dP / P / dS in GM workspaces), not of
CANN's kernels; no measurement exists until hardware does.
"""
from __future__ import annotations

import argparse
import math
from dataclasses import dataclass


@dataclass
class Chip:
    aic: int = 24
    aiv_per_aic: int = 2
    clock_ghz: float = 1.8
    hbm_tbps: float = 1.6

    @property
    def cube_flops(self) -> float:  # fp16 FLOP/s
        return self.aic * 16 * 16 * 16 * 2 * self.clock_ghz * 1e9

    @property
    def vector_ops(self) -> float:  # fp32 element operations/s
        return self.aic * self.aiv_per_aic * (256 // 4) * self.clock_ghz * 1e9

    @property
    def bandwidth(self) -> float:  # bytes/s
        return self.hbm_tbps * 1e12


@dataclass
class Estimate:
    op: str
    shape: str
    cube_flops: float
    vector_ops: float
    gm_bytes: float
    scratch_bytes: float = 0.0  # part of gm_bytes through small per-core workspace tiles (L2-resident on the device)

    def times(self, chip: Chip) -> tuple[float, float, float]:
        return (self.cube_flops / chip.cube_flops, self.vector_ops / chip.vector_ops, self.gm_bytes / chip.bandwidth)


def fa_grad(seqs=(2048,) * 8, heads=32, head_dim=128, causal=True, s1_block=128, s2_block=512, elem=2) -> Estimate:
    """FA grad V4 (TND, N1 = N2): per unit (sequence, head, 128-row query block) the key range the rule
    keeps, in s2Block tiles; per tile 5 matmuls (S, dP, dS K, dS^T Q, P^T dO), S / dP fp32 and P / dS
    (input dtype) through the per-core GM workspace, dq / dk / dv fp32 atomic adds; plus D_r, the zero
    and the cast phases."""
    d = head_dim
    cube = vec = gm = scratch = 0.0
    for s in seqs:
        for r0 in range(0, s, s1_block):
            rows = min(s1_block, s - r0)
            col_end = min(s, r0 + rows) if causal else s  # rule d <= 0 (S1 = S2): kept columns [0, r1)
            for j0 in range(0, col_end, s2_block):
                cols = min(s2_block, col_end - j0)
                tile = rows * cols
                cube += 5 * 2 * tile * d * heads
                vec += 14 * tile * heads  # scale, sub, exp, mul, sub, mul, zero fill, 2 casts, copy in/out
                tiles = heads * (2 * tile * 4 * 2                  # S, dP written by the cube, read by the vector
                                 + 2 * tile * elem + 3 * tile * elem)  # P, dS written; read by the 3 grad matmuls
                scratch += tiles
                gm += tiles + heads * (
                    2 * rows * d * elem + 2 * cols * d * elem      # Q, dO and K, V for S / dP
                    + cols * d * elem + 2 * rows * d * elem        # K for dq, Q and dO for dk / dv
                    + rows * d * 4 * 2 + 2 * cols * d * 4 * 2)     # fp32 atomic read-modify-write dq, dk, dv
            vec += 3 * rows * d * heads                            # D_r = rowsum(dO * O)
            gm += heads * 2 * rows * d * elem
    t = sum(seqs)
    gm += 3 * t * heads * d * 4 + 3 * t * heads * d * (4 + elem)  # zero phase; cast phase (read fp32, write)
    vec += 2 * 3 * t * heads * d
    shape = f"TND {len(seqs)}x{seqs[0]}, N {heads}, D {d}, {'causal' if causal else 'full'}, fp16"
    return Estimate("FA grad V4", shape, cube, vec, gm, scratch)


def ifa(batch=32, heads_q=32, heads_kv=8, head_dim=128, kv_len=4096, kv_block=512, elem=2) -> Estimate:
    """IFA V2 float path: per item (b, kv head) and KV block, Q K^T and P V (G rows), scores fp32 and P
    through the workspace, online softmax on G x kvBlock, the acc update on G x D."""
    g, d = heads_q // heads_kv, head_dim
    items = batch * heads_kv
    blocks = math.ceil(kv_len / kv_block)
    cube = items * 2 * 2 * g * kv_len * d
    vec = items * (12 * g * kv_len + blocks * 3 * g * d)
    scratch = items * (kv_len * g * (4 * 2 + elem * 2)      # scores fp32 out / in, P out / in
                       + blocks * g * d * 4 * 2)             # P V results out / in
    gm = scratch + items * (2 * kv_len * d * elem             # K and V, read once
                            + g * d * elem * 2)              # query, output
    return Estimate("IFA V2", f"BSH B {batch}, Nq {heads_q}, Nkv {heads_kv}, D {d}, S {kv_len}, fp16", cube, vec, gm,
                    scratch)


def rau(seq=4096, batch=8, heads=32, head_dim=128, elem=2) -> Estimate:
    """RingAttentionUpdate SBH: two attention inputs and one output, six 8-lane fp32 statistics."""
    rows = seq * batch * heads
    vec = rows * (6 * 8 + 2 * head_dim + 3 * head_dim)
    gm = rows * (3 * head_dim * elem + 6 * 8 * 4)
    return Estimate("RingAttentionUpdate", f"SBH S {seq}, B {batch}, N {heads}, D {head_dim}, fp16", 0.0, vec, gm)


def table(chip: Chip, markdown: bool) -> str:
    rows = []
    for e in (fa_grad(), ifa(), rau()):
        tc, tv, tm = e.times(chip)
        bound = max((tc, "cube"), (tv, "vector"), (tm, "memory"))
        hbm = (e.gm_bytes - e.scratch_bytes) / chip.bandwidth  # workspace tiles served by L2
        rows.append((e.op, e.shape, f"{e.cube_flops / 1e12:.2f}", f"{e.vector_ops / 1e9:.1f}",
                     f"{e.gm_bytes / 1e9:.2f}", f"{tc * 1e3:.3f}", f"{tv * 1e3:.3f}", f"{tm * 1e3:.3f}",
                     f"{bound[0] * 1e3:.3f} ({bound[1]})", f"{max(tc, tv, hbm) * 1e3:.3f}"))
    head = ("op", "reference shape", "cube TFLOP", "vector Gop", "GM GB", "cube ms", "vector ms", "memory ms",
            "roofline ms (bound)", "roofline ms, workspace tiles in L2")
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
    else:
        widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
        lines = ["  ".join(str(x).ljust(w) for x, w in zip(r, widths)) for r in (head, *rows)]
    peaks = (f"chip: {chip.aic} AIC x {chip.aiv_per_aic} AIV at {chip.clock_ghz} GHz: cube {chip.cube_flops / 1e12:.0f} "
             f"TFLOPS fp16, vector {chip.vector_ops / 1e12:.1f} Top/s fp32, HBM {chip.hbm_tbps} TB/s")
    return peaks + "\n\n" + "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--aic", type=int, default=Chip.aic)
    parser.add_argument("--clock-ghz", type=float, default=Chip.clock_ghz)
    parser.add_argument("--hbm-tbps", type=float, default=Chip.hbm_tbps)
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args(argv)
    print(table(Chip(aic=args.aic, clock_ghz=args.clock_ghz, hbm_tbps=args.hbm_tbps), args.markdown))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
