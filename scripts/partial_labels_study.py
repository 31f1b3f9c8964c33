#!/usr/bin/env python3
"""Fine-tuning with partial labels, measured (docs/partial-labels.md).

A site draws only some structures (here both thalami) on its own scan (ICBM152) and fine-tunes
the bundled brain-structures-t1 model on it, as a user would from ComboSegTrain's panel. The other
24 structures are undrawn: they must be kept, not learnt as background. This script writes the
site's label map (the thalami of ICBM152's labels, everything else 0) and names, fine-tunes, and
measures every structure on Colin27 (ch2), a brain the fine-tuning never saw, before and after.

    python3 scripts/partial_labels_study.py --build build --out /tmp/partial --steps 100

Needs only the standard library (the NIfTI label map is rewritten byte for byte, keeping its
header). A developer tool: not part of CI or the product.
"""
import argparse
import csv
import gzip
import os
import struct
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
DATA = os.environ.get("COMBOSEG_DATA_DIR", os.path.join(ROOT, "..", "shared", "data"))
CH2 = "/usr/share/mricron/templates/ch2.nii.gz"
# NIfTI-1 datatype code -> struct format of one voxel
FORMATS = {2: "B", 4: "h", 8: "i", 16: "f", 64: "d", 256: "b", 512: "H", 768: "I"}


def keep_labels(src, dst, keep):
    """Writes src's NIfTI label map to dst with every value not in keep set to 0."""
    with gzip.open(src, "rb") as f:
        raw = f.read()
    datatype = struct.unpack_from("<h", raw, 70)[0]
    offset = int(struct.unpack_from("<f", raw, 108)[0])
    fmt = "<" + FORMATS[datatype]
    size = struct.calcsize(fmt)
    count = (len(raw) - offset) // size
    values = struct.unpack_from("<%d%s" % (count, FORMATS[datatype]), raw, offset)
    kept = [v if int(v) in keep else 0 for v in values]
    body = struct.pack("<%d%s" % (count, FORMATS[datatype]), *kept)
    with gzip.open(dst, "wb") as f:
        f.write(raw[:offset] + body)
    return sum(1 for v in kept if v)


def run(cmd, log):
    with open(log, "a") as out:
        out.write("$ " + " ".join(cmd) + "\n")
        out.flush()
        if subprocess.call(cmd, stdout=out, stderr=subprocess.STDOUT) != 0:
            sys.exit("partial_labels_study: %s failed; see %s" % (os.path.basename(cmd[0]), log))


def dice_table(path):
    with open(path, newline="") as f:
        return {r["Name"]: float(r["Dice"]) for r in csv.DictReader(f, delimiter="\t")
                if r["LabelValue"] != "all"}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--build", default=os.path.join(ROOT, "build"))
    p.add_argument("--out", required=True)
    p.add_argument("--steps", type=int, default=100, help="fine-tuning steps (one epoch)")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--all-drawn", action="store_true",
                   help="the control: fine-tune with every structure of ICBM152 drawn, to tell the "
                        "change that moving to a new brain brings from the one partial labels bring")
    a = p.parse_args()
    os.makedirs(a.out, exist_ok=True)
    bins = os.path.join(a.build, "cli-modules")
    base = os.path.join(ROOT, "Resources", "Models", "brain-structures-t1.safetensors")
    icbm = os.path.join(DATA, "brain-structures", "icbm152")
    scan = os.path.join(icbm, "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz")
    truth = os.path.join(DATA, "brain-structures", "colin27", "colin27_labels_on_ch2.nii.gz")
    drawn = {3: "L_thalamus", 87: "R_thalamus"}
    icbm_labels = os.path.join(icbm, "mni_icbm152_t1_tal_nlin_sym_09a_labels.nii.gz")
    if a.all_drawn:
        labels = icbm_labels
        names = os.path.join(DATA, "brain-structures", "colin27", "label-names.csv")
        with open(names) as f:
            drawn = {int(r[0]): r[1] for r in csv.reader(f) if r and r[0].strip().isdigit()}
        voxels = -1
    else:
        labels = os.path.join(a.out, "icbm152-thalami.nii.gz")
        voxels = keep_labels(icbm_labels, labels, set(drawn))
        names = os.path.join(a.out, "thalami.csv")
        with open(names, "w") as f:
            f.write("".join("%d,%s\n" % kv for kv in drawn.items()))
    log = os.path.join(a.out, "log.txt")
    threads = ["--threads", str(a.threads)]
    tuned = os.path.join(a.out, "site.safetensors")
    run([os.path.join(bins, "ComboSegTrain"), "--baseModel", "brain-structures-t1",
         "--inputVolume", scan, "--inputLabelMap", labels, "--labelNames", names,
         "--epochs", "1", "--stepsPerEpoch", str(a.steps), "--seed", "42", "--restart",
         "--outputModel", tuned] + threads, log)
    tables = {}
    for key, model in (("before", base), ("after", tuned)):
        seg = os.path.join(a.out, "ch2-%s.nrrd" % key)
        run([os.path.join(bins, "ComboSegSegment"), "--modelFile", model, CH2, seg] + threads, log)
        table = os.path.join(a.out, "ch2-%s.tsv" % key)
        run([os.path.join(bins, "ComboSegEvaluate"), "--names", base, "--outputTable", table,
             truth, seg], log)
        tables[key] = dice_table(table)
    print("%s; fine-tuned %d steps" % ("every structure drawn on ICBM152" if a.all_drawn else
                                       "thalamus voxels drawn on ICBM152: %d" % voxels, a.steps))
    print("| structure | drawn | Dice before | Dice after |")
    print("| --- | --- | --- | --- |")
    kept_before, kept_after = [], []
    for name, before in tables["before"].items():
        after = tables["after"].get(name, float("nan"))
        is_drawn = name in drawn.values()
        print("| %s | %s | %.3f | %.3f |" % (name, "yes" if is_drawn else "no", before, after))
        if name not in ("L_thalamus", "R_thalamus") and before == before and after == after:
            kept_before.append(before)
            kept_after.append(after)
    print("structures other than the thalami, mean Dice: %.3f before, %.3f after" % (
        sum(kept_before) / len(kept_before), sum(kept_after) / len(kept_after)))


if __name__ == "__main__":
    main()
