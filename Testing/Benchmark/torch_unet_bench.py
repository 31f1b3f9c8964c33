#!/usr/bin/python3
"""torch_unet_bench.py - the reference U-Net (docs/design.md, "The network") in PyTorch, timed like
comboseg_bench.

Builds the same network (4 levels, 16 base filters, instance norm with affine, LeakyReLU 0.01,
2x max pooling, transposed convolutions, concatenation [up, skip], 1x1x1 head; parameter names
as in net.c), trains it with Adam on the Combo loss (docs/design.md, "The losses") at batch 2,
2 channels, K = 5, 64^3, and times a training step and an inference of the batch with the same
thread count. --width, --classes, --channels and --size give the bundled models' shapes
(8, 27, 1, 64: brain-structures-t1; 16, 5, 2, 48: brain-tumor-flair-t1c). With --bench it first
runs comboseg_bench (--only unet) and prints the ratios against its line of the same shape.

    OMP_NUM_THREADS=2 /usr/bin/python3 torch_unet_bench.py \
        --bench build/Testing/Benchmark/comboseg_bench

Times are the best of --reps runs after a warm-up, as comboseg_bench's. Memory is measured as
comboseg_bench measures it: rss_before_mb is the resident size (VmRSS) just before the first
training step, when the network, optimiser and batch exist (Adam's moments come in the first
step); peak_rss_mb the peak resident size (VmHWM, reset at that moment) up to the end of
inference; added_mb their difference, what the training step and inference add.

Output lines (key=value, like comboseg_bench):
    torch_unet3d [width=<f> classes=<k> channels=<c>] threads=<n> train_step_ms=<best>
        infer_ms=<best> peak_rss_mb=<z> rss_before_mb=<r> added_mb=<z - r>
    unet3d ...                                 (comboseg_bench's line of the same shape)
    ratio train_step=<torch / comboseg> infer=<torch / comboseg> peak_memory=<torch / comboseg>
        added_memory=<torch / comboseg>
    ratio infer_bf16=<torch / comboseg's bfloat16 inference>  (where the CPU has AVX512_BF16)
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
    p.add_argument("--width", type=int, default=16, help="base filters")
    p.add_argument("--classes", type=int, default=5)
    p.add_argument("--channels", type=int, default=2)
    return p.parse_args()


def is_reference(args):
    return (args.width, args.classes, args.channels, args.size) == (16, 5, 2, 64)


def shape_keys(args):
    """The keys comboseg_bench adds to the lines of a non-reference shape."""
    if is_reference(args):
        return ""
    return "width=%d classes=%d channels=%d " % (args.width, args.classes, args.channels)


def status_mb(key):
    """A "Vm...:" line of /proc/self/status in MB, or None (not Linux)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return float(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


def reset_peak_rss():
    """Lets VmHWM start again from the current resident size (Linux 4.0+), as comboseg_bench
    does; returns False when it could not."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_mb():
    hwm = status_mb("VmHWM")
    return hwm if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_comboseg(path, args):
    """comboseg_bench's unet3d line of this shape (and its notes), and its keys."""
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    out = subprocess.run([path, "--only", "unet", "--reps", str(args.reps)], env=env, check=True,
                         stdout=subprocess.PIPE, universal_newlines=True).stdout
    tag = "unet3d " + shape_keys(args) + "threads="
    for line in out.splitlines():
        if line.startswith("# " + tag[:-len("threads=")] + "cpu_"):
            print(line)
    bf16 = "unet3d " + shape_keys(args) + "infer_bf16_ms="
    found = None
    for line in out.splitlines():
        if line.startswith(tag) or line.startswith(bf16):
            found = (found[0] + "\n" + line if found else line,
                     dict(found[1] if found else {}, **dict(kv.split("=", 1) for kv in line.split()[1:])))
    if found and "infer_ms" in found[1]:
        return found
    raise RuntimeError("comboseg_bench printed no line starting '%s':\n%s" % (tag, out))


def main():
    args = parse_args()
    ours_line, ours = (None, None)
    if args.bench:  # before importing torch, so that the two runs do not overlap
        ours_line, ours = run_comboseg(args.bench, args)

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

    b, c, k, n = 2, args.channels, args.classes, args.size
    net = UNet(c, k, args.width)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    x = torch.randn(b, c, n, n, n)
    y = torch.randint(0, k, (b, n, n, n))

    def train_step():
        opt.zero_grad(set_to_none=True)
        loss = combo_loss(net(x), y)
        loss.backward()
        opt.step()
        return loss

    def timed(name, fn):
        """Best wall milliseconds, as comboseg_bench; the median and the best process CPU time
        (steadier on a shared machine) go to notes."""
        fn()  # warm-up
        t, c = [], []
        for _ in range(args.reps):
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            t.append(time.perf_counter() - t0)
            c.append(time.process_time() - c0)
        notes[name] = (1e3 * min(c), 1e3 * statistics.median(t))
        return 1e3 * min(t)

    notes = {}
    rss_before = status_mb("VmRSS")
    peak_reset = reset_peak_rss()
    train_ms = timed("train_step", train_step)
    with torch.inference_mode():
        infer_ms = timed("infer", lambda: net(x))
    peak = peak_rss_mb()
    added = peak - rss_before if rss_before is not None else float("nan")
    print("# torch %s threads=%d batch=%d channels=%d classes=%d size=%d reps=%d"
          % (torch.__version__, args.threads, b, c, k, n, args.reps))
    print("torch_unet3d %sthreads=%d train_step_ms=%.1f infer_ms=%.1f peak_rss_mb=%.1f "
          "rss_before_mb=%.1f added_mb=%.1f"
          % (shape_keys(args), args.threads, train_ms, infer_ms, peak, rss_before or -1.0, added))
    print("# torch_unet3d cpu_train_step_ms=%.1f cpu_infer_ms=%.1f train_step_ms_median=%.1f "
          "infer_ms_median=%.1f" % (notes["train_step"][0], notes["infer"][0],
                                    notes["train_step"][1], notes["infer"][1]))
    if not peak_reset:
        print("# torch_unet3d peak_rss_mb is the process's peak since it started")
    if ours:
        print(ours_line)
        print("ratio train_step=%.2f infer=%.2f peak_memory=%.2f added_memory=%.2f"
              % (train_ms / float(ours["train_step_ms"]), infer_ms / float(ours["infer_ms"]),
                 peak / float(ours["peak_rss_mb"]), added / float(ours["added_mb"])))
        if "infer_bf16_ms" in ours:  # where the CPU has AVX512_BF16
            print("ratio infer_bf16=%.2f" % (infer_ms / float(ours["infer_bf16_ms"])))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
