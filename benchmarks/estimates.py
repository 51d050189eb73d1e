"""What one full training run costs on a Colab GPU: hours on a T4 (fp16) and an A100 (bf16), and
the space its checkpoints take on Google Drive. Computed, not measured (see ``rrid.cost``).

For each data set's Ours-F config (``configs/<data set>/row13_ours_f.yaml``): the FLOPs of one
training step counted on the meta device (``rrid.cost.train_step_flops``), the images of the
80-epoch recipe over all of the data set's training images (``rrid.paper.DATASETS``; the default
split holds 100 identities out, so it trains on fewer), each GPU's datasheet peak and the share of
it NVIDIA's ResNet-50 measurements reach (``rrid.cost.GPUS``, ``utilisation``), and the bytes of
``last.pt`` and of a mirror's weights-only ``best.pt`` (``checkpoint_bytes``).

    python benchmarks/estimates.py        # prints the table, writes benchmarks/results/estimates.md
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rrid import cost  # noqa: E402
from rrid.config import load_config  # noqa: E402
from rrid.files import atomic_write  # noqa: E402
from rrid.paper import DATASETS  # noqa: E402

RUNS = {"Market-1501": ("market1501", "market1501"), "CUHK03-NP (labeled)": ("cuhk03_labeled", "cuhk03"),
        "DukeMTMC-reID": ("dukemtmc", "dukemtmc")}


def rows() -> list[dict]:
    out = []
    for name, (folder, key) in RUNS.items():
        cfg = load_config(ROOT / "configs" / folder / "row13_ours_f.yaml")
        data = DATASETS[key]
        classes = data.train_ids - cfg.data.val_ids
        step = cost.train_step_flops(cfg, classes)
        size = cost.checkpoint_bytes(cfg, classes)
        estimates = {g: cost.training_estimate(cfg, classes, data.train_images, gpu) for g, gpu in cost.GPUS.items()}
        out.append({"data set": name, "classes": classes, "GFLOP per image": step.per_image / 1e9,
                    "images": estimates["T4"].images, **{f"{g} hours": e.hours for g, e in estimates.items()},
                    "last.pt MiB": size.last / 2**20, "Drive MiB": (size.last + size.weights) / 2**20})
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "estimates.md"))
    args = parser.parse_args(argv)
    table = rows()
    gpus = "; ".join(f"{gpu.name}: {gpu.dtype}, {gpu.peak_tflops:g} TFLOPS at peak ({gpu.datasheet}), "
                     f"{cost.utilisation(gpu):.1%} of it reached by NVIDIA's ResNet-50 "
                     f"{'training' if gpu.resnet50_training else 'inference'} ({gpu.resnet50_images_per_s:,.0f} "
                     f"images/s, {gpu.resnet50_source})" for gpu in cost.GPUS.values())
    lines = ["| data set (Ours-F, 80 epochs) | classes | GFLOP per training image | images | T4 (fp16) hours "
             "| A100 (bf16) hours | last.pt, best.pt (MiB each) | on Drive with --mirror (MiB) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['data set']} | {r['classes']} | {r['GFLOP per image']:.1f} | {r['images']:,} | {r['T4 hours']:.1f} "
              f"| {r['A100 hours']:.1f} | {r['last.pt MiB']:,.0f} | {r['Drive MiB']:,.0f} |" for r in table]
    text = "\n".join(lines) + (f"\n\nEstimates (benchmarks/estimates.py), not measurements. {gpus}. A Colab VM lives "
                               f"at most {cost.COLAB_VM_HOURS} h (google2024colab).\n")
    print(text)
    with atomic_write(args.out) as f:
        f.write(text)


if __name__ == "__main__":
    main()
