# SDPA flash (FlashAttention-2 inside torch) forward on the famask benchmark shapes: B 4, H 16, N 8192, D 128, bf16.
# Median of 20 CUDA-event timings after 3 warm-ups; TFLOP/s = 4 * B * H * D * visible pairs / time.
import torch
from torch.nn.attention import sdpa_kernel, SDPBackend
import torch.nn.functional as F
B, H, N = 4, 16, 8192
torch.manual_seed(0)
for D, name, causal in ((128, "full", False), (128, "causal", True), (64, "full", False), (64, "causal", True)):
    q, k, v = (torch.randn(B, H, N, D, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    vis = N * (N + 1) // 2 if causal else N * N
    ts = []
    with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
        for r in range(23):
            e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            e0.record()
            F.scaled_dot_product_attention(q, k, v, is_causal=causal)
            e1.record()
            torch.cuda.synchronize()
            if r >= 3:
                ts.append(e0.elapsed_time(e1))
    ts.sort()
    ms = (ts[9] + ts[10]) / 2
    print(f"bench-sdpa-flash D {D:3d} {name:15s} {ms:8.3f} ms  {4 * B * H * D * vis / (ms * 1e-3) / 1e12:6.1f} TFLOP/s")
