"""How close a training step comes to what this CPU can do (issue 6): achieved GFLOP/s of our training
steps (FLOPs counted by torch's FlopCounterMode: convolutions, matmuls, attention) against the GFLOP/s
of a large matmul and of a large 3×3 convolution (forward, and forward + backward), measured
interleaved in the same run.

    python benchmarks/hardware_limit.py [--quick] [--threads N]
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from common import (
    WORKLOADS,
    Contender,
    base_parser,
    interleaved,
    markdown_table,
    net_gflop,
    ours_train_step,
    preset,
    print_header,
    setup_threads,
    write_json,
)


def matmul_contender(size: int) -> tuple[Contender, float]:
    a, b = torch.randn(size, size), torch.randn(size, size)
    out = torch.empty(size, size)
    return Contender(f"matmul {size}³", lambda: torch.mm(a, b, out=out)), 2 * size**3 / 1e9


def conv_contenders(batch: int, channels: int, size: int) -> list[tuple[Contender, float]]:
    """A 3×3 conv, same padding, channels_last (the faster layout here), forward and forward+backward."""
    cl = torch.channels_last
    x = torch.randn(batch, channels, size, size).contiguous(memory_format=cl).requires_grad_()
    weight = torch.randn(channels, channels, 3, 3).contiguous(memory_format=cl).requires_grad_()
    grad = torch.randn(batch, channels, size, size).contiguous(memory_format=cl)
    forward_gflop = 2 * batch * channels * channels * 9 * size * size / 1e9

    def forward() -> None:
        with torch.no_grad():
            F.conv2d(x, weight, padding=1)

    def train() -> None:
        torch.autograd.grad(F.conv2d(x, weight, padding=1), (x, weight), grad)

    label = f"conv3×3 {channels}→{channels} {size}×{size} b{batch}"
    return [
        (Contender(label + " fwd", forward), forward_gflop),
        (Contender(label + " fwd+bwd", train), 3 * forward_gflop),
    ]


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, help="timed rounds (default 5, --quick 2)")
    args = parser.parse_args()
    setup_threads(args.threads)
    repeats = args.repeats or (2 if args.quick else 5)
    print_header("Hardware limit")
    shrink = 4 if args.quick else 1
    pairs = [matmul_contender(2048 // (2 if args.quick else 1))]
    pairs += conv_contenders(16 // shrink, 256, 32)
    for name, batch in WORKLOADS.items():
        config = preset(name)
        step = ours_train_step(config, batch // shrink)
        gflop = net_gflop(step.model, config, batch // shrink, backward=True)
        pairs.append((Contender(f"ours: {name} training step b{batch // shrink}", step), gflop))
    gflop = {contender.name: value for contender, value in pairs}
    timings = interleaved([contender for contender, _ in pairs], repeats=repeats, warmup=1)
    rate = {name: gflop[name] / timing.cpu for name, timing in timings.items()}
    wall_rate = {name: gflop[name] / timing.wall for name, timing in timings.items()}
    matmul = next(name for name in rate if name.startswith("matmul"))
    conv_fwd = next(name for name in rate if name.endswith(" fwd"))
    conv_train = next(name for name in rate if name.endswith("fwd+bwd"))
    rows = [
        [name, gflop[name], wall_rate[name], rate[name],
         rate[name] / rate[matmul], rate[name] / rate[conv_fwd], rate[name] / rate[conv_train]]
        for name in timings
    ]  # fmt: skip
    headers = [
        "work", "GFLOP/run", "GFLOP/s (wall)", "GFLOP/s (CPU)", "of matmul", "of conv fwd", "of conv fwd+bwd",
    ]  # fmt: skip
    print(markdown_table(headers, rows))
    print(
        f"\n{repeats} timed rounds after 1 warm-up round, interleaved; medians. Ratios use CPU time "
        "(on a shared machine wall time also counts other processes). A training step is forward + "
        "backward + AdamW + EMA; FlopCounterMode counts only the net's convolutions, matmuls and attention."
    )
    write_json(args.json, {"gflop": gflop, "timings": timings, "gflops_cpu": rate})


if __name__ == "__main__":
    main()
