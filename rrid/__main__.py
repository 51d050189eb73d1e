"""The command line: ``python -m rrid COMMAND`` (also installed as ``rrid``).

    train           train a model from a YAML config (resumable; several GPUs with torchrun)
    eval            evaluate a checkpoint on the config's query and gallery split
    export          export a trained model to ONNX
    synth           generate the synthetic data set (Market-1501 layout)
    prepare         put a data set where the configs read it: from an archive, a URL or a Drive link
    import-authors  convert the authors' released model into an rrid checkpoint
    prepare-book    train once what the book's chapters read (``make book`` runs it first)

Each command is one function here (``train``, ``evaluate``, ...) with its options in
``_add_<command>``. Exit status: 0 done; 2 an error a user can cause (a bad option, config, data
folder, checkpoint, archive or output path, a run folder in use, a full disk), printed as one line
``error: ...``; 1 a loss that became NaN; 130 Ctrl-C, with one line saying where to resume from.
Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import sys
from pathlib import Path
from typing import Callable, NamedTuple

from rrid import book, runtime
from rrid.ablation import row_config
from rrid.authors import import_authors
from rrid.checkpoint import load_model
from rrid.config import check_device, load_config
from rrid.data import CUHK03NP, DukeMTMCReID, Market1501, OpenReID, summary, synthetic
from rrid.data.download import MARKET1501_MD5, prepare_cuhk03, prepare_dukemtmc, prepare_market1501
from rrid.data.openreid import prepare_openreid
from rrid.errors import DatasetError, UserError
from rrid.evaluation import evaluate
from rrid.export import export_onnx, require_onnx
from rrid.files import atomic_write, check_output_path
from rrid.metrics import summarize
from rrid.paths import resolve
from rrid.train import NonFiniteLossError, build_dataset, build_run_loaders, fit

RAW = argparse.RawDescriptionHelpFormatter
SET = dict(action="append", default=[], metavar="KEY=VALUE", dest="overrides",
           help="override one config value, e.g. --set train.epochs=10 --set model.table2_row=8 "
                "(repeatable; values are YAML: 10, 1e-3, true, [2, 4, 6])")


# ----------------------------------------------------------------------------- train

TRAIN_EXAMPLES = """\
examples:
  python -m rrid train --config configs/quick/ours_f.yaml --out runs/quick
  python -m rrid train --config configs/market1501/row13_ours_f.yaml --out runs/market_f \\
      --set train.epochs=10 --set data.workers=8
  python -m rrid train --config configs/market1501/row13_ours_f.yaml --out runs/market_f --resume
  python -m rrid train --config configs/market1501/row13_ours_f.yaml --out /content/runs/ours_f \\
      --mirror /content/drive/MyDrive/rrid/ours_f --resume
  torchrun --nproc_per_node=2 -m rrid train --config configs/market1501/row13_ours_f.yaml --out runs/ddp

The run folder receives config.yaml (the resolved config), metrics.jsonl (one JSON line per
logged step, epoch and evaluation), last.pt (every epoch, and every
train.checkpoint_every_steps steps) and best.pt (highest mAP, a copy of last.pt). Checkpoints
store a SHA-256 of every tensor, verified whenever they are read.

A folder that already holds a run is refused unless --resume (the config must equal the saved
one; only where and how fast the run goes, how often it logs, evaluates, checkpoints and
mirrors, how it evaluates and where the data lie may differ) or --overwrite (deletes that run's
files first). A folder in use by another run is refused.

exit status: 0 done, 1 the loss became NaN or infinite, 2 an error explained in one line
(a bad config or option, a run folder in use, a missing or corrupted file, a full disk),
130 interrupted (Ctrl-C; the line says how to resume).
"""


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train a model from a YAML config", formatter_class=RAW,
                       description="Train RRID with the recipe in a YAML config (configs/...).", epilog=TRAIN_EXAMPLES)
    p.add_argument("--config", required=True, help="YAML experiment config, e.g. configs/quick/ours_f.yaml")
    p.add_argument("--out", help="run folder (default: train.out_dir of the config, else a new temp folder)")
    again = p.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true",
                       help="continue the run in OUT from OUT/last.pt (a new run when OUT has none yet); "
                            "the config must equal the saved one")
    again.add_argument("--overwrite", action="store_true",
                       help="start a new run in OUT even if it holds one (its config.yaml, metrics.jsonl, "
                            "last.pt, best.pt and tensorboard/ are deleted)")
    p.add_argument("--device", help="cpu, cuda, cuda:1 (default: train.device of the config)")
    p.add_argument("--mirror", help="a second copy of the run, rewritten in place every train.mirror_every epochs "
                                    "(e.g. /content/drive/MyDrive/rrid/run on Colab); --resume continues from it "
                                    "when the local run folder is empty or older")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (TQDM_DISABLE=1 does the same)")
    p.add_argument("--set", **SET)


def train(args) -> int:
    cfg = load_config(args.config, args.overrides)
    if args.mirror:
        cfg.train.mirror = str(resolve(args.mirror, base=Path.cwd()))
    try:
        result = fit(cfg, out_dir=args.out, resume=args.resume, overwrite=args.overwrite, device=args.device,
                     progress=not args.no_progress)
    except NonFiniteLossError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if result.metrics:
        print(_format_metrics(result.metrics))
    print(f"last checkpoint: {result.last_checkpoint}")
    if result.best_checkpoint:
        print(f"best checkpoint: {result.best_checkpoint}")
    return 0


def _format_metrics(m: dict) -> str:
    ranks = "  ".join(f"{k}={100 * m[k]:.1f}" for k in ("rank1", "rank5", "rank10") if k in m)
    minp = f"  mINP={100 * m['mINP']:.1f}" if "mINP" in m else ""
    return f"mAP={100 * m['mAP']:.1f}  {ranks}{minp}"


# ----------------------------------------------------------------------------- eval

EVAL_EXAMPLES = """\
examples:
  python -m rrid eval --config configs/quick/ours_f.yaml --checkpoint runs/quick/best.pt
  python -m rrid eval --config configs/market1501/row13_ours_f.yaml --checkpoint runs/market_f/best.pt \\
      --set eval.rerank=true --json results.json

Prints mAP, rank-1/5/10 and mINP in percent on the config's query and gallery split, with the
config's train.amp and train.device. The checkpoint's tensors are verified against their stored
SHA-256; it must fit the config's model (exit status 2 with a one-line error otherwise).
"""


def _add_eval(sub) -> None:
    p = sub.add_parser("eval", help="evaluate a checkpoint on the config's test split", formatter_class=RAW,
                       description="Evaluate a trained checkpoint (last.pt / best.pt of a run) on the "
                                   "query/gallery split of the config's data set (Market-1501 protocol).",
                       epilog=EVAL_EXAMPLES)
    p.add_argument("--config", required=True, help="YAML experiment config naming the data set and model")
    p.add_argument("--checkpoint", required=True, help="checkpoint written by `rrid train`")
    p.add_argument("--device", help="cpu, cuda, ... (default: train.device of the config)")
    p.add_argument("--json", help="also write the metrics to this JSON file")
    p.add_argument("--set", **SET)


def evaluate_command(args) -> int:
    cfg = load_config(args.config, args.overrides)
    if args.json:
        check_output_path(args.json)                       # before the evaluation, not after it
    device = runtime.pick_device(check_device(args.device, "--device") if args.device else cfg.train.device)
    model = load_model(args.checkpoint, cfg, device)           # the weights come from the checkpoint
    dataset = build_dataset(cfg)
    loaders = build_run_loaders(cfg, dataset, device)
    with runtime.torch_settings(cfg.train, device):             # threads and determinism as in fit's evaluations
        raw, _ = evaluate(model, loaders, flip=cfg.eval.flip, rerank=cfg.eval.rerank, device=device,
                          amp=runtime.amp_dtype(cfg.train.amp, device) or False,
                          progress=not os.environ.get("TQDM_DISABLE"), ranking_metric=cfg.eval.metric)
    metrics = summarize(raw)
    print(_format_metrics(metrics) + ("" if cfg.eval.metric == "market" else f"  (CMC: {cfg.eval.metric})"))
    if args.json:
        with atomic_write(args.json) as f:
            json.dump(metrics, f, indent=2)
    return 0


# ----------------------------------------------------------------------------- export

def _add_export(sub) -> None:
    p = sub.add_parser("export", help="export a trained model to ONNX", formatter_class=RAW,
                       description="Export a trained RRID to ONNX (needs the onnx package): the eval-mode embedding "
                                   "of a (N, 3, H, W) batch, without flip averaging or L2 normalisation.",
                       epilog="example:\n  python -m rrid export --config configs/quick/ours_f.yaml "
                              "--checkpoint runs/quick/best.pt --out model.onnx\n\n"
                              "The checkpoint must be one `rrid train` wrote with this config (its tensors are "
                              "checked against the checksums stored with them); the weights come from it, so no "
                              "ImageNet download is needed.")
    p.add_argument("--checkpoint", required=True, help="a checkpoint written by rrid.fit (last.pt / best.pt)")
    p.add_argument("--config", required=True, help="the experiment YAML the model was trained with")
    p.add_argument("--out", default="model.onnx", help="where to write the .onnx file (default: model.onnx)")
    p.add_argument("--height", type=int, default=None, help="input height (default: the config's data.height)")
    p.add_argument("--width", type=int, default=None, help="input width (default: the config's data.width)")
    p.add_argument("--opset", type=int, default=17)
    p.add_argument("--no-check", action="store_true", help="skip the onnxruntime parity check")
    p.add_argument("--set", **SET)


def export(args) -> int:
    cfg = load_config(args.config, args.overrides)
    check_output_path(args.out)
    require_onnx()                                         # before the checkpoint is read
    model = load_model(args.checkpoint, cfg)               # the weights come from the checkpoint
    height, width = args.height or cfg.data.height, args.width or cfg.data.width
    out = export_onnx(model, args.out, input_size=(height, width), opset=args.opset, check=not args.no_check)
    print(f"wrote {out} (input 3 x {height} x {width})")
    return 0


# ----------------------------------------------------------------------------- synth

def _add_synth(sub) -> None:
    p = sub.add_parser("synth", help="generate the synthetic data set (Market-1501 layout)",
                       description="Write the synthetic pedestrian set (rrid.data.synthetic): identities are "
                                   "combinations of part attributes, in the Market-1501 layout.")
    p.add_argument("out", help="output folder; a relative path is read like a config's data.root: relative to the "
                               "project folder (the one holding configs/)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train-ids", type=int, default=150)
    p.add_argument("--test-ids", type=int, default=150)
    p.add_argument("--images-per-id", type=int, default=10)
    p.add_argument("--cameras", type=int, default=6)
    p.add_argument("--height", type=int, default=128)
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--force", action="store_true", help="regenerate even if OUT holds the same set")


def synth(args) -> int:
    kw = dict(num_train_ids=args.train_ids, num_test_ids=args.test_ids, images_per_id=args.images_per_id,
              num_cameras=args.cameras, size=(args.height, args.width))
    synthetic.check_parameters({"seed": args.seed, **kw}, names=synthetic.CLI_NAMES)   # errors name the option
    make = synthetic.generate if args.force else synthetic.ensure
    path = make(resolve(args.out), seed=args.seed, **kw)
    print(f"synthetic data set (seed {args.seed}) at {path}")
    print(summary(Market1501(path)))
    return 0


# ----------------------------------------------------------------------------- prepare

class PreparedSet(NamedTuple):
    prepare: Callable              # rrid.data.download.prepare_* (source, root, md5=, timeout=, retries=)
    root: str                      # the folder the configs read it from (data.root), relative to the project
    check: Callable                # raises DatasetError unless a folder holds the data set
    archive: str                   # what the user brings
    md5: str | None                # the published checksum (None: none is published)


# one entry per data set: how it is prepared, where the configs read it and what the user brings
DATASETS = {
    "market1501": PreparedSet(prepare_market1501, "data/market1501", Market1501.locate, "Market-1501-v15.09.15.zip",
                              MARKET1501_MD5),
    "dukemtmc": PreparedSet(prepare_dukemtmc, "data/dukemtmc-reid", DukeMTMCReID.locate, "DukeMTMC-reID.zip", None),
    "cuhk03": PreparedSet(prepare_cuhk03, "data/cuhk03-np", CUHK03NP.locate_variants,
                          "the cuhk03-np zip of the re-ranking authors' repository (labeled and detected)", None),
    "openreid": PreparedSet(prepare_openreid, "data/market1501-openreid", OpenReID.locate,
                            "the RRID authors' Market-1501 zip (open-reid layout)", None)}

PREPARE_EXAMPLES = """\
examples:
  python -m rrid prepare market1501 --source ~/Downloads/Market-1501-v15.09.15.zip
  python -m rrid prepare market1501 --source /content/drive/MyDrive/Market-1501-v15.09.15.zip   # Colab
  python -m rrid prepare market1501 --source https://drive.google.com/file/d/<id>/view?usp=sharing
  python -m rrid prepare cuhk03 --source cuhk03-np.zip
  python -m rrid prepare dukemtmc --source DukeMTMC-reID.zip

SOURCE is a local archive (zip or tar), an http(s) URL (timeouts, retries, an interrupted download
resumes) or a Google Drive share link or file id (fetched with gdown: pip install gdown). The
archive is checked (Market-1501's published md5; DukeMTMC-reID and CUHK03-NP publish none, so
their folder tree only), unpacked beside ROOT without letting any member escape it, its tree
checked, and only then renamed to ROOT, where the configs read it (a relative ROOT is read from
the project folder, the one holding configs/). A ROOT that already holds the data set is kept:
running the command again costs nothing. On Colab the VM's disk is wiped when the runtime
disconnects: run it again in every new session (with the archive on Drive it only unpacks again).
"""


def _add_prepare(sub) -> None:
    p = sub.add_parser("prepare", help="put a data set where the configs read it (archive, URL or Drive link)",
                       formatter_class=RAW, epilog=PREPARE_EXAMPLES,
                       description="Check and unpack a data set archive you have (or fetch it from a URL or a "
                                   "Google Drive link) into the folder the configs read it from.")
    p.add_argument("dataset", choices=list(DATASETS),
                   help="which data set (cuhk03: CUHK03-NP, labeled and detected; openreid: the RRID authors' "
                        "Market-1501 download, open-reid layout)")
    p.add_argument("--source", required=True,
                   help="the archive: a path, an http(s) URL, or a Google Drive share link or file id")
    p.add_argument("--root", default=None,
                   help="target folder (default: the configs' data.root: " + ", ".join(
                       f"{name} {d.root}" for name, d in DATASETS.items()) + "); a relative path is read "
                       "like a config's data.root: relative to the project folder (the one holding configs/)")
    p.add_argument("--md5", default=None,
                   help=f"expected md5 of the archive (default: Market-1501's published {MARKET1501_MD5}; none "
                        "is published for the others)")
    p.add_argument("--timeout", type=float, default=30.0,
                   help="seconds a URL may stay silent (connecting, or mid-download) before a retry (default: 30)")
    p.add_argument("--retries", type=int, default=5,
                   help="further attempts after a network failure, with growing waits (default: 5)")


def prepare(args) -> int:
    if not args.timeout > 0 or args.retries < 0:
        raise UserError(f"prepare needs --timeout > 0 and --retries >= 0, got {args.timeout} and {args.retries}")
    data = DATASETS[args.dataset]
    root = resolve(args.root or data.root)
    found = _prepared(data, root)
    if found:
        print(f"{args.dataset} is already prepared in {root}: nothing to do")
    else:
        checked = f"md5 {args.md5 or data.md5}" if args.md5 or data.md5 else "no checksum (none is published)"
        print(f"preparing {args.dataset} in {root} from {args.source} ({checked})")
        data.prepare(args.source, root, md5=args.md5 or data.md5, timeout=(min(args.timeout, 10.0), args.timeout),
                     retries=args.retries)
        print(f"{args.dataset} is ready in {root}")
    openreid = args.dataset == "openreid"             # read by its own parser, not a config's default
    elsewhere = openreid or root != resolve(data.root)
    use = ["--set data.dataset=openreid"] * openreid + [f"--set data.root={root}"] * elsewhere
    if use:
        print("use it with " + " ".join(use))
    if runtime.on_colab():
        print("Colab: this folder is on the VM's disk, which is wiped when the runtime disconnects; run this "
              "command again in each new session (with the archive on Drive it only unpacks it again)")
    return 0


def _prepared(data: PreparedSet, root: Path) -> bool:
    try:
        data.check(root)
        return True
    except DatasetError:
        return False


# ----------------------------------------------------------------------------- import-authors

def _add_import_authors(sub) -> None:
    p = sub.add_parser("import-authors", help="convert the authors' released model into an rrid checkpoint",
                       formatter_class=RAW,
                       description="Read the authors' pretrained_weights.pth (a pickled DataParallel(RelationModel) "
                                   "of PyTorch 0.4.1, or a state dict in their names) without running any code from "
                                   "it, map its 723 tensors onto rrid.RRID (Ours-F) and write a checkpoint that "
                                   "`python -m rrid eval --checkpoint` and rrid.checkpoint.load_model read.",
                       epilog="example:\n  python -m rrid import-authors pretrained_weights.pth --out runs/authors.pt\n"
                              "  python -m rrid eval --config configs/market1501/row13_ours_f.yaml --checkpoint "
                              "runs/authors.pt \\\n      --set data.dataset=openreid --set data.root=data/market1501-openreid")
    p.add_argument("weights", help="the authors' pretrained_weights.pth")
    p.add_argument("--out", required=True, help="rrid checkpoint to write")


def import_authors_command(args) -> int:
    out = import_authors(args.weights, args.out)
    model = load_model(out)
    print(f"{args.weights} -> {out}: Ours-F, {model.num_classes} classes, "
          f"{len(model.state_dict())} tensors, {model.config.feature_dim}-d embedding")
    return 0


# ----------------------------------------------------------------------------- prepare-book

def _add_prepare_book(sub) -> None:
    p = sub.add_parser("prepare-book", help="train once what the book's chapters read (make book runs it first)",
                       description="Build the head-only protocol's synthetic split, frozen backbone, feature cache "
                                   "and the trained heads the chapters draw, and the end-to-end quick models they "
                                   "load, into rrid.paths.cache_dir(); each step is skipped when its file exists.")
    p.add_argument("--cache-dir", type=Path, default=None,
                   help="the head-only protocol's cache (default: rrid.paths.cache_dir()/ablation)")
    p.add_argument("--models", type=_model_spec, nargs="*", default=None, metavar="ROW[:SEED]",
                   help="head-only models to train (default: rrid.book.BOOK_MODELS; none with an empty list)")
    p.add_argument("--quick-models", type=_quick_spec, nargs="*", default=None, metavar="ROW",
                   help="end-to-end quick models to train (default: rrid.book.BOOK_QUICK_MODELS)")
    half = p.add_mutually_exclusive_group()
    half.add_argument("--heads-only", action="store_true", help="no end-to-end quick model (make test's first half)")
    half.add_argument("--quick-only", action="store_true", help="only the end-to-end quick models (the second half)")


def _model_spec(text: str) -> tuple[int | str, int]:
    """"5", "13:2" or "rest_only" -> (row, seed) of a head-only model."""
    row, _, seed = text.partition(":")
    try:
        spec = (int(row) if row.isdigit() else row, int(seed or 0))
        row_config(spec[0])
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"--models {text!r}: expected ROW[:SEED] with ROW in 1..13 or rest_only "
                                         f"({e})") from None
    return spec


def _quick_spec(text: str) -> int | str:
    """"13" or "rest_only" -> a row for ``rrid.book.quick_model`` (its config must exist)."""
    row = int(text) if text.isdigit() else text
    try:
        book.quick_config_path(row)
    except FileNotFoundError as e:
        raise argparse.ArgumentTypeError(f"--quick-models {text!r}: {e}") from None
    return row


def prepare_book(args) -> int:
    models = book.BOOK_MODELS if args.models is None else args.models
    quick = book.BOOK_QUICK_MODELS if args.quick_models is None else args.quick_models
    book.prepare(cache_dir=args.cache_dir, models=models, quick_models=() if args.heads_only else quick,
                 heads=not args.quick_only)
    return 0


# ----------------------------------------------------------------------------- dispatch

COMMANDS = {"train": (_add_train, train), "eval": (_add_eval, evaluate_command), "export": (_add_export, export),
            "synth": (_add_synth, synth), "prepare": (_add_prepare, prepare),
            "import-authors": (_add_import_authors, import_authors_command),
            "prepare-book": (_add_prepare_book, prepare_book)}


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="python -m rrid", formatter_class=RAW,
        description="Relation Network for Person Re-identification (Park & Ham, AAAI 2020): "
                    "train, evaluate, export, and prepare data.",
        epilog="Run `python -m rrid COMMAND --help` for the options of each command.")
    sub = top.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add, _ in COMMANDS.values():
        add(sub)
    return top


# OSErrors that are the machine's state, not a bug: one line naming the file
_ENVIRONMENT_ERRNOS = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC), errno.EACCES, errno.EPERM, errno.EROFS}


def main(argv: list[str] | None = None) -> int:
    """Run one command; errors a user can cause are one line and status 2 (see the module's doc)."""
    args = parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        return COMMANDS[args.command][1](args)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        print(f"{e or 'interrupted'}", file=sys.stderr)
        return 130
    except OSError as e:
        if e.errno not in _ENVIRONMENT_ERRNOS:
            raise
        where = f": {e.filename}" if e.filename else ""
        print(f"error: {e.strerror or e}{where}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
