"""Command line: ``python -m rrid train | eval | synth | export | prepare`` (also installed as ``rrid``)."""

from __future__ import annotations

import argparse
import json
import os
import sys

TRAIN_EXAMPLES = """\
examples:
  python -m rrid train --config configs/quick/ours_f.yaml --out runs/quick
  python -m rrid train --config configs/market1501/row13_ours_f.yaml --out runs/market_f \\
      --set train.epochs=10 --set data.workers=8
  python -m rrid train --config configs/market1501/row13_ours_f.yaml --out runs/market_f --resume
  torchrun --nproc_per_node=2 -m rrid train --config configs/market1501/row13_ours_f.yaml --out runs/ddp

The run folder receives config.yaml (the resolved config), metrics.jsonl (one JSON line per
logged step, epoch and evaluation), last.pt (every epoch, and every
train.checkpoint_every_steps steps) and best.pt (highest mAP).
"""

EVAL_EXAMPLES = """\
examples:
  python -m rrid eval --config configs/quick/ours_f.yaml --checkpoint runs/quick/best.pt
  python -m rrid eval --config configs/market1501/row13_ours_f.yaml --checkpoint runs/market_f/best.pt \\
      --set eval.rerank=true --json results.json

Prints mAP, rank-1/5/10 and mINP in percent on the config's query and gallery split.
"""


def _parser() -> argparse.ArgumentParser:
    raw = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog="python -m rrid", formatter_class=raw,
        description="Relation Network for Person Re-identification (Park & Ham, AAAI 2020): "
                    "train, evaluate, generate the synthetic data set, export to ONNX.",
        epilog="Run `python -m rrid COMMAND --help` for the options of each command.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    overrides = dict(action="append", default=[], metavar="KEY=VALUE",
                     help="override one config value, e.g. --set train.epochs=10 --set model.table2_row=8 "
                          "(repeatable; values are YAML: 10, 1e-3, true, [2, 4, 6])")

    p = sub.add_parser("train", help="train a model from a YAML config", formatter_class=raw,
                       description="Train RRID with the recipe in a YAML config (configs/...).",
                       epilog=TRAIN_EXAMPLES)
    p.add_argument("--config", required=True, help="YAML experiment config, e.g. configs/quick/ours_f.yaml")
    p.add_argument("--out", help="run folder (default: train.out_dir of the config, else a new temp folder)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    p.add_argument("--device", help="cpu, cuda, cuda:1 (default: train.device of the config)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (TQDM_DISABLE=1 does the same)")
    p.add_argument("--set", dest="overrides", **overrides)

    p = sub.add_parser("eval", help="evaluate a checkpoint on the config's test split", formatter_class=raw,
                       description="Evaluate a trained checkpoint (last.pt / best.pt of a run) on the "
                                   "query/gallery split of the config's data set (Market-1501 protocol).",
                       epilog=EVAL_EXAMPLES)
    p.add_argument("--config", required=True, help="YAML experiment config naming the data set and model")
    p.add_argument("--checkpoint", required=True, help="checkpoint written by `rrid train`")
    p.add_argument("--device", help="cpu, cuda, ... (default: train.device of the config)")
    p.add_argument("--json", help="also write the metrics to this JSON file")
    p.add_argument("--set", dest="overrides", **overrides)

    sub.add_parser("synth", help="generate the synthetic data set (Market-1501 layout)", add_help=False,
                   description="Forwarded to rrid.data.synthetic; run `python -m rrid synth --help`.")
    sub.add_parser("export", help="export a trained model to ONNX", add_help=False,
                   description="Forwarded to rrid.export; run `python -m rrid export --help`.")

    p = sub.add_parser("prepare", help="check and unpack a data set archive you downloaded", formatter_class=raw,
                       description="Verify the checksum of a Market-1501 archive (a local file or a URL), "
                                   "unpack it safely (no member may escape the target folder) and check the "
                                   "folder tree, so that `Market1501(root)` and the configs find it.",
                       epilog="example:\n  python -m rrid prepare market1501 --source "
                              "~/Downloads/Market-1501-v15.09.15.zip --root data/market1501")
    p.add_argument("dataset", choices=["market1501"], help="which data set")
    p.add_argument("--source", required=True, help="path or URL of Market-1501-v15.09.15.zip")
    p.add_argument("--root", default="data/market1501", help="target folder (default: data/market1501)")
    p.add_argument("--md5", default=None,
                   help="expected md5 of the archive (default: the published 65005ab7d12ec1c44de4eeafe813e68a)")
    return parser


def _train(args) -> int:
    from rrid.config import load_config
    from rrid.train import NonFiniteLossError, fit

    cfg = load_config(args.config, args.overrides)
    try:
        result = fit(cfg, out_dir=args.out, resume=args.resume, device=args.device, progress=not args.no_progress)
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


def _eval(args) -> int:
    from rrid.config import load_config
    from rrid.evaluation import evaluate
    from rrid.files import atomic_write
    from rrid.model import RRID
    from rrid.train import _pick_device, _summary, _torch_settings, build_dataset, build_run_loaders, load_checkpoint

    cfg = load_config(args.config, args.overrides)
    ckpt = load_checkpoint(args.checkpoint)
    device = _pick_device(args.device or cfg.train.device, 0)
    dataset = build_dataset(cfg)
    loaders = build_run_loaders(cfg, dataset, device)
    cfg.model.pretrained = False                              # the weights come from the checkpoint
    num_classes = ckpt.get("num_classes", dataset.num_train_ids)
    model = RRID(cfg.model, num_classes)
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as e:
        first = str(e).splitlines()[0]
        raise SystemExit(f"error: {args.checkpoint} does not fit the model of {args.config} ({first}); "
                         "use the config the checkpoint was trained with") from None
    model.to(device).eval()
    with _torch_settings(cfg.train, device):                  # threads and determinism as in fit's evaluations
        raw, _ = evaluate(model, loaders, flip=cfg.eval.flip, rerank=cfg.eval.rerank, device=device,
                          amp=device.type == "cuda", progress=not os.environ.get("TQDM_DISABLE"))
    metrics = _summary(raw)
    print(_format_metrics(metrics))
    if args.json:
        with atomic_write(args.json) as f:
            json.dump(metrics, f, indent=2)
    return 0


def _prepare(args) -> int:
    from rrid.data.download import MARKET1501_MD5, prepare_market1501

    root = prepare_market1501(args.source, args.root, md5=args.md5 or MARKET1501_MD5)
    print(f"Market-1501 is ready in {root}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "synth":
        from rrid.data import synthetic
        return synthetic.cli(argv[1:]) or 0
    if argv and argv[0] == "export":
        from rrid import export
        return export.cli(argv[1:]) or 0
    args = _parser().parse_args(argv)
    from rrid.config import ConfigError
    from rrid.train import CheckpointError

    from rrid.data import DatasetError

    commands = {"train": _train, "eval": _eval, "prepare": _prepare}
    try:
        return commands[args.command](args)
    except (ConfigError, CheckpointError, DatasetError) as e:   # bad input: one clear line, no traceback
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
