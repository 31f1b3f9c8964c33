#!/usr/bin/env python3
"""The loss study: same network, seed, patch sampling and step budget; only the loss changes.

For each data set x loss configuration x seed it trains a new model from scratch with ComboSegTrain
(a fixed number of steps, one epoch, no time budget, one thread per run), segments the validation
cases with ComboSegSegment, measures them with ComboSegEvaluate (per structure, plus all structures
merged: the whole tumour), and writes a report with tables and plots into --out: loss-study.md, where
only each data set's generated block (between its "loss_study.py: begin/end" markers) is replaced and
hand-written conclusions stay, and loss-study-<data set>-dice.png / -beta.png:

    nice -n 19 python3 scripts/loss_study.py --build build --steps 300 --seeds 2 --parallel 2 \\
        --datasets tumour,structures --out docs

Every finished run leaves <work>/<setting>/<loss>/seed<N>/result.json; a rerun reuses those, so an
interrupted study continues where it stopped (change --steps, --spacing or --patch and the runs are
new ones, in another setting folder). The study itself needs only the standard library; the plots
need matplotlib (skipped with a warning without it). A developer tool: not part of CI or the product.
"""
import argparse
import concurrent.futures
import hashlib
import json
import math
import os
import shlex
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

def beta_series(prefix, label, loss):
    """A Combo form at beta 0.3, 0.5 and 0.7 (alpha 0.5): <prefix>_b03 ... entries of LOSSES."""
    return [("%s_b0%d" % (prefix, b), "%s beta 0.%d" % (label, b),
             ["--loss", loss, "--alpha", "0.5", "--beta", "0.%d" % b]) for b in (3, 5, 7)]


# Loss configurations: key, label for tables, ComboSegTrain arguments.
LOSSES = [
    ("ce", "cross-entropy", ["--loss", "cross_entropy"]),
    ("wce", "weighted cross-entropy", ["--loss", "weighted_cross_entropy"]),
    ("dice", "soft Dice", ["--loss", "dice"]),
    ("focal", "focal (gamma 2)", ["--loss", "focal"]),
    ("tversky", "Tversky (FP 0.3, FN 0.7)", ["--loss", "tversky", "--tverskyWeights", "0.3,0.7"]),
    ("focal_tversky", "focal Tversky (0.3/0.7, gamma 0.75)",
     ["--loss", "focal_tversky", "--tverskyWeights", "0.3,0.7"]),
    *[entry for prefix, label, loss in (("combo", "Combo", "combo"),
                                         ("comboall", "Combo all-classes", "combo_all_classes"),
                                         ("combolw", "Combo label-weighted", "combo_label_weighted"),
                                         ("combotv", "Combo Tversky", "combo_tversky"))
      for entry in beta_series(prefix, label, loss)],
    ("combo_curriculum", "Combo beta 0.5 + curriculum",
     ["--loss", "combo", "--alpha", "0.5", "--beta", "0.5", "--curriculum"]),
]
LOSS_LABEL = {k: label for k, label, _ in LOSSES}
# Beta series: configuration prefix, label and colour of each Combo form in the beta plot.
BETA_SERIES = [("combotv", "Combo Tversky (default)", "tab:blue"), ("combolw", "Combo label-weighted", "tab:cyan"),
               ("combo", "Combo one-vs-rest", "tab:orange"), ("comboall", "Combo all-classes", "tab:purple")]


def datasets(data):
    """The two data sets: cases, names, and the network and sampling of the bundled models' scripts
    (Resources/Models/train_*.sh). spacing and patch are the study's defaults (overridable)."""
    brats = os.path.join(data, "brats2013")

    def tumour_case(p):
        d = os.path.join(brats, "brats_2013_pat%04d_1" % p)
        return {"id": "pat%04d" % p, "labels": os.path.join(d, "OTMultiClass.nii.gz"),
                "channels": [os.path.join(d, "Flair_subtrMeanDivStd.nii.gz"),
                             os.path.join(d, "T1c_subtrMeanDivStd.nii.gz")]}

    structures = os.path.join(data, "brain-structures")
    return {
        "tumour": {
            "title": "brain tumour (BRATS 2013, FLAIR + T1c)",
            "train": [tumour_case(5), tumour_case(6)],
            "val": [tumour_case(3), tumour_case(4)],
            "names": os.path.join(ROOT, "Resources", "Models", "brain-tumor-flair-t1c.labels.csv"),
            "spacing": "2,2,2", "patch": "48,48,48",
            "network": ["--spatialDims", "3", "--levels", "4", "--baseFilters", "8", "--inputChannels", "2",
                        "--channelNames", "FLAIR,T1c", "--modality", "MR", "--normalization", "zscore-brain",
                        "--batchSize", "2", "--learningRate", "0.002", "--foregroundFraction", "0.6"],
        },
        "structures": {
            "title": "brain structures (Colin27 train, ICBM152 validate, T1)",
            "train": [{"id": "colin27",
                       "labels": os.path.join(structures, "colin27", "colin27_labels_on_ch2.nii.gz"),
                       "channels": ["/usr/share/mricron/templates/ch2.nii.gz"]}],
            "val": [{"id": "icbm152",
                     "labels": os.path.join(structures, "icbm152", "mni_icbm152_t1_tal_nlin_sym_09a_labels.nii.gz"),
                     "channels": [os.path.join(structures, "icbm152",
                                               "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz")]}],
            "names": os.path.join(structures, "colin27", "label-names.csv"),
            "spacing": "1,1,1", "patch": "64,64,64",
            "network": ["--spatialDims", "3", "--levels", "4", "--baseFilters", "8", "--inputChannels", "1",
                        "--channelNames", "T1", "--modality", "MR", "--normalization", "zscore-nonzero",
                        "--batchSize", "2", "--learningRate", "0.002", "--foregroundFraction", "0.7"],
        },
    }


# ---------------------------------------------------------------------------------------------
# Running the modules

_print_lock = threading.Lock()


def log(*args):
    with _print_lock:
        print(*args, flush=True)


def run(cmd, logfile):
    """Runs cmd with stdout and stderr into logfile; returns (wall s, CPU s of that process)."""
    start = time.monotonic()
    with open(logfile, "w") as out:
        out.write("$ " + " ".join(shlex.quote(c) for c in cmd) + "\n")
        out.flush()
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own CPU time, even with parallel runs
        proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.monotonic() - start
    if proc.returncode != 0:
        with open(logfile) as f:
            tail = f.read()[-2000:]
        raise RuntimeError("%s failed (exit %d), see %s:\n%s" % (os.path.basename(cmd[0]), proc.returncode,
                                                                  logfile, tail))
    return wall, usage.ru_utime + usage.ru_stime


def read_table(path):
    with open(path) as f:
        lines = [l.rstrip("\n") for l in f if l.strip()]
    header = lines[0].split("\t")
    return [dict(zip(header, l.split("\t"))) for l in lines[1:]]


def number(s):
    try:
        return float(s)
    except (TypeError, ValueError):
        return float("nan")


def write_case_list(path, cases):
    with open(path, "w") as f:
        for c in cases:
            f.write("\t".join([c["labels"]] + c["channels"]) + "\n")


def one_run(job):
    """Trains, segments and evaluates one data set x loss x seed; writes and returns result.json."""
    d, loss_key, seed, folder, a = job["dataset"], job["loss"], job["seed"], job["folder"], job["args"]
    result_file = os.path.join(folder, "result.json")
    if os.path.exists(result_file):
        with open(result_file) as f:
            return json.load(f), True
    os.makedirs(folder, exist_ok=True)
    cli = os.path.join(a.build, "cli-modules")
    model = os.path.join(folder, "model.safetensors")
    train_list = os.path.join(folder, "train.tsv")
    write_case_list(train_list, d["train"])
    loss_args = dict((k, v) for k, _, v in LOSSES)[loss_key]
    # Validation is left to ComboSegSegment + ComboSegEvaluate below (one epoch: nothing to select),
    # so the trainer sets nothing apart from the training cases.
    cmd = [os.path.join(cli, "ComboSegTrain"), "--caseList", train_list, "--validationShare", "0",
           "--labelNames", d["names"], "--baseModel", "new"] + d["network"] + \
          ["--targetSpacing", d["spacing"], "--patchSize", d["patch"], "--epochs", "1",
           "--stepsPerEpoch", str(a.steps), "--timeBudget", "0", "--seed", str(seed), "--threads", "1",
           "--restart", "--outputModel", model, "--historyTable", os.path.join(folder, "history.tsv")] + loss_args
    train_wall, train_cpu = run(cmd, os.path.join(folder, "train.log"))
    res = {"dataset": job["dataset_key"], "loss": loss_key, "seed": seed, "steps": a.steps,
           "spacing": d["spacing"], "patch": d["patch"], "train_wall_s": train_wall, "train_cpu_s": train_cpu,
           "segment_wall_s": 0.0, "segment_cpu_s": 0.0, "cases": {}}
    for case in d["val"]:
        seg = os.path.join(folder, "seg-%s.nrrd" % case["id"])  # Segment writes NRRD (with names)
        # the network's own labels: the clean-up a new model recommends would hide the losses' errors
        cmd = [os.path.join(cli, "ComboSegSegment"), "--modelFile", model, "--threads", "1",
               "--overlap", str(a.overlap), "--rawOutput"]
        for i, ch in enumerate(case["channels"][1:]):
            cmd += ["--inputVolume%d" % (i + 2), ch]
        cmd += [case["channels"][0], seg]
        w, c = run(cmd, os.path.join(folder, "segment-%s.log" % case["id"]))
        res["segment_wall_s"] += w
        res["segment_cpu_s"] += c
        table = os.path.join(folder, "eval-%s.tsv" % case["id"])
        run([os.path.join(cli, "ComboSegEvaluate"), "--names", d["names"], "--allStructures",
             "--outputTable", table, case["labels"], seg], os.path.join(folder, "evaluate-%s.log" % case["id"]))
        rows = {}
        for r in read_table(table):
            rows[r["LabelValue"]] = {"name": r["Name"], "dice": number(r["Dice"]),
                                     "precision": number(r["Precision"]), "recall": number(r["Recall"]),
                                     "fpr": number(r["FalsePositiveRate"]), "fnr": number(r["FalseNegativeRate"]),
                                     "ref_voxels": number(r["ReferenceVoxels"]),
                                     "pred_voxels": number(r["PredictedVoxels"])}
        res["cases"][case["id"]] = rows
        if not a.keep_images:
            os.remove(seg)
    if not a.keep_images:
        for f in (model, model + ".checkpoint", model + ".checkpoint.session"):
            if os.path.exists(f):
                os.remove(f)
    tmp = result_file + ".part"
    with open(tmp, "w") as f:
        json.dump(res, f, indent=1, allow_nan=True)
    os.replace(tmp, result_file)
    return res, False


# ---------------------------------------------------------------------------------------------
# Summaries

def nanmean(values):
    v = [x for x in values if x is not None and not math.isnan(x)]
    return sum(v) / len(v) if v else float("nan")


def spread(values):
    """Sample standard deviation over seeds (nan with fewer than two)."""
    v = [x for x in values if not math.isnan(x)]
    if len(v) < 2:
        return float("nan")
    m = sum(v) / len(v)
    return math.sqrt(sum((x - m) ** 2 for x in v) / (len(v) - 1))


def per_class(res):
    """class value -> measure -> mean over validation cases whose reference holds the class."""
    out = {}
    for rows in res["cases"].values():
        for value, r in rows.items():
            if value == "all" or not r["ref_voxels"] > 0:
                continue
            out.setdefault(value, {"name": r["name"], "cases": []})["cases"].append(r)
    for value, c in out.items():
        for m in ("dice", "precision", "recall", "fpr", "fnr", "ref_voxels"):
            c[m] = nanmean([r[m] for r in c["cases"]])
    return out


def summary(res, largest):
    pc = per_class(res)
    s = {m: nanmean([c[m] for c in pc.values()]) for m in ("dice", "precision", "recall", "fpr", "fnr")}
    for m in ("dice", "precision", "recall", "fpr"):  # all structures merged (the whole tumour)
        s["whole" if m == "dice" else "whole_" + m] = nanmean(
            [rows["all"][m] for rows in res["cases"].values() if "all" in rows])
    s["largest"] = nanmean([pc[v]["dice"] for v in largest if v in pc])
    s["classes"] = {v: c["dice"] for v, c in pc.items()}
    return s


def fmt(mean, sd=float("nan"), digits=3):
    if math.isnan(mean):
        return "n/a"
    if math.isnan(sd):
        return "%.*f" % (digits, mean)
    return "%.*f ± %.*f" % (digits, mean, digits, sd)


def aggregate(results, dataset_key):
    """loss -> {'n': seeds, measure: (mean, sd)} and the class table; plus the classes in order."""
    runs = [r for r in results if r["dataset"] == dataset_key]
    if not runs:
        return {}, [], {}, []
    # Classes by reference size (the validation cases' mean voxel count), largest first.
    sizes, names = {}, {}
    for r in runs:
        for v, c in per_class(r).items():
            sizes[v] = c["ref_voxels"]
            names[v] = c["name"]
    order = sorted(sizes, key=lambda v: -sizes[v])
    largest = order[:10]
    table = {}
    for key, _, _ in LOSSES:
        mine = [summary(r, largest) for r in runs if r["loss"] == key]
        if not mine:
            continue
        row = {"n": len(mine), "seeds": sorted(r["seed"] for r in runs if r["loss"] == key)}
        for m in ("dice", "precision", "recall", "fpr", "fnr", "whole", "whole_precision", "whole_recall",
                  "whole_fpr", "largest"):
            vals = [s[m] for s in mine]
            row[m] = (nanmean(vals), spread(vals))
        row["classes"] = {v: (nanmean([s["classes"].get(v, float("nan")) for s in mine]),
                              spread([s["classes"].get(v, float("nan")) for s in mine])) for v in order}
        row["train_cpu_s"] = nanmean([r["train_cpu_s"] for r in runs if r["loss"] == key])
        row["segment_cpu_s"] = nanmean([r["segment_cpu_s"] for r in runs if r["loss"] == key])
        table[key] = row
    return table, order, names, largest


REPORT_INTRO = [
    "# Loss study",
    "",
    "Same network, seed, patch sampling and number of training steps for every run; only the loss "
    "changes. Each run trains a new model from scratch with `ComboSegTrain`, segments the validation "
    "cases with `ComboSegSegment` and measures them with `ComboSegEvaluate`.",
    "",
    "Each data set's section holds a block that `scripts/loss_study.py` writes (between its "
    "`loss_study.py: begin` and `end` markers) and the conclusions, written by hand, after it: a run "
    "replaces its data sets' blocks and nothing else.",
    "",
]


def begin_marker(key):
    return "<!-- loss_study.py: begin %s (generated: replaced by the next run) -->" % key


def end_marker(key):
    return "<!-- loss_study.py: end %s -->" % key


def generated_block(a, key, d, results, plots):
    """The lines a run writes for one data set: command, settings, tables, plots."""
    lines = []
    add = lines.append
    if a.dry_run:
        add("> **DRY RUN**: a tiny budget (%d steps) that only checks the pipeline end to end. These numbers "
            "say nothing about the losses." % a.steps)
        add("")
    add("Reproduce (from the repository root, after a Release build in `%s`):" % a.build_arg)
    add("")
    add("```")
    add(a.command)
    add("```")
    add("")
    add("Settings:")
    add("")
    add("- steps per run: %d (one epoch, `--timeBudget 0`: equal budgets in steps, not minutes); "
        "seeds: %s; `--threads 1` per run, %d runs at once" % (a.steps, ", ".join(map(str, a.seed_list)), a.parallel))
    add("- loss configurations: " + "; ".join("`%s` = %s (`%s`)" % (k, l, " ".join(v)) for k, l, v in LOSSES
                                              if k in a.loss_list))
    add("- Combo: alpha 0.5 throughout; the curriculum ramps alpha from 0.1 to 0.5 over the first half of "
        "the steps. Weighted cross-entropy: inverse class frequency of each batch (the engine's default). "
        "Focal gamma 2, focal Tversky gamma 0.75 (the engine's defaults)")
    add("- measures: per structure on each validation case, averaged over the cases whose reference holds "
        "the structure; mean Dice / precision / recall average those over the structures (precision is "
        "undefined, and left out, where a structure was not predicted at all). ± is the standard deviation "
        "over seeds")
    add("- segmentation: `ComboSegSegment --overlap %s --threads 1 --rawOutput` on each validation scan" % a.overlap)
    add("- **%s**: train %s, validate %s; `%s --targetSpacing %s --patchSize %s`" % (
        key, ", ".join(c["id"] for c in d["train"]), ", ".join(c["id"] for c in d["val"]),
        " ".join(d["network"]), d["spacing"], d["patch"]))
    add("")
    table, order, names, largest = aggregate(results, key)
    if not table:
        add("No runs.")
        return lines
    extra = "whole-tumour Dice" if key == "tumour" else "mean Dice, 10 largest"
    add("| loss | seeds | mean Dice | mean precision | mean recall | mean FP rate | mean FN rate | %s | "
        "train CPU s | segment CPU s |" % extra)
    add("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for k, label, _ in LOSSES:
        if k not in table:
            continue
        r = table[k]
        x = r["whole"] if key == "tumour" else r["largest"]
        add("| %s | %d | %s | %s | %s | %s | %s | %s | %.0f | %.0f |" % (
            label, r["n"], fmt(*r["dice"]), fmt(*r["precision"]), fmt(*r["recall"]),
            fmt(*r["fpr"], digits=5), fmt(*r["fnr"]), fmt(*x), r["train_cpu_s"], r["segment_cpu_s"]))
    add("")
    if key == "structures":
        add("The 10 largest structures (by reference volume on the validation case): " +
            ", ".join(names[v] for v in largest) + ".")
        add("")
    add("Per-class Dice (classes by size, largest first):")
    add("")
    keys = [k for k, _, _ in LOSSES if k in table]
    add("| structure | " + " | ".join(LOSS_LABEL[k] for k in keys) + " |")
    add("| --- |" + " --- |" * len(keys))
    for v in order:
        add("| %s (%s) | " % (names[v], v) + " | ".join(fmt(*table[k]["classes"][v]) for k in keys) + " |")
    for p in plots:
        add("")
        add("![%s](%s)" % (os.path.splitext(p)[0], p))
    return lines


def replace_block(text, key, title, block):
    """text with the block of data set key replaced, or a new section (title) for it appended."""
    begin, end = begin_marker(key), end_marker(key)
    body = "\n".join([begin] + block + [end])
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        return head + body + rest.split(end, 1)[1]
    section = ["## %s" % title, "", body, "", "### What the data shows", "",
               "TODO: conclusions, written by hand (the script never changes text outside the markers).", ""]
    return text.rstrip("\n") + "\n\n" + "\n".join(section)


def write_report(a, dsets, results, path, plots):
    """Updates the generated blocks of path (a new report if there is none), atomically."""
    text = "\n".join(REPORT_INTRO)
    if os.path.exists(path):
        with open(path) as f:
            text = f.read()
    for key, d in dsets.items():
        text = replace_block(text, key, d["title"], generated_block(a, key, d, results, plots.get(key, [])))
    tmp = path + ".part"
    with open(tmp, "w") as f:
        f.write(text if text.endswith("\n") else text + "\n")
    os.replace(tmp, path)


def write_plots(a, dsets, results, out):
    """Two plots per data set, loss-study-<key>-dice.png and -beta.png; {key: [file names]}."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("warning: no matplotlib (apt-get install python3-matplotlib): plots skipped")
        return {}
    tag = " (DRY RUN, %d steps)" % a.steps if a.dry_run else ""
    files = {}
    for key in dsets:
        table = aggregate(results, key)[0]
        if not table:
            continue
        files[key] = ["loss-study-%s-dice.png" % key, "loss-study-%s-beta.png" % key]
        fig, ax = plt.subplots(figsize=(6.5, 5))
        losses = [k for k, _, _ in LOSSES if k in table]
        x = range(len(losses))
        second = "whole" if key == "tumour" else "largest"
        second_label = "whole-tumour Dice" if key == "tumour" else "mean Dice, 10 largest"
        for off, m, label in ((-0.2, "dice", "mean Dice over structures"), (0.2, second, second_label)):
            means = [table[k][m][0] for k in losses]
            sds = [0 if math.isnan(table[k][m][1]) else table[k][m][1] for k in losses]
            ax.bar([i + off for i in x], means, 0.4, yerr=sds, capsize=3, label=label)
        ax.set_xticks(list(x))
        ax.set_xticklabels([LOSS_LABEL[k] for k in losses], rotation=45, ha="right", fontsize=8)
        ax.set_ylim(0, 1)
        ax.set_ylabel("Dice (validation)")
        ax.set_title(dsets[key]["title"] + tag, fontsize=9)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(os.path.join(out, files[key][0]), dpi=110)
        plt.close(fig)

        fig, ax = plt.subplots(figsize=(5.5, 5))
        merged = "whole_" if key == "tumour" else ""  # the tumour's structures merged, else class means
        for prefix, label, color in BETA_SERIES:
            series = [k for k in (prefix + "_b03", prefix + "_b05", prefix + "_b07") if k in table]
            if not series:
                continue
            px = [table[k][merged + "recall"][0] for k in series]
            py = [table[k][merged + "precision"][0] for k in series]
            ax.plot(px, py, "-o", color=color, label=label + ", beta 0.3 → 0.5 → 0.7")
            for k, xx, yy in zip(series, px, py):
                ax.annotate(k[-2] + "." + k[-1], (xx, yy), textcoords="offset points", xytext=(4, 4),
                            fontsize=7, color=color)
        for k, marker, color in (("tversky", "s", "tab:red"), ("dice", "^", "tab:green"),
                                 ("ce", "v", "tab:gray")):
            if k in table:
                ax.plot([table[k][merged + "recall"][0]], [table[k][merged + "precision"][0]], marker,
                        color=color, label=LOSS_LABEL[k])
        ax.margins(0.15)
        what = "whole-tumour" if merged else "mean"
        ax.set_xlabel(what + " recall (1 - FN rate)")
        ax.set_ylabel(what + " precision")
        ax.set_title(dsets[key]["title"] + tag, fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(os.path.join(out, files[key][1]), dpi=110)
        plt.close(fig)
    return files


# ---------------------------------------------------------------------------------------------

def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--build", default=os.path.join(ROOT, "build"), help="build tree with cli-modules/ (Release)")
    p.add_argument("--steps", type=int, default=300, help="training steps per run (default 300)")
    p.add_argument("--seeds", type=int, default=1, help="number of seeds per configuration: 42, 43, ...")
    p.add_argument("--parallel", type=int, default=1, help="runs at once, each on one thread (default 1)")
    p.add_argument("--datasets", default="tumour,structures", help="comma-separated: tumour, structures")
    p.add_argument("--losses", default=",".join(k for k, _, _ in LOSSES),
                   help="comma-separated subset of: " + ", ".join(k for k, _, _ in LOSSES))
    p.add_argument("--spacing", action="append", default=[], metavar="DATASET=X,Y,Z",
                   help="override a data set's target spacing in mm (tumour 2,2,2, structures 1,1,1)")
    p.add_argument("--patch", action="append", default=[], metavar="DATASET=X,Y,Z",
                   help="override a data set's patch size (tumour 48,48,48, structures 64,64,64; multiples of 8)")
    p.add_argument("--overlap", type=float, default=0.5, help="sliding-window overlap of the segmentation")
    p.add_argument("--data", default=os.environ.get("COMBOSEG_DATA_DIR", os.path.join(ROOT, "..", "shared", "data")))
    p.add_argument("--work", default="/tmp/comboseg-loss-study", help="per-run folders and results (reused)")
    p.add_argument("--out", default=os.path.join(ROOT, "docs"),
                   help="where loss-study.md and the plots go; an existing loss-study.md keeps everything but "
                        "the blocks of the data sets run")
    p.add_argument("--dry-run", action="store_true", help="label the report and plots as a pipeline check")
    p.add_argument("--keep-images", action="store_true", help="keep each run's model and segmentations")
    a = p.parse_args()
    a.command = "python3 scripts/loss_study.py " + " ".join(shlex.quote(x) for x in sys.argv[1:])
    a.build_arg = a.build
    a.build = os.path.abspath(a.build)
    a.seed_list = [42 + i for i in range(a.seeds)]
    a.loss_list = [k.strip() for k in a.losses.split(",") if k.strip()]
    bad = [k for k in a.loss_list if k not in LOSS_LABEL]
    if bad:
        p.error("unknown loss configuration(s) %s; known: %s" % (", ".join(bad), ", ".join(LOSS_LABEL)))
    all_sets = datasets(os.path.abspath(a.data))
    wanted = [k.strip() for k in a.datasets.split(",") if k.strip()]
    for k in wanted:
        if k not in all_sets:
            p.error("unknown data set %s (tumour, structures)" % k)
    dsets = {k: all_sets[k] for k in wanted}
    for option, field in ((a.spacing, "spacing"), (a.patch, "patch")):
        for o in option:
            key, _, value = o.partition("=")
            if key not in dsets or len(value.split(",")) != 3:
                p.error("--%s takes DATASET=X,Y,Z with DATASET one of %s" % (field, ", ".join(dsets)))
            dsets[key][field] = value
    for key, d in dsets.items():
        if any(int(x) % 8 for x in d["patch"].split(",")):
            p.error("%s: patch %s is not a multiple of 8 (4-level U-Net)" % (key, d["patch"]))
        for c in d["train"] + d["val"]:
            for f in [c["labels"]] + c["channels"]:
                if not os.path.exists(f):
                    sys.exit("missing data file %s (set --data or COMBOSEG_DATA_DIR)" % f)
    for exe in ("ComboSegTrain", "ComboSegSegment", "ComboSegEvaluate"):
        if not os.access(os.path.join(a.build, "cli-modules", exe), os.X_OK):
            sys.exit("no %s in %s/cli-modules: build the tree first" % (exe, a.build))

    jobs = []
    for key, d in dsets.items():
        # Runs of one setting share a folder; any change of what is trained makes a new one.
        setting = json.dumps([d["network"], d["spacing"], d["patch"], a.steps, a.overlap,
                              [c["id"] for c in d["train"] + d["val"]]])
        folder = "%s-%dsteps-%s" % (key, a.steps, hashlib.sha1(setting.encode()).hexdigest()[:8])
        for loss in a.loss_list:
            for seed in a.seed_list:
                jobs.append({"dataset_key": key, "dataset": d, "loss": loss, "seed": seed, "args": a,
                             "folder": os.path.join(a.work, folder, loss, "seed%d" % seed)})
    log("%d runs (%s), %d at once, work folder %s" % (len(jobs), ", ".join(dsets), a.parallel, a.work))
    results, failed = [], 0
    start = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, a.parallel)) as pool:
        futures = {pool.submit(one_run, j): j for j in jobs}
        for n, fut in enumerate(concurrent.futures.as_completed(futures), 1):
            j = futures[fut]
            name = "%s %s seed %d" % (j["dataset_key"], j["loss"], j["seed"])
            try:
                res, reused = fut.result()
            except Exception as e:  # one failed run must not lose the others
                failed += 1
                log("[%d/%d] %s FAILED: %s" % (n, len(jobs), name, e))
                continue
            results.append(res)
            s = summary(res, [])
            log("[%d/%d] %s%s: train %.1f s wall / %.1f s CPU (%.2f CPU s per step, loading included), "
                "segment %.1f s CPU; mean Dice %.3f%s" % (
                    n, len(jobs), name, " (reused)" if reused else "", res["train_wall_s"], res["train_cpu_s"],
                    res["train_cpu_s"] / res["steps"], res["segment_cpu_s"], s["dice"],
                    ", whole tumour %.3f" % s["whole"] if res["dataset"] == "tumour" else ""))
    log("study: %.1f s wall" % (time.monotonic() - start))
    os.makedirs(a.out, exist_ok=True)
    plots = write_plots(a, dsets, results, a.out)
    write_report(a, dsets, results, os.path.join(a.out, "loss-study.md"), plots)
    written = ["loss-study.md"] + [f for key in plots for f in plots[key]]
    log("wrote %s" % ", ".join(os.path.join(a.out, f) for f in written))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
