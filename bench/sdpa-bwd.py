# Times torch SDPA flash backward (bf16, [B,H,N,D]) with CUDA events, median of 20 after warm-up.
import sys, torch
from torch.nn.attention import sdpa_kernel, SDPBackend
B, H, N, D = 4, 16, 8192, 128
for causal in (False, True):
    q, k, v = (torch.randn(B, H, N, D, device='cuda', dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
    do = torch.randn(B, H, N, D, device='cuda', dtype=torch.bfloat16)
    with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
        o = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=causal)
        ts = []
        for r in range(25):
            e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            e0.record()
            torch.autograd.grad(o, (q, k, v), do, retain_graph=True)
            e1.record(); torch.cuda.synchronize()
            if r >= 5: ts.append(e0.elapsed_time(e1))
    ts.sort(); t = ts[len(ts) // 2]
    vis = N * N if not causal else N * (N + 1) // 2
    print(f"sdpa flash bwd {'causal' if causal else 'full':6s} B {B} H {H} N {N} D {D}: {t:.3f} ms {2.5*4*B*H*D*vis/t/1e9:.1f} TFLOP/s")
