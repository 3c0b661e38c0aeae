"""The FA fallback never materialises an [S1, S2] score matrix: run a long sequence under an
address-space cap that one score matrix alone would exceed (in a subprocess, via setrlimit)."""
import subprocess
import sys
import textwrap

CHILD = textwrap.dedent("""
    import resource, sys
    import torch
    import ascend_attn
    from ascend_attn.testing.samples import compressed_mask

    S, N, D = 16384, 2, 16
    SCORE_BYTES = S * S * N * 4                      # one fp32 score matrix: 2 GiB
    CAP = 1 << 30                                    # extra address space allowed: 1 GiB
    q, k, v = (torch.randn(S, N, D) for _ in range(3))
    mask = compressed_mask(3)
    vm = int(next(l for l in open("/proc/self/status") if l.startswith("VmSize")).split()[1]) * 1024
    resource.setrlimit(resource.RLIMIT_AS, (vm + CAP, vm + CAP))
    try:                                             # the cap really forbids a score matrix
        torch.empty(SCORE_BYTES // 4)
        sys.exit("cap not effective")
    except (RuntimeError, MemoryError):
        pass
    q.requires_grad_(); k.requires_grad_(); v.requires_grad_()
    out, m, s = ascend_attn.flash_attention_varlen_score(q, k, v, N, [S], [S], scale_value=D ** -0.5,
                                                         sparse_mode=3, atten_mask=mask)
    out.sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(q.grad).all() and torch.isfinite(k.grad).all()
    # the last query row attends to every key: its output is a convex combination of V rows
    assert float(out[-1].abs().max()) <= float(v.abs().max())
    print("ok")
""")


def test_long_sequence_under_a_memory_cap():
    result = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=600,
                            env={"OMP_NUM_THREADS": "2", "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stdout + result.stderr
