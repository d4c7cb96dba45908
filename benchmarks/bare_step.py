"""One bare training step's throughput, for benchmarks/speed.py's core-scaling part: forward, BCE, backward and
Adam on random in-memory tensors (no feed, no augmentation), at a given torch thread count, in this fresh
process. Prints one JSON line: {"ips": images per second, ...}."""

from __future__ import annotations

import argparse
import json
import time


def bare_step_ips(model_name: str, num_classes: int, image_size: int, batch_size: int, threads: int,
                  steps: int) -> float:
    import torch
    import torch.nn.functional as F

    from xraypipe.models import build_model

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = build_model(model_name, num_classes)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    x = torch.randn(batch_size, 1, image_size, image_size)
    y = torch.randint(0, 2, (batch_size, num_classes)).float()

    def step():
        optimizer.zero_grad(set_to_none=True)
        F.binary_cross_entropy_with_logits(model(x), y).backward()
        optimizer.step()

    for _ in range(3):  # warm-up: allocations, kernel selection
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * batch_size / (time.perf_counter() - start)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--num-classes", type=int, required=True)
    ap.add_argument("--image-size", type=int, required=True)
    ap.add_argument("--batch-size", type=int, required=True)
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--steps", type=int, default=20)
    args = ap.parse_args(argv)
    ips = bare_step_ips(args.model, args.num_classes, args.image_size, args.batch_size, args.threads, args.steps)
    print(json.dumps({"model": args.model, "threads": args.threads, "ips": ips}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
