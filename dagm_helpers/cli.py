"""The command line: ``python -m dagm_helpers COMMAND ...``.

This module only parses arguments, calls the same functions the notebooks call,
and reports errors: any :class:`~dagm_helpers.errors.DagmError` (and a few plain
OS errors) becomes one ``error: ...`` line on stderr and exit status 2, with the
traceback only under ``--debug``.

Each command has one ``cmd_<name>`` handler below; handlers import their module
lazily so that ``--help`` does not load TensorFlow.
"""

from __future__ import annotations

import argparse
import errno
import json
import sys
import traceback
import warnings
from collections.abc import Sequence
from typing import Any

from .config import LOSS_CHOICES
from .errors import DagmError
from .runtime import import_tensorflow

EXIT_OK = 0
EXIT_ERROR = 2
#: predict: some inputs were predicted, some skipped (predictions.csv says which and why)
EXIT_PARTIAL = 3


def _print_json(obj) -> None:
    print(json.dumps(obj, indent=2))


# ----------------------------------------------------------------------------- data
def cmd_download(args: argparse.Namespace) -> int:
    from .data.download import download

    root = download(dest=args.dest, classes=args.classes, source=args.source, progress=not args.quiet)
    print(f"DAGM data ready in {root}")
    return EXIT_OK


def cmd_info(args: argparse.Namespace) -> int:
    from .data.layout import format_counts, scan

    index = scan(args.dir)
    rows = index.counts()
    if args.json:
        _print_json(rows)
    else:
        print(format_counts(rows))
    return EXIT_OK


def cmd_synth(args: argparse.Namespace) -> int:
    from .data.synth import synthesize

    root = synthesize(args.out, classes=args.classes, images_per_split=args.images_per_split, seed=args.seed)
    print(f"generated DAGM-like data in {root}")
    return EXIT_OK


def cmd_masks(args: argparse.Namespace) -> int:
    from .data.annotations import convert

    summary = convert(args.source_format, args.src, args.out, labels=args.label)
    print(
        f"{summary.masks} mask(s) written to {summary.out}; {summary.images_without_defect} image(s) with no "
        f"defect shape get no mask (defect-free); {summary.shapes_skipped} shape(s) skipped"
    )
    return EXIT_OK


def cmd_holdout(args: argparse.Namespace) -> int:
    from .data.holdout import HOLDOUT_NOTE, holdout_split

    out = holdout_split(args.data, classes=args.classes, fraction=args.fraction, out=args.out)
    print((out / HOLDOUT_NOTE).read_text().rstrip())
    return EXIT_OK


def cmd_to_plain(args: argparse.Namespace) -> int:
    from .data.export import to_plain

    written = to_plain(args.data, classes=args.classes, out=args.out, merge=args.merge)
    for folder, (images, defective) in written.items():
        print(f"{args.out.rstrip('/')}/{folder}: {images} images, {defective} defective")
    return EXIT_OK


def cmd_export(args: argparse.Namespace) -> int:
    from .infer import EXPORT_INFO, export_model

    out = export_model(args.model, args.out, threshold=args.threshold)
    print(f"SavedModel written to {out} (how to use it: {out / EXPORT_INFO})")
    return EXIT_OK


# ----------------------------------------------------------------------------- model
def cmd_train(args: argparse.Namespace) -> int:
    from .training import TrainConfig, TrainingInterrupted, train

    config = TrainConfig.from_cli(args)
    try:
        run = train(config)
    except TrainingInterrupted as exc:  # SIGINT/SIGTERM: files of the last completed epoch are saved
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        return exc.exit_status
    print(f"run saved in {run.dir}")
    return EXIT_OK


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .infer import evaluate_cli

    result = evaluate_cli(args)
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>22}: {value}")
    return EXIT_OK


def cmd_predict(args: argparse.Namespace) -> int:
    from .infer import model_threshold, predict_files

    summary = predict_files(
        args.model,
        args.input,
        args.out,
        threshold=model_threshold(args.model, args.threshold),
        batch_size=args.batch_size,
        fast=args.fast,
        precision=args.precision,
        calibration=args.calibration,
    )
    print(f"ran on {summary.backend} in {summary.precision}", file=sys.stderr)
    if summary.done == 0:
        print(
            f"error: none of the {summary.skipped} input(s) could be predicted; "
            f"{summary.out / 'predictions.csv'} says why for each",
            file=sys.stderr,
        )
        return EXIT_ERROR
    print(f"predictions written to {summary.out}: {summary.done} predicted, {summary.skipped} skipped")
    return EXIT_PARTIAL if summary.skipped else EXIT_OK


def cmd_export_ncnn(args: argparse.Namespace) -> int:
    from .infer import load_model
    from .model import required_multiple
    from .speed.ncnn_export import INPUT_BLOB, to_ncnn, write_ncnn

    model = load_model(args.model)
    net = to_ncnn(model)
    param, weights = write_ncnn(net, args.out)
    print(f"ncnn network written to {param} and {weights}")
    print(f"input blob {INPUT_BLOB!r}: raw grey values x {net.scale:.9g} + {net.offset:g}, shaped (1, H, W)")
    print(
        f"output blob {net.output!r}: defect probabilities (1, H, W); "
        f"H and W multiples of {required_multiple(model)}"
    )
    return EXIT_OK


def cmd_compare(args: argparse.Namespace) -> int:
    from .experiment import compare_cli

    out = compare_cli(args)
    print(f"comparison written to {out}")
    return EXIT_OK


def cmd_bench(args: argparse.Namespace) -> int:
    from .speed.bench import run_benchmark

    result = run_benchmark(
        quick=args.quick,
        baseline_minutes=args.baseline_minutes,
        data=getattr(args, "data", None),
        classes=getattr(args, "classes", None),
    )
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>28}: {value}")
    return EXIT_OK


def cmd_series(args: argparse.Namespace) -> int:
    from .tooling.series import run_series

    out = run_series(out=args.out, profile=args.profile, notebooks=args.notebooks)
    print(f"executed notebooks and HTML are in {out}")
    return EXIT_OK


# ----------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every command."""
    parser = argparse.ArgumentParser(
        prog="python -m dagm_helpers",
        description="DAGM 2007 surface-defect segmentation with a small U-Net.",
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    _data_commands(sub)
    _model_commands(sub)
    _tool_commands(sub)
    return parser


def _data_commands(sub: Any) -> None:
    """download, info, synth, masks, holdout."""
    p = sub.add_parser("download", help="download and verify DAGM 2007 class archives")
    p.add_argument("--dest", default=None, help="folder to unpack into (default: $DAGM_HOME/dagm2007)")
    p.add_argument("--classes", type=int, nargs="+", default=list(range(1, 11)), metavar="N")
    p.add_argument(
        "--source",
        default="zenodo",
        choices=["zenodo", "dev"],
        help="zenodo: the full competition set; dev: the 2007 ClassN_def development archives",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_download)

    p = sub.add_parser("info", help="count images and defects per class and split")
    p.add_argument(
        "dir",
        help="a DAGM folder (any of its three layouts) or a folder of your own images (images/ + masks/)",
    )
    p.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("synth", help="write a DAGM-like data set (offline stand-in)")
    p.add_argument("--out", required=True)
    p.add_argument("--classes", type=int, nargs="+", default=list(range(1, 11)), metavar="N")
    p.add_argument("--images-per-split", type=int, default=None, help="default: as many as the real class")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser(
        "masks",
        help="turn LabelMe or COCO annotations into mask PNGs (one per image, 0/255, named by its stem)",
    )
    p.add_argument("--from", dest="source_format", required=True, choices=["labelme", "coco"])
    p.add_argument("src", help="labelme: a folder of .json files (or one); coco: the export's .json file")
    p.add_argument("--out", required=True, help="the mask folder to write (e.g. DIR/masks)")
    p.add_argument(
        "--label",
        action="append",
        default=None,
        metavar="NAME",
        help="only shapes with this label (COCO: category) are defects; repeat for several (default: all)",
    )
    p.set_defaults(func=cmd_masks)

    p = sub.add_parser(
        "to-plain",
        help="write DAGM classes in the plain layout of your own images (images/ + masks/, links)",
    )
    p.add_argument("--data", required=True, help="a DAGM folder")
    p.add_argument("--classes", type=int, nargs="+", default=None, metavar="N", help="default: all")
    p.add_argument("--out", required=True, help="a new folder")
    p.add_argument(
        "--merge",
        action="store_true",
        help="one images/ folder (the plain layout's seeded split chooses Test) instead of train/ and test/",
    )
    p.set_defaults(func=cmd_to_plain)

    p = sub.add_parser(
        "holdout",
        help="hold out part of a Train split as Test (links, official layout), to develop on real data",
    )
    p.add_argument("--data", required=True, help="a DAGM folder")
    p.add_argument("--classes", type=int, nargs="+", required=True, metavar="N")
    p.add_argument(
        "--fraction",
        type=float,
        default=0.3,
        help="the last share of the ids held out, per kind (default 0.3)",
    )
    p.add_argument("--out", required=True, help="a new folder")
    p.set_defaults(func=cmd_holdout)


def _add_threshold_arg(p: argparse.ArgumentParser) -> None:
    """--threshold, as evaluate and predict read it."""
    p.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="probability threshold (default: the one the model's training run chose on validation "
        "images, from metrics.json beside it; else 0.5)",
    )


def _model_commands(sub: Any) -> None:
    """train, evaluate, predict, export-ncnn."""
    p = sub.add_parser("train", help="train the U-Net")
    _add_train_args(p)
    p.add_argument("--out", required=True, help="run folder (config, history, checkpoints, metrics)")
    p.add_argument("--loss", default="dice", choices=LOSS_CHOICES)
    p.add_argument("--resume", action="store_true", help="continue from RUN_DIR/last.keras")
    p.add_argument("--overwrite", action="store_true", help="replace a run already in --out")
    p.add_argument(
        "--precision",
        choices=("float32", "mixed_bfloat16", "mixed_float16"),
        default=None,
        help="dtype policy to train in (default: float16 on a GPU in the gpu profile, else float32; "
        "mixed_bfloat16 pays on CPUs with AMX or AVX512-BF16)",
    )
    p.add_argument(
        "--conv-gradients",
        choices=("auto", "tf", "matmul"),
        default="auto",
        help="weight gradients of the 3x3 convolutions on a CPU: TensorFlow's (tf) or matrix products "
        "(matmul; the same numbers, faster on some CPUs). auto (default): the cpu profile times both on "
        "a few steps and keeps the faster, cached per machine; config.json records the choice",
    )
    p.set_defaults(func=cmd_train, tensorflow=True)

    p = sub.add_parser("evaluate", help="evaluate a saved model on a split")
    p.add_argument("--model", required=True)
    p.add_argument(
        "--data",
        default=None,
        help="a DAGM folder, a folder of your own images (images/ + masks/), or 'synthetic' (default: $DAGM_DIR or synthetic)",
    )
    p.add_argument("--classes", type=int, nargs="+", default=None, metavar="N")
    p.add_argument(
        "--split",
        default="Test",
        choices=["Train", "Val", "Test"],
        help="Test (default; images the model's run trained or validated on are left out, from its "
        "split.json), Val (a plain folder's val/) or Train",
    )
    _add_threshold_arg(p)
    p.add_argument("--profile", default=None, help="smoke, cpu, gpu or auto (default: $DAGM_PROFILE or auto)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_evaluate, tensorflow=True)

    p = sub.add_parser("predict", help="predict defect masks for image files of any size")
    p.add_argument("--model", required=True)
    p.add_argument("--input", required=True, help="an image file or a folder of images")
    p.add_argument("--out", required=True)
    _add_threshold_arg(p)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument(
        "--fast",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="run on the fast CPU runtime (ncnn or OpenVINO) when installed; --no-fast: TensorFlow",
    )
    p.add_argument(
        "--precision",
        choices=("f32", "int8"),
        default="f32",
        help="int8: OpenVINO with post-training quantisation (needs openvino and nncf); faster on "
        "some CPUs, masks close to but not identical with float32 (default: f32)",
    )
    p.add_argument(
        "--calibration",
        default=None,
        help="int8 only: an image file or folder of typical images (defective ones included; "
        "the first 32 are used) to calibrate on (default: the first batch predicted)",
    )
    p.set_defaults(func=cmd_predict, tensorflow=True)

    p = sub.add_parser(
        "export-ncnn", help="write a trained model as an ncnn network (.param + .bin) for deployment"
    )
    p.add_argument("--model", required=True, help="a .keras model file")
    p.add_argument("--out", required=True, help="output stem: writes STEM.param and STEM.bin")
    p.set_defaults(func=cmd_export_ncnn, tensorflow=True)


def _tool_commands(sub: Any) -> None:
    """compare, bench, series."""
    p = sub.add_parser(
        "export", help="export a model as a TensorFlow SavedModel (any image size) with its threshold"
    )
    p.add_argument("--model", required=True)
    p.add_argument("--out", required=True, help="a new folder")
    _add_threshold_arg(p)
    p.set_defaults(func=cmd_export, tensorflow=True)

    p = sub.add_parser("compare", help="train several losses on identical data and seeds, and compare")
    _add_train_args(p)
    p.add_argument("--losses", nargs="+", default=["bce", "dice"], choices=LOSS_CHOICES)
    p.add_argument("--seeds", type=int, default=3, help="number of seeds per loss")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_compare, tensorflow=True)

    p = sub.add_parser("bench", help="measure training and inference speed against the tutorial's way")
    p.add_argument("--quick", action="store_true", help="rough numbers in under two minutes")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument(
        "--baseline-minutes",
        type=float,
        default=None,
        help=(
            "cap on the tutorial recipe's time-to-quality run, in minutes of training (default: what is"
            " left of the full run's 30 minutes; 60 lets it run long enough for a 10x lower bound,"
            " about 50 minutes in all on 2 cores)"
        ),
    )
    p.add_argument(
        "--data",
        default=None,
        help="measure time to quality on this DAGM folder (for example real DAGM) instead of the generator",
    )
    p.add_argument(
        "--classes", type=int, nargs="+", default=None, metavar="N", help="the classes of --data to use"
    )
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("series", help="execute the notebook series headless into build/")
    p.add_argument("--out", default="build")
    p.add_argument("--profile", default=None)
    p.add_argument(
        "--notebooks", nargs="*", default=None, help="only these notebooks (default: all, in order)"
    )
    p.set_defaults(func=cmd_series)


def _add_train_args(p: argparse.ArgumentParser) -> None:
    from .config import RECIPE_OPTIONS

    p.add_argument(
        "--data",
        default=None,
        help="a DAGM folder, a folder of your own images (images/ + masks/), or 'synthetic' (default: $DAGM_DIR or synthetic)",
    )
    p.add_argument("--classes", type=int, nargs="+", default=None, metavar="N")
    p.add_argument("--profile", default=None, help="smoke, cpu, gpu or auto (default: $DAGM_PROFILE or auto)")
    for option in RECIPE_OPTIONS:  # the recipe's settings, declared once in config.RECIPE_OPTIONS
        flag = "--" + option.name.replace("_", "-")
        p.add_argument(flag, type=option.type, default=None, help=f"{option.help} (default: the profile's)")
    p.add_argument(
        "--batch-norm",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="batch normalisation in the U-Net (default: the profile's; the cpu profile uses it)",
    )
    p.add_argument(
        "--channels",
        type=int,
        choices=(1, 3),
        default=None,
        help="image channels of the model: 1 (default; colour images are converted to grey) or 3 "
        "(colour, for defects that show in colour; grey images are repeated into the three channels)",
    )
    p.add_argument("--seed", type=int, default=0)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    shown, warnings.showwarning = warnings.showwarning, _warning_line  # "warning: ..." on one line
    try:
        return _run(args)
    finally:
        warnings.showwarning = shown


def _run(args: argparse.Namespace) -> int:
    from . import hooks

    # before anything imports TensorFlow (in this process or the bench's children): an accelerator
    # turns on oneDNN where TensorFlow leaves it off (~1.3x; the bench measures the tutorial's way
    # in processes of its own, without this switch)
    hooks.before_tensorflow()
    try:
        if getattr(args, "tensorflow", False):
            # TensorFlow's C++ start-up lines (CUDA probing on CPU machines) would hide the real
            # output: import it once, quietly, before the command does
            import_tensorflow()
        return int(args.func(args) or EXIT_OK)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except (DagmError, OSError) as exc:
        if args.debug:
            traceback.print_exc()
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_ERROR


def _warning_line(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"warning: {' '.join(str(message).split())}", file=sys.stderr)


#: what to do about the operating-system errors a command meets while writing (errno -> advice)
_OS_ADVICE = {
    errno.ENOSPC: "the disk is full: free some space or write elsewhere (--out)",
    errno.EDQUOT: "the disk quota is used up: free some space or write elsewhere (--out)",
    errno.EROFS: "that place is read-only: write elsewhere (--out)",
    errno.EACCES: "no permission there: write elsewhere (--out) or fix the folder's permissions",
    errno.EPERM: "no permission there: write elsewhere (--out) or fix the folder's permissions",
}


def _one_line(exc: BaseException) -> str:
    text = " ".join((str(exc) or exc.__class__.__name__).split())
    advice = _OS_ADVICE.get(getattr(exc, "errno", None)) if isinstance(exc, OSError) else None
    if advice and "--out" not in text:  # a message that already says what to do keeps its own
        text = f"{text}; {advice}"
    return text


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
