#!/usr/bin/python3
"""torch_unet_bench.py - the reference U-Net (docs/design.md, "The network") in PyTorch, timed like
comboseg_bench.

Builds the same network (4 levels, 16 base filters, instance norm with affine, LeakyReLU 0.01,
2x max pooling, transposed convolutions, concatenation [up, skip], 1x1x1 head; parameter names
as in net.c), trains it with Adam on the Combo loss (docs/design.md, "The losses") at batch 2,
2 channels, K = 5, 64^3, and times a training step and an inference of the batch with the same
thread count. With --bench it first runs comboseg_bench (--only unet) and prints the ratios.

    OMP_NUM_THREADS=2 /usr/bin/python3 torch_unet_bench.py --bench build/Testing/Benchmark/comboseg_bench

Output lines (key=value, like comboseg_bench):
    torch_unet3d threads=<n> train_step_ms=<median> infer_ms=<median> peak_rss_mb=<z>
    unet3d threads=<n> ...                     (comboseg_bench's line, passed through)
    ratio train_step=<torch / comboseg> infer=<torch / comboseg> peak_memory=<torch / comboseg>
"""
import argparse
import os
import re
import resource
import statistics
import subprocess
import sys
import time


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "2")))
    p.add_argument("--reps", type=int, default=3, help="timed repetitions (after one warm-up)")
    p.add_argument("--bench", help="path of comboseg_bench, run first for the ratios")
    p.add_argument("--size", type=int, default=64)
    return p.parse_args()


def run_comboseg(path, threads, reps):
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    out = subprocess.run([path, "--only", "unet", "--reps", str(reps)], env=env, check=True,
                         stdout=subprocess.PIPE, universal_newlines=True).stdout
    for line in out.splitlines():
        if line.startswith("# unet3d cpu_"):
            print(line)
    for line in out.splitlines():
        if line.startswith("unet3d "):
            return line, dict(kv.split("=", 1) for kv in line.split()[1:])
    raise RuntimeError("comboseg_bench printed no unet3d line:\n" + out)


def main():
    args = parse_args()
    ours_line, ours = (None, None)
    if args.bench:  # before importing torch, so that the two runs do not overlap
        ours_line, ours = run_comboseg(args.bench, args.threads, args.reps)

    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    torch.manual_seed(0)

    class Block(nn.Module):
        """conv3d 3x3x3 + bias -> instance norm (affine) -> LeakyReLU, twice."""

        def __init__(self, ci, co):
            super().__init__()
            self.conv1 = nn.Conv3d(ci, co, 3, padding=1)
            self.norm1 = nn.InstanceNorm3d(co, affine=True, eps=1e-5)
            self.conv2 = nn.Conv3d(co, co, 3, padding=1)
            self.norm2 = nn.InstanceNorm3d(co, affine=True, eps=1e-5)

        def forward(self, x):
            x = F.leaky_relu(self.norm1(self.conv1(x)), 0.01)
            return F.leaky_relu(self.norm2(self.conv2(x)), 0.01)

    class Up(Block):
        def __init__(self, cdeep, co):
            super().__init__(2 * co, co)
            self.up = nn.ConvTranspose3d(cdeep, co, 2, stride=2)

    class UNet(nn.Module):
        def __init__(self, cin=2, k=5, base=16, levels=4):
            super().__init__()
            f = [base * 2 ** l for l in range(levels)]
            self.levels = levels
            for l in range(levels):
                setattr(self, "enc%d" % l, Block(cin if l == 0 else f[l - 1], f[l]))
            for l in range(levels - 2, -1, -1):
                setattr(self, "dec%d" % l, Up(f[l + 1], f[l]))
            self.head = nn.Conv3d(f[0], k, 1)

        def forward(self, x):
            skips = []
            for l in range(self.levels):
                if l > 0:
                    x = F.max_pool3d(x, 2)
                x = getattr(self, "enc%d" % l)(x)
                skips.append(x)
            for l in range(self.levels - 2, -1, -1):
                dec = getattr(self, "dec%d" % l)
                x = dec(torch.cat([dec.up(x), skips[l]], dim=1))
            return self.head(x)

    def combo_loss(logits, labels, alpha=0.5, beta=0.5):
        """The all-classes Combo loss (docs/design.md, "The losses") per item, mean over items."""
        k = logits.shape[1]
        p = torch.softmax(logits, dim=1).flatten(2)           # (B, K, N)
        t = F.one_hot(labels.flatten(1), k).permute(0, 2, 1).to(p.dtype)
        pc = p.clamp(1e-7, 1 - 1e-7)
        n = p.shape[2]
        ce = -(beta * t * torch.log(pc) + (1 - beta) * (1 - t) * torch.log(1 - pc)).sum((1, 2)) / (n * k)
        inter = (p * t).sum(2)
        dice = ((2 * inter + 1) / (p.sum(2) + t.sum(2) + 1))[:, 1:].mean(1)
        return (alpha * ce - (1 - alpha) * dice).mean()

    b, c, k, n = 2, 2, 5, args.size
    net = UNet(c, k)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    x = torch.randn(b, c, n, n, n)
    y = torch.randint(0, k, (b, n, n, n))

    def train_step():
        opt.zero_grad(set_to_none=True)
        loss = combo_loss(net(x), y)
        loss.backward()
        opt.step()
        return loss

    cpu_ms = {}

    def timed(name, fn):
        """Median wall milliseconds; the process CPU time (steadier on a shared machine) goes
        to cpu_ms."""
        fn()  # warm-up
        t, c = [], []
        for _ in range(args.reps):
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            t.append(time.perf_counter() - t0)
            c.append(time.process_time() - c0)
        cpu_ms[name] = 1e3 * statistics.median(c)
        return 1e3 * statistics.median(t)

    train_ms = timed("train_step", train_step)
    with torch.inference_mode():
        infer_ms = timed("infer", lambda: net(x))
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print("# torch %s threads=%d batch=%d channels=%d classes=%d size=%d reps=%d"
          % (torch.__version__, args.threads, b, c, k, n, args.reps))
    print("torch_unet3d threads=%d train_step_ms=%.1f infer_ms=%.1f peak_rss_mb=%.1f"
          % (args.threads, train_ms, infer_ms, rss_mb))
    print("# torch_unet3d cpu_train_step_ms=%.1f cpu_infer_ms=%.1f"
          % (cpu_ms["train_step"], cpu_ms["infer"]))
    if ours:
        print(ours_line)
        print("ratio train_step=%.2f infer=%.2f peak_memory=%.2f"
              % (train_ms / float(ours["train_step_ms"]), infer_ms / float(ours["infer_ms"]),
                 rss_mb / float(ours["peak_rss_mb"])))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
