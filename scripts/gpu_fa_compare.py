"""The device-generic FA fallback on one GPU vs torch SDPA on the same GPU (issue 7 note).

    python3 scripts/gpu_fa_compare.py      # needs a CUDA device; not used by CI

Prints, per shape: our forward and forward+backward time, SDPA's, the ratio, and the max error
of our output against SDPA's (same inputs).
"""
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, ".")
import ascend_attn  # noqa: E402
from ascend_attn.testing.samples import compressed_mask  # noqa: E402


def timed(fn, reps=5):
    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def main():
    dev = torch.device("cuda")
    print(f"{torch.cuda.get_device_name()} torch {torch.__version__}")
    print("dtype     mode    S      fwd ours ms  fwd sdpa ms  ratio  f+b ours ms  f+b sdpa ms  ratio  max|out diff|")
    n, d = 8, 128
    for dtype in (torch.float32, torch.bfloat16):
        for s_len in (4096, 16384, 32768):
            for causal in (False, True):
                q, k, v = (torch.randn(s_len, n, d, device=dev, dtype=dtype, requires_grad=True) for _ in range(3))
                kw = dict(scale_value=d ** -0.5)
                if causal:
                    kw.update(sparse_mode=3, atten_mask=compressed_mask(3).to(dev))
                ours = lambda: ascend_attn.flash_attention_varlen_score(q, k, v, n, [s_len], [s_len], **kw)[0]
                qs, ks, vs = (x.detach().transpose(0, 1).unsqueeze(0).requires_grad_() for x in (q, k, v))
                sdpa = lambda: F.scaled_dot_product_attention(qs, ks, vs, is_causal=causal)
                f_ours, f_sdpa = timed(ours), timed(sdpa)
                b_ours = timed(lambda: ours().sum().backward())
                b_sdpa = timed(lambda: sdpa().sum().backward())
                diff = (ours().float() - sdpa()[0].transpose(0, 1).float()).abs().max().item()
                print(f"{str(dtype)[6:]:<9} {'causal' if causal else 'full':<7} {s_len:<6} {f_ours * 1e3:11.2f}  "
                      f"{f_sdpa * 1e3:11.2f}  {f_ours / f_sdpa:5.1f}  {b_ours * 1e3:11.2f}  {b_sdpa * 1e3:11.2f}  "
                      f"{b_ours / b_sdpa:5.1f}  {diff:.2e}", flush=True)


if __name__ == "__main__":
    main()
