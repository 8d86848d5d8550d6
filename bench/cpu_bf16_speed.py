"""bf16 vs fp32 speed of the layers the scale tests run, on this CPU (why tests/test_scale.py uses small sizes).

    python bench/cpu_bf16_speed.py

The shipped LoRA configs keep the frozen weights in bf16, and the scale tests honour that. CPUs without bf16
instructions (AVX2 only: no AVX512-BF16 / AMX) run bf16 matmuls and convolutions through slow fallback kernels. This
prints GFLOPS per dtype and the fp32/bf16 time ratio for a FLUX-width linear layer (forward, and forward + input
gradient as LoRA training needs) and the two convolution shapes that dominate the Kandinsky decoder test.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F


def timed(fn, repeat: int = 3) -> float:
    fn()  # warm-up (oneDNN primitive creation)
    t0 = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - t0) / repeat


def main() -> int:
    torch.manual_seed(0)
    cases = []
    for dt in (torch.float32, torch.bfloat16):
        x = torch.randn(65, 3072, dtype=dt, requires_grad=True)  # 1 image token + 64 T5 tokens at FLUX width
        w = torch.randn(3072, 3072, dtype=dt) * 0.02

        def fwd_bwd(x=x, w=w):
            F.linear(x, w).sum().backward()

        flops = 2 * 65 * 3072 * 3072
        cases.append(("linear 65x3072 @ 3072x3072, forward", dt, flops, timed(lambda x=x, w=w: F.linear(x.detach(), w))))
        cases.append(("  forward + input gradient", dt, 2 * flops, timed(fwd_bwd)))
        for c, s in ((128, 64), (384, 8)):
            xi = torch.randn(1, c, s, s, dtype=dt)
            wi = torch.randn(c, c, 3, 3, dtype=dt) * 0.02
            cases.append((f"conv3x3 {c} ch at {s}², forward", dt, 2 * 9 * c * c * s * s,
                          timed(lambda xi=xi, wi=wi: F.conv2d(xi, wi, padding=1))))
    print(f"cpu_bf16_speed: torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"CPU capability {torch.backends.cpu.get_cpu_capability()}")
    print(f"{'layer':<40}{'fp32 GFLOPS':>12}{'bf16 GFLOPS':>12}{'bf16 time / fp32':>18}")
    half = len(cases) // 2
    for (name, _, flops, t32), (_, _, _, t16) in zip(cases[:half], cases[half:]):
        print(f"{name:<40}{flops / t32 / 1e9:>12.2f}{flops / t16 / 1e9:>12.2f}{t16 / t32:>17.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
