#!/usr/bin/python3
"""Golden values for test_loss and test_optim, computed with PyTorch (float64, autograd).

Run with Debian's Python (python3-torch), from anywhere:

    /usr/bin/python3 Testing/Reference/gen_loss_golden.py [output folder]

It writes loss_golden.bin and optim_golden.bin into Testing/Data/ (or the folder given). CI does
not run it; the files are kept in the repository. The losses are written from the formulas in
docs/design.md ("The losses") and comboseg.h, independently of the C code.

File format ("named arrays", little-endian):
    8 bytes  magic b"CSGOLD01"
    records until the end of the file, each:
        u32  name length L, then L bytes of UTF-8 name (e.g. "combo/K5/logits")
        u32  dtype: 0 float32, 1 int32, 2 float64
        u64  element count C, then C elements
Arrays are flattened C-order: logits (B, K, N), labels (B, N), gradients like the logits.
"""
import os
import struct
import sys

import torch
import torch.nn.functional as F

MAGIC = b"CSGOLD01"
DTYPES = {torch.float32: 0, torch.int32: 1, torch.float64: 2}

# cs_loss_kind values of comboseg.h
COMBO, CE, WCE, DICE, FOCAL, TVERSKY, FOCAL_TVERSKY, COMBO_ALL, COMBO_LW, COMBO_TV = range(10)


class Writer:
    def __init__(self, path):
        self.f = open(path, "wb")
        self.f.write(MAGIC)

    def put(self, name, tensor):
        t = tensor.detach().contiguous().cpu()
        data = t.numpy().astype(t.numpy().dtype.newbyteorder("<")).tobytes()
        nb = name.encode("utf-8")
        self.f.write(struct.pack("<I", len(nb)) + nb)
        self.f.write(struct.pack("<IQ", DTYPES[t.dtype], t.numel()))
        self.f.write(data)

    def close(self):
        self.f.close()


def make_case(gen, batch, k, n, extreme=True):
    """Random logits (B, K, N) float32 and imbalanced labels (B, N): a big background, a few
    small classes, class 2 absent when K >= 4; some voxels so confident the clip is active."""
    labels = torch.zeros(batch, n, dtype=torch.int64)
    for b in range(batch):
        perm = torch.randperm(n, generator=gen)
        pos = 0
        for c in range(1, k):
            if c == 2 and k >= 4:
                continue
            size = 1 + int(torch.randint(0, max(2, n // (4 * k)), (1,), generator=gen))
            labels[b, perm[pos:pos + size]] = c
            pos += size
    logits = torch.randn(batch, k, n, generator=gen, dtype=torch.float64) * 2.0
    # correlate with the labels so that predictions are partly right
    hit = torch.rand(batch, n, generator=gen) < 0.6
    logits.scatter_add_(1, labels.unsqueeze(1), (hit.double() * 3.0).unsqueeze(1))
    if extreme:
        # a few voxels with one dominant class: p below 1e-7 and above 1 - 1e-7
        idx = torch.randperm(n, generator=gen)[: max(2, n // 40)]
        for j, i in enumerate(idx.tolist()):
            logits[:, :, i] = 0.0
            logits[:, j % k, i] = 25.0
    return logits.float(), labels.int()


def region_sums(p, t, batch_dice):
    """tp, sum p, sum t per group and class: (G, K); one group per item or one for the batch."""
    if batch_dice:
        return ((p * t).sum((0, 2))[None], p.sum((0, 2))[None], t.sum((0, 2))[None],
                (p * (1 - t)).sum((0, 2))[None], ((1 - p) * t).sum((0, 2))[None])
    return (p * t).sum(2), p.sum(2), t.sum(2), (p * (1 - t)).sum(2), ((1 - p) * t).sum(2)


def merge_unlabelled(p, labelled):
    """Partial labels: the probability of each unlabelled class is added to background's."""
    if labelled is None:
        return p
    keep = torch.tensor(labelled, dtype=torch.bool)
    merged = p * keep[None, :, None]
    merged[:, 0] = merged[:, 0] + p[:, ~keep].sum(1)
    return merged


def loss_torch(opt, z, y):
    """The loss of comboseg.h for options opt (a dict) on logits z (B, K, N) float64."""
    kind = opt["kind"]
    bsz, k, n = z.shape
    labelled = opt.get("labelled")
    p = merge_unlabelled(torch.softmax(z, 1), labelled)
    t = F.one_hot(y.long(), k).permute(0, 2, 1).double()
    first = 0 if opt.get("include_bg", 0) else 1
    bd = opt.get("batch_dice", 0)
    cols = [c for c in range(k) if labelled is None or labelled[c]]
    if kind in (COMBO, COMBO_ALL, COMBO_LW, COMBO_TV):
        a, b = opt["alpha"], opt["beta"]
        if kind in (COMBO_LW, COMBO_TV):
            # -ln p of the true class, weighted beta on foreground-labelled voxels, 1 - beta on
            # background-labelled ones, mean over voxels
            pt = (p * t).sum(1).clamp(1e-7, 1 - 1e-7)
            wv = torch.where(y > 0, torch.full_like(pt, b), torch.full_like(pt, 1 - b))
            ce = -(wv * torch.log(pt)).mean()
            if kind == COMBO_TV:  # a mean over the voxel x labelled-class terms
                ce = ce / len(cols)
        else:
            # COMBO: one-vs-rest over the labelled foreground classes; COMBO_ALL: every class
            ce_cols = [c for c in cols if c >= (1 if kind == COMBO else 0)]
            pc = p[:, ce_cols].clamp(1e-7, 1 - 1e-7)
            tc = t[:, ce_cols]
            ce = -(b * tc * torch.log(pc) + (1 - b) * (1 - tc) * torch.log(1 - pc)).mean()
        tp, sp, st, _, _ = region_sums(p, t, bd)
        dice_cols = [c for c in cols if c >= first]
        if kind == COMBO_TV:  # 2 tp + 2 (1 - b) fp + 2 b fn + 1 in the denominator
            d = ((2 * tp + 1) / (2 * tp + 2 * (1 - b) * (sp - tp) + 2 * b * (st - tp) + 1))[:, dice_cols].mean(1).mean()
        else:
            d = ((2 * tp + 1) / (sp + st + 1))[:, dice_cols].mean(1).mean()
        return a * ce - (1 - a) * d
    if kind == CE:
        return F.cross_entropy(z, y.long())
    if kind == WCE:
        w = opt.get("weights")
        if w is None:
            counts = torch.bincount(y.long().flatten(), minlength=k).double()
            w = torch.where(counts > 0, bsz * n / (k * counts.clamp(min=1)), torch.zeros(k, dtype=torch.float64))
        w = torch.as_tensor(w, dtype=torch.float64)
        return torch.stack([F.cross_entropy(z[i:i + 1], y[i:i + 1].long(), weight=w)
                            for i in range(bsz)]).mean()
    dice_cols = [c for c in cols if c >= first]
    if kind == DICE:
        tp, sp, st, _, _ = region_sums(p, t, bd)
        return (1 - ((2 * tp + 1) / (sp + st + 1))[:, dice_cols].mean(1)).mean()
    if kind == FOCAL:
        g = opt.get("gamma", 0) or 2.0
        lq = torch.log_softmax(z, 1).gather(1, y.long().unsqueeze(1))
        return (-(1 - lq.exp()) ** g * lq).mean()
    if kind in (TVERSKY, FOCAL_TVERSKY):
        ta, tb = opt.get("ta", 0.3), opt.get("tb", 0.7)
        tp, _, _, fp, fn = region_sums(p, t, bd)
        ti = ((tp + 1) / (tp + ta * fp + tb * fn + 1))[:, dice_cols]
        if kind == TVERSKY:
            return (1 - ti.mean(1)).mean()
        g = opt.get("gamma", 0) or 0.75
        return ((1 - ti) ** g).mean(1).mean()
    raise ValueError(kind)


def value_and_grad(opt, logits, labels):
    z = logits.double().clone().requires_grad_(True)
    loss = loss_torch(opt, z, labels)
    loss.backward()
    return loss.detach().reshape(1), z.grad.float()


def options_array(opt):
    return torch.tensor([opt["kind"], opt.get("alpha", 0.5), opt.get("beta", 0.5),
                         opt.get("gamma", 0.0), opt.get("ta", 0.3), opt.get("tb", 0.7),
                         opt.get("include_bg", 0), opt.get("batch_dice", 0),
                         0 if opt.get("weights") is None else 1,
                         0 if opt.get("labelled") is None else 1], dtype=torch.float64)


def write_losses(path):
    gen = torch.Generator().manual_seed(20190401)
    w = Writer(path)
    # Combo for one item, K = 2..14, several (alpha, beta)
    ab = [(0.5, 0.5), (0.2, 0.8), (0.8, 0.3), (1.0, 0.7), (0.0, 0.5)]
    n = 400
    w.put("combo/n", torch.tensor([n], dtype=torch.int32))
    w.put("combo/alphabeta", torch.tensor(ab, dtype=torch.float64).flatten())
    for k in range(2, 15):
        logits, labels = make_case(gen, 1, k, n)
        w.put(f"combo/K{k}/logits", logits)
        w.put(f"combo/K{k}/labels", labels)
        for j, (a, b) in enumerate(ab):
            for name, kind in (("combo", COMBO), ("combo_all", COMBO_ALL), ("combo_lw", COMBO_LW),
                               ("combo_tv", COMBO_TV)):
                loss, grad = value_and_grad({"kind": kind, "alpha": a, "beta": b}, logits, labels)
                w.put(f"{name}/K{k}/{j}/loss", loss)
                w.put(f"{name}/K{k}/{j}/grad", grad)
    # every kind and option on batches of 2
    cases = [
        {"kind": COMBO, "alpha": 0.6, "beta": 0.7, "batch_dice": 1},
        {"kind": COMBO, "alpha": 0.3, "beta": 0.4, "include_bg": 1},
        {"kind": CE},
        {"kind": WCE},
        {"kind": WCE, "weights": None},
        {"kind": DICE},
        {"kind": DICE, "include_bg": 1},
        {"kind": DICE, "batch_dice": 1},
        {"kind": DICE, "include_bg": 1, "batch_dice": 1},
        {"kind": FOCAL},
        {"kind": FOCAL, "gamma": 0.5},
        {"kind": TVERSKY},
        {"kind": TVERSKY, "ta": 0.5, "tb": 0.5, "include_bg": 1, "batch_dice": 1},
        {"kind": FOCAL_TVERSKY},
        {"kind": FOCAL_TVERSKY, "gamma": 1.5, "batch_dice": 1},
        {"kind": COMBO_ALL, "alpha": 0.6, "beta": 0.7, "batch_dice": 1},
        {"kind": COMBO_ALL, "alpha": 0.3, "beta": 0.4, "include_bg": 1},
        # partial labels: class 2 (absent from the labels) unlabelled
        {"kind": COMBO, "alpha": 0.5, "beta": 0.7, "partial": True},
        {"kind": COMBO, "alpha": 0.4, "beta": 0.3, "include_bg": 1, "batch_dice": 1, "partial": True},
        {"kind": COMBO_ALL, "alpha": 0.5, "beta": 0.6, "partial": True},
        {"kind": COMBO_LW, "alpha": 0.5, "beta": 0.7, "partial": True},
        {"kind": COMBO_LW, "alpha": 0.4, "beta": 0.3, "include_bg": 1, "batch_dice": 1},
        {"kind": COMBO_TV, "alpha": 0.5, "beta": 0.7, "partial": True},
        {"kind": COMBO_TV, "alpha": 0.4, "beta": 0.2, "include_bg": 1, "batch_dice": 1},
        {"kind": DICE, "partial": True},
        {"kind": TVERSKY, "include_bg": 1, "partial": True},
        {"kind": FOCAL_TVERSKY, "batch_dice": 1, "partial": True},
    ]
    ks = [3, 6]
    bsz, n2 = 2, 300
    w.put("other/shape", torch.tensor([bsz, n2, len(ks), len(cases)], dtype=torch.int32))
    w.put("other/ks", torch.tensor(ks, dtype=torch.int32))
    for k in ks:
        logits, labels = make_case(gen, bsz, k, n2, extreme=False)
        w.put(f"other/K{k}/logits", logits)
        w.put(f"other/K{k}/labels", labels)
        for j, opt in enumerate(cases):
            opt = dict(opt)
            if opt["kind"] == WCE and "weights" not in opt:
                opt["weights"] = torch.linspace(0.2, 3.0, k, dtype=torch.float64).float().double()
            if opt.pop("partial", False):
                opt["labelled"] = [0 if c == 2 else 1 for c in range(k)]
            w.put(f"other/K{k}/{j}/options", options_array(opt))
            case_labels = labels
            if opt.get("labelled") is not None:
                w.put(f"other/K{k}/{j}/labelled", torch.tensor(opt["labelled"], dtype=torch.int32))
                # voxels of an undrawn class carry label 0
                case_labels = torch.where(labels == 2, torch.zeros_like(labels), labels)
                w.put(f"other/K{k}/{j}/labels", case_labels)
            if opt.get("weights") is not None:
                w.put(f"other/K{k}/{j}/weights", torch.as_tensor(opt["weights"]).float())
            loss, grad = value_and_grad(opt, logits, case_labels)
            w.put(f"other/K{k}/{j}/loss", loss)
            w.put(f"other/K{k}/{j}/grad", grad)
    w.close()


def write_optim(path):
    gen = torch.Generator().manual_seed(7)
    w = Writer(path)
    n, steps = 97, 5
    configs = [  # optimizer (0 Adam, 1 AdamW), lr, beta1, beta2, eps, weight_decay
        (0, 1e-2, 0.9, 0.999, 1e-8, 0.0),
        (0, 3e-3, 0.8, 0.99, 1e-6, 0.05),
        (1, 1e-2, 0.9, 0.999, 1e-8, 0.01),
        (1, 5e-2, 0.85, 0.995, 1e-7, 0.1),
    ]
    w.put("adam/shape", torch.tensor([n, steps, len(configs)], dtype=torch.int32))
    init = torch.randn(n, generator=gen).float()
    grads = (torch.randn(steps, n, generator=gen) * torch.logspace(-3, 1, n)).float()
    w.put("adam/init", init)
    w.put("adam/grads", grads)
    for j, (kind, lr, b1, b2, eps, wd) in enumerate(configs):
        p = torch.nn.Parameter(init.clone())
        cls = torch.optim.AdamW if kind == 1 else torch.optim.Adam
        opt = cls([p], lr=lr, betas=(b1, b2), eps=eps, weight_decay=wd)
        trace = []
        for s in range(steps):
            p.grad = grads[s].clone()
            opt.step()
            trace.append(p.detach().clone())
        w.put(f"adam/{j}/config", torch.tensor([kind, lr, b1, b2, eps, wd], dtype=torch.float64))
        w.put(f"adam/{j}/params", torch.stack(trace))
    w.close()


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "..", "Data")
    os.makedirs(out, exist_ok=True)
    torch.set_num_threads(1)
    write_losses(os.path.join(out, "loss_golden.bin"))
    write_optim(os.path.join(out, "optim_golden.bin"))
    print("wrote loss_golden.bin and optim_golden.bin into", os.path.normpath(out))


if __name__ == "__main__":
    main()
