#!/usr/bin/env python3
"""Leave-one-case-out cross-validation of a ComboSegTrain recipe (docs/evaluation-protocol.md).

Usage:
  crossvalidate.py <build dir> <brats|structures> <output dir> [options] [-- ComboSegTrain args]

For each fold, trains a new model with ComboSegTrain on every case but the fold's test case, on a
fixed schedule (epochs x steps, no validation: the last epoch's model is kept), segments the test
case with ComboSegSegment as a user would, and scores it with ComboSegEvaluate. Arguments after
`--` are appended to the data set's recipe (they win over it), e.g.
  -- --epochs 24 --stepsPerEpoch 100 --baseFilters 16 --rotationAugmentation 15
A selection inside the training cases is allowed (e.g. `--validationShare 0.34` keeps the best
epoch on a share of them); the test case is never seen before it is scored.

Writes in the output dir: fold-<case>/ (model, history, segmentations, evaluation tables, logs),
and per way of segmenting (plain, tta with --testTimeAugmentation, raw / raw-tta with --rawOutput;
-lc with --largestComponent, -f32 with --float32)
folds-<way>.tsv (one row per fold), summary-<way>.tsv and summary-<way>.md (mean and sd over the
folds, per-class Dice). A fold whose training recipe (recipe.txt) is unchanged is not trained
again: a rerun with --testTimeAugmentation segments the same models the other way. --parallel 2
--threads 1 trains two folds at once on a 2-core machine.
"""
import argparse
import concurrent.futures
import csv
import math
import os
import shutil
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
# realpath: the recipe text (which names the data) is then the same from every checkout, so a
# fold trained from another clone is reused rather than retrained
DATA = os.path.realpath(os.environ.get("COMBOSEG_DATA_DIR", os.path.join(ROOT, "..", "shared", "data")))
CH2 = "/usr/share/mricron/templates/ch2.nii.gz"


def brats():
    """The 4 BRATS 2013 patients: label map, FLAIR, T1c (z-scored inside the brain)."""
    cases = []
    for p in (3, 4, 5, 6):
        d = os.path.join(DATA, "brats2013", "brats_2013_pat000%d_1" % p)
        cases.append({"id": "pat%04d" % p, "labels": os.path.join(d, "OTMultiClass.nii.gz"),
                      "images": [os.path.join(d, "Flair_subtrMeanDivStd.nii.gz"),
                                 os.path.join(d, "T1c_subtrMeanDivStd.nii.gz")]})
    names = os.path.join(ROOT, "Resources", "Models", "brain-tumor-flair-t1c.labels.csv")
    # Resources/Models/train_brain_tumor_flair_t1c.sh without its validation cases
    recipe = ["--labelNames", names, "--baseModel", "new", "--spatialDims", "3", "--levels", "4",
              "--baseFilters", "8", "--inputChannels", "2", "--channelNames", "FLAIR,T1c",
              "--modality", "MR", "--normalization", "zscore-brain", "--targetSpacing", "2,2,2",
              "--patchSize", "64,64,64", "--batchSize", "2", "--epochs", "24",
              "--stepsPerEpoch", "100", "--learningRate", "0.002", "--foregroundFraction", "0.6",
              "--seed", "42"]
    return cases, recipe, "whole tumour"


def structures():
    """The two labelled brains: Colin27 (ch2) and ICBM152 2009a."""
    icbm = os.path.join(DATA, "brain-structures", "icbm152")
    colin = os.path.join(DATA, "brain-structures", "colin27")
    cases = [{"id": "colin27", "labels": os.path.join(colin, "colin27_labels_on_ch2.nii.gz"),
              "images": [CH2]},
             {"id": "icbm152",
              "labels": os.path.join(icbm, "mni_icbm152_t1_tal_nlin_sym_09a_labels.nii.gz"),
              "images": [os.path.join(icbm, "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz")]}]
    # Resources/Models/train_brain_structures_t1.sh without its validation case
    recipe = ["--labelNames", os.path.join(colin, "label-names.csv"), "--baseModel", "new",
              "--spatialDims", "3", "--levels", "4", "--baseFilters", "8", "--inputChannels", "1",
              "--channelNames", "T1", "--modality", "MR", "--normalization", "zscore-nonzero",
              "--targetSpacing", "1,1,1", "--patchSize", "64,64,64", "--batchSize", "2",
              "--epochs", "10", "--stepsPerEpoch", "100", "--learningRate", "0.002",
              "--foregroundFraction", "0.7", "--seed", "42"]
    return cases, recipe, "10 largest"


DATASETS = {"brats": brats, "structures": structures}


def run(command, log):
    """Runs a command with its output in a log file; returns the seconds it took."""
    start = time.time()
    with open(log, "a") as out:
        out.write("$ " + " ".join(command) + "\n")
        out.flush()
        code = subprocess.call(command, stdout=out, stderr=subprocess.STDOUT)
    if code != 0:
        sys.exit("crossvalidate: %s failed (exit %d); see %s" % (os.path.basename(command[0]), code,
                                                                 log))
    return time.time() - start


def read_table(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def number(text):
    try:
        return float(text)
    except ValueError:
        return math.nan


def fold_scores(rows, summary):
    """Dice per structure (name -> Dice) and the fold's headline figures."""
    structures = [r for r in rows if r["LabelValue"] != "all"]
    dice = {r["Name"]: number(r["Dice"]) for r in structures}
    present = [r for r in structures if number(r["ReferenceVoxels"]) > 0]
    scores = {"mean Dice": statistics.fmean(number(r["Dice"]) for r in present)}
    if summary == "whole tumour":
        scores["whole tumour"] = next(number(r["Dice"]) for r in rows if r["LabelValue"] == "all")
    else:
        largest = sorted(present, key=lambda r: -number(r["ReferenceVoxels"]))[:10]
        scores["10 largest"] = statistics.fmean(number(r["Dice"]) for r in largest)
    return dice, scores


def write_case_list(path, cases):
    with open(path, "w") as f:
        for c in cases:
            f.write("\t".join([c["labels"]] + c["images"]) + "\n")


def variant(args):
    """The name of a way of segmenting: its evaluation is kept beside the others of the fold."""
    name = "tta" if args.testTimeAugmentation else "plain"
    if args.rawOutput:
        name = "raw" if name == "plain" else "raw-" + name
    return name + ("-lc" if args.largestComponent else "") + ("-f32" if args.float32 else "")


def train_fold(args, fold_dir, test, train_cases, recipe, bins):
    """Trains the fold's model unless the same recipe's model is there; returns the seconds."""
    recipe_text = "\n".join(recipe) + "\n"
    recipe_file = os.path.join(fold_dir, "recipe.txt")
    if os.path.exists(recipe_file) and open(recipe_file).read() != recipe_text:
        shutil.rmtree(fold_dir)  # another recipe: start the fold afresh
    os.makedirs(fold_dir, exist_ok=True)
    model = os.path.join(fold_dir, "model.safetensors")
    seconds_file = os.path.join(fold_dir, "train-seconds.txt")
    if os.path.exists(seconds_file) and os.path.exists(model):
        return float(open(seconds_file).read())
    with open(recipe_file, "w") as f:
        f.write(recipe_text)
    cases = os.path.join(fold_dir, "train.tsv")
    write_case_list(cases, train_cases)
    train = [bins["ComboSegTrain"], "--caseList", cases, "--validationShare", "0"] + recipe + [
        "--modelName", "crossvalidation-" + test["id"], "--outputModel", model,
        "--historyTable", os.path.join(fold_dir, "history.tsv"), "--threads", str(args.threads)]
    seconds = run(train, os.path.join(fold_dir, "log.txt"))
    with open(seconds_file, "w") as f:
        f.write("%.1f\n" % seconds)
    return seconds


def run_fold(args, fold_dir, test, train_cases, recipe, bins):
    """Trains (or reuses) one fold's model, then segments and scores its test case in this
    run's way (variant) unless that was done."""
    train_seconds = train_fold(args, fold_dir, test, train_cases, recipe, bins)
    evaluation = os.path.join(fold_dir, "evaluation-%s.tsv" % variant(args))
    if os.path.exists(evaluation):
        return
    log = os.path.join(fold_dir, "log.txt")
    model = os.path.join(fold_dir, "model.safetensors")
    threads = ["--threads", str(args.threads)]
    segmentation = os.path.join(fold_dir, "%s-%s.nrrd" % (test["id"], variant(args)))
    segment = [bins["ComboSegSegment"], "--modelFile", model, test["images"][0]]
    for c, image in enumerate(test["images"][1:], start=2):
        segment += ["--inputVolume%d" % c, image]
    segment += [segmentation] + threads
    segment += ["--testTimeAugmentation"] if args.testTimeAugmentation else []
    segment += ["--largestComponent"] if args.largestComponent else []
    segment += ["--rawOutput"] if args.rawOutput else []
    segment += ["--precision", "float32"] if args.float32 else []
    segment_seconds = run(segment, log)
    scratch = evaluation[:-len(".tsv")] + ".partial.tsv"  # the modules write only known extensions
    run([bins["ComboSegEvaluate"], "--names", model, "--allStructures", "--outputTable", scratch,
         test["labels"], segmentation], log)
    os.replace(scratch, evaluation)
    with open(os.path.join(fold_dir, "seconds-%s.tsv" % variant(args)), "w") as f:
        f.write("train\tsegment\n%.1f\t%.1f\n" % (train_seconds, segment_seconds))


def mean_sd(values):
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else math.nan


def fmt(v):
    return "-" if math.isnan(v) else "%.3f" % v


def write_reports(out, dataset, headline, folds, command, suffix):
    """folds-<suffix>.tsv, summary-<suffix>.tsv and summary-<suffix>.md from the folds' scores."""
    names = list(dict.fromkeys(n for fold in folds for n in fold["dice"]))
    figures = [headline, "mean Dice"]
    with open(os.path.join(out, "folds-%s.tsv" % suffix), "w") as f:
        f.write("\t".join(["fold", "test case", "training cases"] + figures +
                          ["train s", "segment s"] + names) + "\n")
        for fold in folds:
            f.write("\t".join([fold["number"], fold["test"], ",".join(fold["train"])] +
                              [fmt(fold["scores"][k]) for k in figures] +
                              ["%.0f" % fold["train_s"], "%.1f" % fold["segment_s"]] +
                              [fmt(fold["dice"].get(n, math.nan)) for n in names]) + "\n")
    rows = [(k, mean_sd([fold["scores"][k] for fold in folds])) for k in figures]
    rows += [(n, mean_sd([fold["dice"].get(n, math.nan) for fold in folds])) for n in names]
    with open(os.path.join(out, "summary-%s.tsv" % suffix), "w") as f:
        f.write("measure\tmean\tsd\tfolds\n")
        for name, (m, s) in rows:
            f.write("%s\t%s\t%s\t%d\n" % (name, fmt(m), fmt(s), len(folds)))
    with open(os.path.join(out, "summary-%s.md" % suffix), "w") as f:
        train_s = sum(fold["train_s"] for fold in folds)
        segment_s = sum(fold["segment_s"] for fold in folds)
        f.write("# Cross-validation: %s\n\n`%s`\n\n" % (dataset, command))
        f.write("Study time: %.1f min (training %.1f, segmentation %.1f).\n\n" % (
            (train_s + segment_s) / 60, train_s / 60, segment_s / 60))
        f.write("| fold | test case | %s | mean Dice | train (s) | segment (s) |\n" % headline)
        f.write("| --- | --- | --- | --- | --- | --- |\n")
        for fold in folds:
            f.write("| %s | %s | %s | %s | %.0f | %.1f |\n" % (
                fold["number"], fold["test"], fmt(fold["scores"][headline]),
                fmt(fold["scores"]["mean Dice"]), fold["train_s"], fold["segment_s"]))
        f.write("\n| measure | mean | sd |\n| --- | --- | --- |\n")
        for name, (m, s) in rows:
            f.write("| %s | %s | %s |\n" % (name, fmt(m), fmt(s)))


def parse_with_extra(parser):
    """This script's arguments, and those after `--` (passed on to ComboSegTrain)."""
    argv = sys.argv[1:]
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    return parser.parse_args(argv[:argv.index("--")] if "--" in argv else argv), extra


def modules(build, script):
    """The paths of the three command-line modules in a build tree; stops if one is missing."""
    bins = {n: os.path.join(build, "cli-modules", n)
            for n in ("ComboSegTrain", "ComboSegSegment", "ComboSegEvaluate")}
    for path in bins.values():
        if not os.access(path, os.X_OK):
            sys.exit("%s: %s is missing: build it first" % (script, path))
    return bins


def main():
    parser = argparse.ArgumentParser(
        description="Leave-one-case-out cross-validation of a ComboSegTrain recipe.",
        epilog="Arguments after -- are passed to ComboSegTrain after the data set's recipe.")
    parser.add_argument("build", help="build directory (holds cli-modules/)")
    parser.add_argument("dataset", choices=sorted(DATASETS))
    parser.add_argument("output", help="output directory")
    parser.add_argument("--folds", default="",
                        help="comma-separated folds to run, by number (1..N) or test case id "
                             "(default: all)")
    parser.add_argument("--testTimeAugmentation", action="store_true",
                        help="segment with ComboSegSegment --testTimeAugmentation")
    parser.add_argument("--largestComponent", action="store_true",
                        help="segment with ComboSegSegment --largestComponent")
    parser.add_argument("--rawOutput", action="store_true",
                        help="segment with ComboSegSegment --rawOutput (without the fold model's "
                             "recommended clean-up): what a model trained with "
                             "--recommendedCleanUp none gives")
    parser.add_argument("--float32", action="store_true",
                        help="segment with ComboSegSegment --precision float32 (the default "
                             "computes in bfloat16 where the CPU has AVX512_BF16; ways segmented "
                             "before 4 Dec were float32)")
    parser.add_argument("--threads", type=int, default=0, help="threads per fold (0: all cores)")
    parser.add_argument("--parallel", type=int, default=1,
                        help="folds trained at once (e.g. 2 with --threads 1 on 2 cores)")
    args, extra = parse_with_extra(parser)
    bins = modules(args.build, "crossvalidate")
    cases, recipe, headline = DATASETS[args.dataset]()
    for c in cases:
        for path in [c["labels"]] + c["images"]:
            if not os.path.exists(path):
                sys.exit("crossvalidate: %s is missing (COMBOSEG_DATA_DIR=%s)" % (path, DATA))
    chosen = set(args.folds.split(",")) - {""}
    numbered = [(str(i + 1), c) for i, c in enumerate(cases)]
    unknown = chosen - {n for n, _ in numbered} - {c["id"] for c in cases}
    if unknown:
        sys.exit("crossvalidate: unknown fold(s) %s; the folds of %s are %s" % (
            ",".join(sorted(unknown)), args.dataset,
            ", ".join("%s (%s)" % (n, c["id"]) for n, c in numbered)))
    os.makedirs(args.output, exist_ok=True)
    command = " ".join(["scripts/crossvalidate.py"] + sys.argv[1:])
    start = time.time()
    todo = [(n, test) for n, test in numbered
            if not chosen or n in chosen or test["id"] in chosen]
    fold_dirs = {n: os.path.join(args.output, "fold-" + test["id"]) for n, test in todo}
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, args.parallel)) as pool:
        jobs = []
        for n, test in todo:
            train_cases = [c for c in cases if c is not test]
            print("fold %s: train on %s, test on %s" % (n, ", ".join(c["id"] for c in train_cases),
                                                       test["id"]), flush=True)
            jobs.append(pool.submit(run_fold, args, fold_dirs[n], test, train_cases,
                                    recipe + extra, bins))
        for job in jobs:
            job.result()  # a failed fold stops the study with its message
    folds = []
    for n, test in todo:
        train_cases = [c for c in cases if c is not test]
        fold_dir = fold_dirs[n]
        seconds = read_table(os.path.join(fold_dir, "seconds-%s.tsv" % variant(args)))[0]
        dice, scores = fold_scores(
            read_table(os.path.join(fold_dir, "evaluation-%s.tsv" % variant(args))), headline)
        folds.append({"number": n, "test": test["id"], "train": [c["id"] for c in train_cases],
                      "dice": dice, "scores": scores, "train_s": number(seconds["train"]),
                      "segment_s": number(seconds["segment"])})
        print("fold %s: %s Dice %s, mean Dice %s" % (n, headline, fmt(scores[headline]),
                                                    fmt(scores["mean Dice"])), flush=True)
    write_reports(args.output, args.dataset, headline, folds, command, variant(args))
    m, s = mean_sd([f["scores"][headline] for f in folds])
    print("%d fold(s) in %.0f s: %s Dice %s +- %s; tables in %s (folds-%s.tsv, summary-%s.tsv, "
          "summary-%s.md)" % (len(folds), time.time() - start, headline, fmt(m), fmt(s), args.output,
                              variant(args), variant(args), variant(args)))


if __name__ == "__main__":
    main()
