"""Quick ablations of Table 2 on a shared frozen backbone: the head-only protocol.

Training all 13 rows of the paper's Table 2 end to end on a 2-core CPU leaves each run one
short epoch, and then the seed-to-seed spread (2-6 mAP points) hides the paper's effects
(0.6-3 points between rows 4 and 13). This module trains only what the rows differ in, the heads, on feature maps
computed once by one frozen backbone, so that a run takes seconds and many seeds fit:

1. **Data.** One synthetic set (``rrid.data.synthetic``) whose training identities are cut in
   two disjoint groups: the first ``backbone_ids`` train the backbone, the next
   ``train_ids`` train the heads; the test split (``test_ids`` identities, query and
   gallery) is disjoint from both.
2. **Backbone.** A ResNet (``rrid.model.resnet_backbone``) trained from scratch, once, on the
   backbone identities with a generic objective that belongs to no row: softmax identity
   classification on the global average of the feature map, as ImageNet pre-training does
   (and, like ImageNet models, with last stride 2). It is then frozen and used with last
   stride 1 (the paper's surgery on its ImageNet backbone), giving x: (C, H, W).
3. **Cache.** x of every head-training image in ``views`` views (plain, mirrored, and
   ``views - 2`` with a random flip and the authors' random erasing) and of every test
   image (plain and mirrored, for the flip-averaged evaluation), stored in float16.
4. **Heads.** For a row and a seed s, the package's ``RRID`` of that row, built after
   ``torch.manual_seed(s)`` like ``rrid.train.build_model``, with its backbone replaced by
   the cache (``model.backbone = nn.Identity()``), is trained with ``RRIDLoss`` (Eq. 3) and
   SGD on P x K batches (``PKSampler``, seed s). Everything random is a function of s only:
   the same seed gives two rows the same batches, the same views and the same initial
   weights for the layers they share the position of, so differences between rows are
   paired.
5. **Evaluation.** As ``rrid.evaluate``: the embedding of an image and of its mirror
   averaged, L2-normalised, Euclidean distances, the Market-1501 protocol
   (``evaluate_ranking``); and each 256-d block alone (Tables 3 and 4 of the paper).

What it isolates: how well each head design (stripe pooling, relation module, GCP and the
other global poolings, one or three scales, their classifiers and losses) uses one fixed
feature map. What it cannot show: how each head's gradients shape the backbone, which the
paper's end-to-end training includes (e.g. the relation module may teach the backbone
better part features); nor anything about real images, ImageNet features or ResNet-50.
The numbers are quick-mode results on synthetic data, not the paper's.

``live_ablation(4, 5, plot=rrid.LivePlot())`` trains two rows with their curves overlaid in one plot;
``benchmarks/ablation_quick.py`` loops over rows and seeds and writes the CSV files that
:func:`read_runs` and :func:`comparisons` read back.

For the book's figures: ``trained_model(row, seed)`` is the full model (frozen backbone + the
row's trained heads; ``row`` 1..13 or "rest_only", the paper's Fig. 6 model), trained once and
kept on disk; ``rank(row_or_model)`` ranks the test split from the cache (an
``rrid.retrieval.Ranking``); ``images(paths)`` loads images as the cache saw them.
``python -m rrid prepare-book`` (``rrid.book.prepare``) builds all of it ahead of time (``make book``
runs it first).

**At paper scale** (chapter 9's full mode): ``FULL``, a :class:`FullProtocol` with the same steps
4-5 on Market-1501 at 384 x 128 and a frozen ImageNet ResNet-50 (steps 1-2 become "torchvision's
weights"). Its maps would take 66 GB; every head reads a map only through pooling over whole
rows, so its cache holds each band's max and sum (:mod:`~rrid.ablation.bands`), 1/12 of the size,
from which every head's input follows exactly. ``SMOKE`` runs that code with the smallest
amounts (``RRID_SMOKE=1``: market1501-mini, a random ResNet-50).

Modules: :mod:`~rrid.ablation.protocol` (the quick protocol, data split, backbone, feature cache),
:mod:`~rrid.ablation.bands` (band statistics and ``BandMap``), :mod:`~rrid.ablation.full` (the
full protocol and its band cache), :mod:`~rrid.ablation.heads` (head training on ``rrid.train``'s
step, evaluation, trained models), :mod:`~rrid.ablation.estimate` (how long a protocol takes,
measured and on a T4), :mod:`~rrid.ablation.benchmark` (rows x seeds into the result files,
resumably), :mod:`~rrid.ablation.results` (the CSV files read back and their comparisons).
"""

from . import benchmark, estimate
from .bands import BandMap, band_bounds, band_statistics
from .full import FULL, SMOKE, FullProtocol, build_bands, frozen_backbone, market_split, smoke_protocol
from .heads import (NAMED_ROWS, HeadRun, HeadState, batches, embed_cached, evaluate_heads, head_model, live_ablation,
                    heads_file, rank, row_config, train_heads, trained_model, trained_run)
from .protocol import (LOG_EVERY, QUICK, FeatureCache, Protocol, build_features, cache_info, default_cache_dir,
                       cache_file, features, images, synthetic_split, train_backbone)
from .results import (COMPARISONS, PAPER_TABLE3, PAPER_TABLE4, POWER_GOAL, TABLE3_COMPARISONS, TABLE3_ROWS,
                      TABLE4_COMPARISONS, TABLE4_ROWS, Comparison, block_comparisons, comparisons, read_blocks, read_runs)

__all__ = ["Protocol", "QUICK", "FeatureCache", "LOG_EVERY", "synthetic_split", "train_backbone", "build_features",
           "features", "cache_info", "images", "default_cache_dir", "cache_file", "NAMED_ROWS", "HeadState", "HeadRun", "row_config",
           "head_model", "batches", "train_heads", "embed_cached", "evaluate_heads", "live_ablation", "trained_model",
           "trained_run", "rank", "heads_file", "COMPARISONS", "POWER_GOAL", "TABLE3_ROWS", "TABLE4_ROWS", "PAPER_TABLE3",
           "PAPER_TABLE4", "TABLE3_COMPARISONS", "TABLE4_COMPARISONS", "Comparison", "read_runs", "read_blocks",
           "comparisons", "block_comparisons", "BandMap", "band_bounds", "band_statistics", "FullProtocol", "FULL",
           "SMOKE", "build_bands", "frozen_backbone", "market_split", "smoke_protocol", "benchmark", "estimate"]
