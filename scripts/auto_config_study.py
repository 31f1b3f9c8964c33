#!/usr/bin/env python3
"""A new CT model configured from its data ("auto"), against the old MR defaults and hand-set CT
settings (docs/automatic-configuration.md).

Each configuration trains a new model for the same number of steps on the small TotalSegmentator CT
(ct-abdomen/totalseg/example_ct_sm, 3 mm), then segments a different CT, the 20-slice DICOM series
(ct-abdomen/dicom-series, 0.98 x 0.98 x 2 mm), which no run trained on or chose anything by, and
scores it against that series' label map. It prints what "auto" chose (ComboSegTrain's own
lines), the time and peak memory of each segmentation, and Dice per large organ:

    python3 scripts/auto_config_study.py --build build --out /tmp/auto-config --steps 300

The labels of both CTs come from a segmentation model, not from hand drawing (data README): the
figures compare configurations, they are not a claim of accuracy. Needs only the standard library.
A developer tool: not part of CI or the product.
"""
import argparse
import csv
import os
import re
import resource
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
DATA = os.path.realpath(os.environ.get("COMBOSEG_DATA_DIR", os.path.join(ROOT, "..", "shared", "data")))

CONFIGS = [
    ("auto", "chosen from the training case (the default)", []),
    # ComboSegSegment refuses a CT series for this MR model (the modality check): the study goes
    # ahead anyway with --ignoreModalityMismatch, to measure what the old defaults would give
    ("mr-defaults", "the old defaults: MR, zscore-nonzero, 1 mm",
     ["--modality", "MR", "--normalization", "zscore-nonzero", "--targetSpacing", "1,1,1"]),
    ("ct-by-hand", "set by hand: CT, clip -1000..1000, 3 mm",
     ["--modality", "CT", "--normalization", "clip", "--targetSpacing", "3,3,3"]),
]
ORGANS = {1: "spleen", 2: "kidney_right", 3: "kidney_left", 5: "liver", 6: "stomach"}


def run(cmd, log):
    """Runs cmd, appending its output to log; returns (wall seconds, peak resident MB, output)."""
    start = time.time()
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wall = time.time() - start
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0
    with open(log, "a") as f:
        f.write("$ " + " ".join(cmd) + "\n" + proc.stdout)
    if proc.returncode != 0:
        sys.exit("auto_config_study: %s failed; see %s" % (os.path.basename(cmd[0]), log))
    return wall, peak_mb, proc.stdout


def dice_by_value(table):
    with open(table, newline="") as f:
        return {r["LabelValue"]: float(r["Dice"]) for r in csv.DictReader(f, delimiter="\t")}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--build", default=os.path.join(ROOT, "build"))
    p.add_argument("--out", required=True)
    p.add_argument("--steps", type=int, default=300, help="training steps per configuration (a fixed count, "
                   "not a time budget, so that a busy machine does not change the comparison)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--configs", default=",".join(c[0] for c in CONFIGS))
    a = p.parse_args()
    os.makedirs(a.out, exist_ok=True)
    bins = os.path.join(a.build, "cli-modules")
    ct = os.path.join(DATA, "ct-abdomen", "totalseg")
    series = os.path.join(DATA, "ct-abdomen", "dicom-series")
    truth = os.path.join(ct, "example_seg_dicom.nii.gz")
    threads = ["--threads", str(a.threads)]
    wanted = a.configs.split(",")
    rows = []
    for key, label, args in CONFIGS:
        if key not in wanted:
            continue
        # each configuration in its own process tree: ru_maxrss of children is a running maximum,
        # so the segmentation's peak is measured by a fresh Python child around it
        folder = os.path.join(a.out, key)
        os.makedirs(folder, exist_ok=True)
        log = os.path.join(folder, "log.txt")
        model = os.path.join(folder, "model.safetensors")
        done = os.path.join(folder, "train-output.txt")  # a finished training is reused
        if os.path.exists(done) and os.path.exists(model):
            train_seconds, out = float(open(done).readline()), open(done).read()
        else:
            train_seconds, _, out = run([os.path.join(bins, "ComboSegTrain"), "--baseModel", "new",
                         "--inputVolume", os.path.join(ct, "example_ct_sm.nii.gz"),
                         "--inputLabelMap", os.path.join(ct, "example_seg.nii.gz"),
                         "--validationShare", "0", "--epochs", "1", "--stepsPerEpoch", str(a.steps),
                         "--seed", "42", "--restart", "--outputModel", model] + args + threads, log)
            with open(done, "w") as f:
                f.write("%.1f\n%s" % (train_seconds, out))
        chosen = [l for l in out.splitlines() if re.match(r"\s*(configured from|modality:|normalisation:|target spacing:|patch size:)", l, re.I)]
        seg = os.path.join(folder, "series.nrrd")
        timer = [sys.executable, "-c",
                 "import resource,subprocess,sys,time;t=time.time();r=subprocess.call(sys.argv[1:]);"
                 "print('%.2f %.0f'%(time.time()-t,resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss/1024));sys.exit(r)"]
        force = ["--ignoreModalityMismatch"] if key == "mr-defaults" else []
        _, _, timing = run(timer + [os.path.join(bins, "ComboSegSegment"), "--modelFile", model] + threads +
                           force + [series, seg], log)
        seconds, peak = (float(x) for x in timing.strip().splitlines()[-1].split())
        table = os.path.join(folder, "series.tsv")
        run([os.path.join(bins, "ComboSegEvaluate"), "--outputTable", table, truth, seg], log)
        dice = dice_by_value(table)
        rows.append((key, label, chosen, train_seconds, seconds, peak, {v: dice.get(str(v), float("nan")) for v in ORGANS}))
    print("| configuration | training | segmentation of the series | %s |" % " | ".join(ORGANS.values()))
    print("| --- | --- | --- | %s |" % " | ".join("---" for _ in ORGANS))
    for key, label, chosen, train_seconds, seconds, peak, dice in rows:
        print("| %s (%s) | %.0f s | %.1f s, %.0f MB | %s |" % (
            key, label, train_seconds, seconds, peak, " | ".join("%.3f" % dice[v] for v in ORGANS)))
    for key, _, chosen, _, _, _, _ in rows:
        if chosen:
            print("\n%s chose:\n  %s" % (key, "\n  ".join(chosen)))


if __name__ == "__main__":
    main()
