"""The paper's numbers, held once: Tables 1-4 and the other figures its text quotes.

Park & Ham, "Relation Network for Person Re-identification", AAAI 2020, as transcribed in
``shared/paper/relation-network-reid-aaai2020.md``. All accuracies are in percent, as printed;
a "-" of the paper is ``None``. Chapters read these tables instead of retyping them, and
``tests/test_paper.py`` checks them against each other and against the sentences of the text
that quote them.

* :data:`TABLE1` (:class:`Table1Row`): the state of the art, with feature sizes.
* :data:`TABLE2` (:class:`Table2Row`): the ablation, one row per architecture
  (``rrid.RRIDConfig.table2(row)`` builds it).
* :data:`TABLE3` (:class:`Table3Row`): one 256-d local feature q_i of q^P6 per horizontal
  region, without and with the relation module.
* :data:`TABLE4` (:class:`Table4Row`): one 256-d global feature q_0 of q^P6 per pooling.
* :data:`REST_ONLY`, :data:`TRAINING`, :data:`DATASETS`, :data:`TABLE3_MEAN_GAIN`: numbers
  quoted in the text.
* :data:`LATER_METHODS` (:class:`LaterMethod`): Market-1501 results of methods that Table 1
  does not include, published beside or after RRID, each with where its numbers were read.
  Not the paper's numbers: they are held here so that they, too, are written once.
* :func:`table_rows` (a list of plain dicts) and :func:`format_table` /
  :func:`show_table` (Markdown or HTML for a notebook).
"""

from __future__ import annotations

import dataclasses
import html
from dataclasses import dataclass
from typing import Mapping, Sequence

__all__ = [
    "Table1Row", "Table2Row", "Table3Row", "Table4Row", "Result", "Training", "DatasetSize",
    "TABLE1", "TABLE2", "TABLE3", "TABLE4", "REST_ONLY", "TRAINING", "DATASETS", "TABLE3_MEAN_GAIN",
    "CITATIONS", "DUKE_NOTE", "COLUMNS", "table_rows", "format_table", "show_table",
    "LaterMethod", "LATER_METHODS", "Claim", "table1_claims", "CUHK03_RANK1_CAVEAT", "TABLE1_GROUPS",
    "PriorArt", "PRIOR_ART", "prior_art_rows", "format_prior_art", "show_prior_art",
    "format_claims", "show_claims",
]

DUKE_NOTE = ("The DukeMTMC-reID columns of Table 1 are not in the paper text available here; "
             "they are left empty, not filled in.")


# ----------------------------------------------------------------------------- Table 1


@dataclass(frozen=True)
class Table1Row:
    """One row of Table 1: a method, its feature size and its published mAP / rank-1 (%).

    ``cite`` is the BibTeX key of the method's paper in ``book/references.bib``. The
    DukeMTMC-reID columns (``duke_map``, ``duke_rank1``) are None in every row: the text
    available here prints Table 1 with six numbers per row, which line up with Market-1501,
    CUHK03 labeled and CUHK03 detected (Ours-S and Ours-F match Table 2 rows 8 and 13 there),
    so the Duke columns were lost in transcription. They are not filled in from elsewhere;
    Ours-S's and Ours-F's Duke numbers are in :data:`TABLE2` (rows 8 and 13). ``note`` says
    what was done with a doubtful cell of the transcription (Deep-Person's: shown as "-").
    """

    method: str
    cite: str
    feature_dim: int
    market_map: float | None
    market_rank1: float | None
    cuhk03_labeled_map: float | None
    cuhk03_labeled_rank1: float | None
    cuhk03_detected_map: float | None
    cuhk03_detected_rank1: float | None
    duke_map: float | None = None
    duke_rank1: float | None = None
    note: str = ""

    @property
    def ours(self) -> bool:
        """True for the paper's own models (Ours-S, Ours-F)."""
        return self.method.startswith("Ours")


_DEEP_PERSON_NOTE = (
    "the transcription prints '- - - 64.8' after its Market-1501 numbers, which would be a CUHK03-detected "
    "rank-1 without its mAP, the only such cell of the table; as the transcription lost the DukeMTMC-reID "
    "columns (the last of the paper's header), 64.8 is most likely Deep-Person's Duke mAP shifted left. "
    "Shown as '-' (the published PDF settles it).")

# Park & Ham (2020), Table 1: F-dim, Market-1501, CUHK03 labeled, CUHK03 detected (Duke: see the class).
TABLE1 = [
    Table1Row("SVDNet", "sun2017svdnet", 2048, 62.1, 82.3, 37.8, 40.9, 37.3, 41.5),
    Table1Row("Triplet", "hermans2017defense", 128, 69.1, 84.9, None, None, None, None),
    Table1Row("HA-CNN", "li2018harmonious", 1024, 75.7, 91.2, 41.0, 44.4, 38.6, 41.7),
    Table1Row("Deep-Person", "bai2017deepperson", 2048, 79.5, 92.3, None, None, None, None, note=_DEEP_PERSON_NOTE),
    Table1Row("AlignedReID", "luo2019alignedreid", 2048, 79.1, 91.8, None, None, 59.6, 61.5),
    Table1Row("PCB", "sun2018beyond", 1536, 77.3, 92.4, None, None, 54.2, 61.3),
    Table1Row("PCB+RPP", "sun2018beyond", 1536, 81.0, 93.1, None, None, 57.5, 63.7),
    Table1Row("HPM", "fu2019horizontal", 3840, 82.7, 94.2, None, None, 57.5, 63.9),
    Table1Row("MGN", "wang2018learning", 2048, 86.9, 95.7, 67.4, 68.0, 66.0, 66.8),
    Table1Row("Ours-S", "park2020relation", 1792, 88.0, 94.8, 73.5, 76.6, 69.5, 72.5),
    Table1Row("Ours-F", "park2020relation", 3840, 88.9, 95.2, 75.6, 77.9, 69.6, 74.4),
]

CITATIONS = {
    "sun2017svdnet": "Sun, Zheng, Deng and Wang 2017, SVDNet for pedestrian retrieval (ICCV)",
    "hermans2017defense": "Hermans, Beyer and Leibe 2017, In defense of the triplet loss for person re-identification (arXiv:1703.07737)",
    "li2018harmonious": "Li, Zhu and Gong 2018, Harmonious attention network for person re-identification (CVPR)",
    "bai2017deepperson": "Bai et al. 2017, Deep-Person: learning discriminative deep features for person re-identification (arXiv:1711.10658)",
    "luo2019alignedreid": "Luo et al. 2019, AlignedReID++: dynamically matching local information for person re-identification (Pattern Recognition)",
    "sun2018beyond": "Sun, Zheng, Yang, Tian and Wang 2018, Beyond part models: person retrieval with refined part pooling (ECCV)",
    "fu2019horizontal": "Fu et al. 2019, Horizontal pyramid matching for person re-identification (AAAI)",
    "wang2018learning": "Wang, Yuan, Chen, Li and Zhou 2018, Learning discriminative features with multiple granularities for person re-identification (ACM MM)",
    "park2020relation": "Park and Ham 2020, Relation network for person re-identification (AAAI)",
}
"""BibTeX key -> the reference as the paper lists it (every ``Table1Row.cite``)."""


# ----------------------------------------------------------------------------- Table 2


@dataclass(frozen=True)
class Table2Row:
    """One row of the paper's Table 2 (ablation), with the published mAP / rank-1 in %."""

    row: int
    global_pool: str | None
    local_pool: str | None
    relation: bool
    scales: tuple[int, ...]
    feature_dim: int
    market_map: float
    market_rank1: float
    cuhk03_labeled_map: float
    cuhk03_labeled_rank1: float
    cuhk03_detected_map: float
    cuhk03_detected_rank1: float
    duke_map: float
    duke_rank1: float
    name: str | None = None


_P6, _MULTI = (6,), (2, 4, 6)
# Park & Ham (2020), Table 2: Market-1501, CUHK03 (labeled, detected), DukeMTMC-reID.
TABLE2 = [
    Table2Row(1, "gap", None, False, _P6, 256, 74.5, 88.2, 57.0, 60.6, 54.3, 58.4, 62.9, 79.6),
    Table2Row(2, None, "gap", False, _P6, 1536, 79.0, 92.3, 65.1, 67.9, 62.4, 65.6, 70.0, 84.0),
    Table2Row(3, "gap", "gap", False, _P6, 1792, 82.9, 92.9, 68.1, 71.4, 63.6, 66.2, 73.5, 85.5),
    Table2Row(4, "gmp", "gmp", False, _P6, 1792, 83.7, 93.2, 70.7, 73.9, 64.3, 66.8, 74.8, 86.1),
    Table2Row(5, "gmp", "gmp", True, _P6, 1792, 86.7, 94.2, 73.3, 75.8, 67.6, 70.2, 76.3, 88.3),
    Table2Row(6, "gap", "gmp", True, _P6, 1792, 85.8, 94.1, 72.6, 75.0, 67.6, 69.6, 75.6, 88.2),
    Table2Row(7, "gap+gmp", "gmp", True, _P6, 1792, 86.6, 94.3, 72.9, 75.8, 68.1, 70.3, 76.5, 88.4),
    Table2Row(8, "gcp", "gmp", True, _P6, 1792, 88.0, 94.8, 73.5, 76.6, 69.5, 72.5, 77.1, 89.3, "Ours-S"),
    Table2Row(9, "gmp", "gmp", False, _MULTI, 3840, 86.7, 94.4, 72.8, 74.6, 67.7, 69.1, 76.1, 87.7),
    Table2Row(10, "gap", "gmp", False, _MULTI, 3840, 86.5, 94.2, 72.5, 74.7, 67.3, 69.9, 76.5, 87.3),
    Table2Row(11, "gap+gmp", "gmp", False, _MULTI, 3840, 86.5, 94.1, 72.8, 75.4, 66.5, 69.9, 76.6, 87.8),
    Table2Row(12, "gcp", "gmp", False, _MULTI, 3840, 87.3, 94.5, 73.0, 75.9, 69.0, 71.6, 77.4, 88.3),
    Table2Row(13, "gcp", "gmp", True, _MULTI, 3840, 88.9, 95.2, 75.6, 77.9, 69.6, 74.4, 78.6, 89.7, "Ours-F"),
]


# ----------------------------------------------------------------------------- Table 1 read with Table 2

TABLE1_GROUPS = {"market": "Market-1501", "cuhk03_labeled": "CUHK03 labeled", "cuhk03_detected": "CUHK03 detected"}
"""The column groups of :data:`TABLE1` that hold numbers (field prefix -> name); each has ``_map`` and ``_rank1``."""

CUHK03_RANK1_CAVEAT = (
    "The authors' released code computes CUHK03 rank-1 with the older single-gallery-shot CMC, not the CMC "
    "of the 767/700 protocol; the paper does not say which CMC the other methods' CUHK03 numbers come from, "
    "so the CUHK03 rank-1 columns may mix the two and are not a like-for-like comparison (the book's reading; "
    "the evaluation chapter runs both on the same distances). The mAP columns do not depend on this choice.")


@dataclass(frozen=True)
class Claim:
    """A statement about Table 1, its numbers filled in from :data:`TABLE1` / :data:`TABLE2`; ``quote``
    the paper's own words for it (*Quantitative results*), ``caveat`` what limits it."""

    text: str
    quote: str = ""
    caveat: str = ""


def _ranked(field: str, rows=None) -> list[Table1Row]:
    """The rows of Table 1 with a number in ``field``, highest first (the table's order among equals)."""
    rows = TABLE1 if rows is None else rows
    return sorted((r for r in rows if getattr(r, field) is not None), key=lambda r: -getattr(r, field))


def _values(rows, field: str) -> str:
    return ", ".join(f"{r.method} {getattr(r, field)}" for r in rows)


def table1_claims() -> list[Claim]:
    """What Table 1 supports, each statement computed from the table (who leads each column, by how much),
    with the paper's words and the caveats the book knows of: the CUHK03 rank-1 protocol
    (:data:`CUHK03_RANK1_CAVEAT`) and the DukeMTMC-reID columns missing from the text (:data:`DUKE_NOTE`)."""
    by = {r.method: r for r in TABLE1}
    earlier = [r for r in TABLE1 if not r.ours]

    def leads(group: str, metric: str, top: int) -> str:
        f = f"{group}_{metric}"
        return f"{_values(_ranked(f)[:top], f)}, the best earlier method {_values(_ranked(f, earlier)[:1], f)}"

    claims = [Claim("mAP: " + "; ".join(f"{name}: {leads(g, 'map', 2)}" for g, name in TABLE1_GROUPS.items()) + ".",
                    quote="Ours-F gives the best results again on all datasets in terms of mAP.")]
    market = _ranked("market_rank1")[0]
    claims.append(Claim(
        f"Market-1501 rank-1: {_values([market], 'market_rank1')} leads; "
        + ", ".join(f"{o.method} has {o.market_rank1} ({market.market_rank1 - o.market_rank1:.1f} lower)"
                    for o in (by["Ours-F"], by["Ours-S"])) + ".",
        quote="The rank-1 accuracy of Ours-F is slightly lower than that of MGN (Wang et al. 2018) on the Market1501."))
    claims.append(Claim(
        "CUHK03 rank-1: " + "; ".join(f"{TABLE1_GROUPS[g].split()[1]}: {leads(g, 'rank1', 1)}"
                                      for g in TABLE1_GROUPS if g.startswith("cuhk03")) + ".",
        quote="Ours-F outperforms MGN on other datasets by a significant margin.", caveat=CUHK03_RANK1_CAVEAT))
    ours_s = by["Ours-S"]
    fields = [f"{g}_{m}" for g in TABLE1_GROUPS for m in ("map", "rank1")]
    behind = [(f, r) for f in fields for r in earlier
              if getattr(r, f) is not None and getattr(r, f) >= getattr(ours_s, f)]
    exceptions = "; ".join(f"{_label(f)}, where {r.method} ({r.feature_dim:,} numbers) has {getattr(r, f)} "
                           f"against {getattr(ours_s, f)}" for f, r in behind)
    claims.append(Claim(
        f"Ours-S ({ours_s.feature_dim:,} numbers per image) is ahead of every earlier method in "
        f"{len(fields) - len({f for f, _ in behind})} of the {len(fields)} columns"
        + (f"; the exception: {exceptions}." if behind else "."),
        quote="Ours-S outperforms state-of-the-art reID methods in terms of mAP and rank-1 accuracy for all "
              "datasets, except MGN (Wang et al. 2018).",
        caveat="Two of those columns are CUHK03 rank-1, with the caveat above."))
    s, f = TABLE2[7], TABLE2[12]
    claims.append(Claim(
        "DukeMTMC-reID: Table 1's Duke columns are not in the paper text this book works from. The paper's own "
        f"Duke numbers are in Table 2: {s.name} (row {s.row}) mAP {s.duke_map}, rank-1 {s.duke_rank1}; "
        f"{f.name} (row {f.row}) mAP {f.duke_map}, rank-1 {f.duke_rank1}.",
        caveat="So the paper's claim of the best Duke results cannot be checked against the other methods here."))
    return claims


def _label(field: str) -> str:
    """``"cuhk03_labeled_rank1"`` -> ``"CUHK03 labeled rank-1"``."""
    group, metric = field.rsplit("_", 1)
    return f"{TABLE1_GROUPS[group]} {'mAP' if metric == 'map' else 'rank-1'}"


@dataclass(frozen=True)
class PriorArt:
    """A method of Table 1 whose design rows of Table 2 take over: the book's map between the two tables.

    The paper does not name a Table 2 row after a method; it names the methods whose choices its rows
    make (``quote``, with ``where`` in the paper). ``rows`` are the Table 2 rows built that way, ``shared``
    what they take from the method, ``differs`` what they do not (the rows are all trained with the
    paper's recipe, triplet and cross-entropy losses, so a gap between the two numbers mixes the design
    with the training)."""

    method: str
    rows: tuple[int, ...]
    shared: str
    differs: str
    quote: str
    where: str


PRIOR_ART = [
    PriorArt("PCB", (2,), "six horizontal stripes, each pooled by GAP and reduced to 256 numbers, no global "
             "feature; the backbone without GAP and fc, last stride 1",
             "PCB is trained with cross-entropy alone, one classifier per stripe",
             "following the work of (Sun et al. 2018b), we remove the GAP and fully connected layers [...] Similar "
             "to other part-based reID methods (Sun et al. 2018b; Fu et al. 2019), we split the initial feature map "
             "into multiple horizontal grids", "Part-level features"),
    PriorArt("HPM", (11,), "several numbers of stripes at once, 15 features of 256 numbers (HPM's 3,840 too), "
             "and a global feature pooled by GAP+GMP",
             "HPM's pyramid has 1, 2, 4 and 8 stripes, each pooled by GAP+GMP; the rows have 2, 4 and 6 stripes "
             "pooled by GMP, plus a global feature per branch",
             "previous reID methods use GAP (Sun et al. 2018b), GMP (Wang et al. 2018), or both (Fu et al. 2019) "
             "[...] to consider various parts of multiple scales (Fu et al. 2019)",
             "GCP; Extension to different numbers of grids"),
    PriorArt("MGN", (4, 9), "GMP for the global and the stripe features; in row 9 several numbers of stripes, as "
             "MGN's branches of 1, 2 and 3 stripes",
             "MGN's three branches (the whole map, 2 and 3 stripes) have their own copies of the backbone's last "
             "stages; the rows' branches share one backbone",
             "previous reID methods use GAP (Sun et al. 2018b), GMP (Wang et al. 2018), or both (Fu et al. 2019)",
             "GCP"),
]
"""PCB's 1,536-d, HPM's 3,840-d and MGN's GMP, as the paper ties them to its own choices."""


def prior_art_rows() -> list[dict]:
    """:data:`PRIOR_ART` as table rows: each method beside its Table 2 rows, F-dim and Market-1501
    mAP / rank-1 (numbers from :data:`TABLE1` and :data:`TABLE2`)."""
    by = {r.method: r for r in TABLE1}
    out = []
    for p in PRIOR_ART:
        m, rows = by[p.method], [TABLE2[k - 1] for k in p.rows]
        out.append({"Table 1 method": p.method, "F-dim": f"{m.feature_dim:,}",
                    "Market mAP / R-1": f"{m.market_map} / {m.market_rank1}",
                    "Table 2 row": ", ".join(str(t.row) for t in rows),
                    "row F-dim": ", ".join(f"{t.feature_dim:,}" for t in rows),
                    "row Market mAP / R-1": "; ".join(f"{t.market_map} / {t.market_rank1}" for t in rows)})
    return out


def format_prior_art() -> str:
    """:func:`prior_art_rows` as a Markdown table, then one line per method: what its rows take from it,
    what they do not, and the paper's words."""
    notes = [f"- **{p.method}**, row{'s' if len(p.rows) > 1 else ''} {', '.join(map(str, p.rows))}: {p.shared}. "
             f"What differs: {p.differs}. The paper (*{p.where}*): \"{p.quote}\"" for p in PRIOR_ART]
    return format_table(prior_art_rows(), bold_best=False) + "\n\n" + "\n".join(notes)


def show_prior_art():
    """:func:`format_prior_art` as an IPython ``Markdown`` object."""
    from IPython.display import Markdown   # IPython: there in every notebook, optional for the package

    return Markdown(format_prior_art())


# ----------------------------------------------------------------------------- Tables 3 and 4


@dataclass(frozen=True)
class Table3Row:
    """Table 3: retrieval on Market-1501 with the single 256-d local feature q_i of q^P6 of one
    horizontal region (1: top, 6: bottom), without (``*_without``) and with the relation module.

    The text does not name the two models; the book reads them as Table 2's rows 4 (GMP, no
    relation module) and 5 (the same with it): see :data:`TABLE3_MODELS`.
    """

    region: int
    map_without: float
    rank1_without: float
    map_with: float
    rank1_with: float


TABLE3 = [
    Table3Row(1, 29.6, 49.4, 58.7, 82.2),
    Table3Row(2, 46.4, 69.2, 68.5, 87.1),
    Table3Row(3, 55.3, 77.2, 73.5, 89.1),
    Table3Row(4, 51.8, 72.7, 71.9, 87.6),
    Table3Row(5, 49.7, 69.2, 69.7, 85.4),
    Table3Row(6, 35.5, 53.4, 55.7, 76.9),
]
TABLE3_MODELS = {"without": 4, "with": 5}
"""The Table 2 rows whose q_i the book compares with Table 3 (the paper does not say)."""

TABLE3_MEAN_GAIN = {"mAP": 21.7, "rank1": 19.6}
"""The text's "improvements in mAP and rank-1 accuracy are 21.7% and 19.6% ... on average"
(percentage points, the mean over the six regions of with - without)."""


@dataclass(frozen=True)
class Table4Row:
    """Table 4: retrieval on Market-1501 with the single 256-d global feature q_0 of q^P6,
    obtained by one pooling (``global_pool`` as in ``RRIDConfig``). ``table2_row`` is the
    model of Table 2 with that global pooling, the relation module and GMP local features,
    as the book reads it (the text says only that the poolings differ)."""

    pooling: str
    global_pool: str
    table2_row: int
    map: float
    rank1: float


TABLE4 = [
    Table4Row("GAP", "gap", 6, 81.0, 91.3),
    Table4Row("GMP", "gmp", 5, 81.9, 92.0),
    Table4Row("GAP+GMP", "gap+gmp", 7, 82.5, 92.6),
    Table4Row("GCP", "gcp", 8, 84.6, 93.4),
]


# ----------------------------------------------------------------------------- quoted in the text


@dataclass(frozen=True)
class Result:
    """A Market-1501 result the text quotes outside the tables (%)."""

    market_map: float
    market_rank1: float
    what: str


REST_ONLY = Result(84.5, 93.4, "q_i = p̄_i + R_p(r̄_i) (the rest feature alone, no T), P6 only; "
                               "against 86.7 / 94.2 with R_p(T(p̄_i, r̄_i)), Table 2 row 5")
"""The one-vs.-rest section: "The mAP/rank-1 for r̄_i on Market1501 are 84.5/93.4"."""


@dataclass(frozen=True)
class Training:
    """The training recipe as the paper's "Implementation details" state it."""

    height: int = 384
    width: int = 128
    channels: int = 2048                     # C
    reduced_dim: int = 256                   # c
    identities_per_batch: int = 16           # N_K
    images_per_identity: int = 4             # N_M
    batch_size: int = 64                     # N = N_K N_M
    epochs: int = 80
    backbone_lr: float = 1e-3
    head_lr: float = 1e-2
    lr_milestones: tuple[int, ...] = (40, 60)  # "until 40 epochs, is divided by 10 every 20 epochs"
    lr_gamma: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    ce_weight: float = 2.0                   # λ in L = L_triplet + λ L_ce (Eq. 3)
    gpus: str = "two NVIDIA Titan Xp"
    hours: Mapping[str, float] = dataclasses.field(
        default_factory=lambda: {"market1501": 6.0, "cuhk03": 3.0, "dukemtmc": 8.0})


TRAINING = Training()
"""The paper's recipe; ``TRAINING.hours`` are its training times ("about six, three and eight
hours with two NVIDIA Titan Xps" for Market-1501, CUHK03, DukeMTMC-reID)."""


@dataclass(frozen=True)
class DatasetSize:
    """Images and identities of a data set's splits, as the paper's "Dataset" paragraph gives them."""

    train_images: int
    train_ids: int
    query_images: int
    gallery_images: int
    test_ids: int

    def train_images_of(self, ids: int) -> int:
        """The training images of ``ids`` of the training identities (a split that holds some out,
        as the authors' 651 of Market-1501's 751), estimated in proportion to the identities: the
        paper gives only the whole set's count."""
        return round(self.train_images * ids / self.train_ids)


DATASETS = {
    "market1501": DatasetSize(12936, 751, 3368, 19732, 750),
    "cuhk03": DatasetSize(7365, 767, 1400, 5332, 700),      # the 767/700 split of Zhong et al. 2017a
    "dukemtmc": DatasetSize(16522, 702, 2228, 17661, 702),
}
"""The paper's split sizes. Its CUHK03 numbers (7,365 / 1,400 / 5,332) are those of the
detected images; the labeled ones are 7,368 / 1,400 / 5,328."""


# ----------------------------------------------------------------------------- not the paper: later methods


@dataclass(frozen=True)
class LaterMethod:
    """A Market-1501 result of a method that the paper's Table 1 does not include.

    Accuracies in percent, without re-ranking (``source`` says where that is stated). ``cite`` is the
    method's BibTeX key in ``book/references.bib``; ``year`` the year of that publication.
    ``input_size`` is (height, width) of the training and test images of the run that produced
    the numbers, ``backbone`` what extracts the feature. ``rerun`` is True when the numbers are
    not those the method's paper printed but a later run of released code (a model zoo, or the
    authors' re-organised code); False when they are the method's authors' own reported result.
    ``source`` says exactly where each number was read; ``note`` what else a reader comparing
    it with RRID must know.
    """

    method: str
    cite: str
    year: int
    backbone: str
    input_size: tuple[int, int]
    market_map: float
    market_rank1: float
    market_minp: float | None
    rerun: bool
    source: str
    note: str = ""


LATER_METHODS = [
    LaterMethod(
        "BoT", "luo2019bag", 2019, "ResNet-50, one global feature", (256, 128), 85.9, 94.5, 59.4, False,
        source=("rank-1 and mAP: Luo et al. (2019), abstract, and the '+Center loss' row (the one before "
                "'+Reranking') of the Results table in the authors' repository README "
                "(michuanhaohao/reid-strong-baseline); mINP: the table of the "
                "ReID-Survey README (mangye16/ReID-Survey, row 'BNNneck'), computed by Ye et al. (mINP is theirs, "
                "later than BoT); input size: the repository's configs/softmax_triplet_with_center.yml"),
        note=("a 'bag of tricks' on a plain ResNet-50: warm-up, random erasing, label smoothing, last stride 1, "
              "BNNeck and centre loss, which take the README's standard baseline from 87.7 / 74.0 to 94.5 / 85.9 "
              "(rank-1 / mAP); with k-reciprocal re-ranking the same README reports 95.4 / 94.2")),
    LaterMethod(
        "ABD-Net", "chen2019abd", 2019, "ResNet-50 with attention modules", (384, 128), 88.3, 95.6, 66.2, False,
        source=("rank-1 and mAP: the authors' README (VITA-Group/ABD-Net), Results table: Top-1 95.60, mAP 88.28 "
                "(rounded here to one decimal, as the ReID-Survey README prints them); mINP: the ReID-Survey README, "
                "computed by Ye et al.; input size: the example command of the repository's "
                "README_Training_and_Testing_Guides.md (--height 384 --width 128); its code has no re-ranking option "
                "(args.py)"),
        note="channel and position attention with orthogonality regularisation; a global and an attentive branch"),
    LaterMethod(
        "AGW", "ye2021deep", 2021, "ResNet-50 with non-local blocks", (256, 128), 87.8, 95.1, 65.0, False,
        source=("the authors' ReID-Survey README (mangye16/ReID-Survey), Market-1501 table, row AGW; input size: "
                "the repository's configs/AGW_baseline.yml (RE_RANKING: 'off')"),
        note=("non-local attention blocks, generalised-mean pooling and a weighted regularisation triplet loss "
              "(the README's list)")),
    LaterMethod(
        "TransReID*", "he2021transreid", 2021, "ViT-B/16 (overlapping patches, stride 12)", (256, 128), 89.0, 95.1,
        None, True,
        source=("the authors' README (damo-cv/TransReID), table 'Trained Models and logs (Size 256)', row "
                "TransReID*(ViT), Market column '89.0 | 95.1' (mAP | R1); the README says its re-organised code "
                "gives numbers slightly different from the paper's, whose table is not used here; settings: "
                "configs/Market/vit_transreid_stride.yml (RE_RANKING: False)"),
        note=("a transformer, not a CNN; its side-information embedding (SIE) feeds each image's camera id into "
              "the network, at test time too (processor/processor.py, do_inference), which RRID does not use")),
    LaterMethod(
        "OSNet", "zhou2019omni", 2019, "OSNet x1.0 (2.2 M parameters)", (256, 128), 82.6, 94.2, None, True,
        source=("torchreid's model zoo (KaiyangZhou/deep-person-reid, docs/MODEL_ZOO.md), 'Same-domain ReID', row "
                "osnet_x1_0: '94.2 (82.6)' (rank-1 (mAP)), 2.2 M parameters (resnet50: 23.5 M in the same table); a "
                "model-zoo run, not the OSNet paper's table; re-ranking is off by torchreid's default "
                "(scripts/default_config.py, test.rerank = False)"),
        note="trained with the softmax loss alone and random flips only; about a tenth of ResNet-50's parameters"),
]
"""Market-1501 results of five methods that Table 1 does not include, each from its authors' paper
or repository (``source``); ``rerun`` marks the two that are later runs, not the papers' own numbers.
This is not a leaderboard: it holds only numbers traced to where they were published, and the
runs differ in backbone, input size and training recipe (``note``). Chapter 10 draws them."""


# ----------------------------------------------------------------------------- display

_CUHK03 = "CUHK\u00ad03"  # with a soft hyphen: a narrow column may break the name there

COLUMNS = {
    1: [("method", "method"), ("feature_dim", "F-dim"), ("market_map", "Market mAP"),
        ("market_rank1", "Market R-1"), ("cuhk03_labeled_map", f"{_CUHK03} L mAP"),
        ("cuhk03_labeled_rank1", f"{_CUHK03} L R-1"), ("cuhk03_detected_map", f"{_CUHK03} D mAP"),
        ("cuhk03_detected_rank1", f"{_CUHK03} D R-1")],
    2: [("row", "row"), ("name", "name"), ("global_pool", "GF pooling"), ("local_pool", "LF pooling"),
        ("relation", "RM"), ("scales", "scales"), ("feature_dim", "F-dim"), ("market_map", "Market mAP"),
        ("market_rank1", "Market R-1"), ("cuhk03_labeled_map", "CUHK03-L mAP"),
        ("cuhk03_labeled_rank1", "CUHK03-L R-1"), ("cuhk03_detected_map", "CUHK03-D mAP"),
        ("cuhk03_detected_rank1", "CUHK03-D R-1"), ("duke_map", "Duke mAP"), ("duke_rank1", "Duke R-1")],
    3: [("region", "region"), ("map_without", "mAP w/o RM"), ("rank1_without", "R-1 w/o RM"),
        ("map_with", "mAP RM"), ("rank1_with", "R-1 RM")],
    4: [("pooling", "pooling"), ("map", "mAP"), ("rank1", "rank-1")],
}
"""Per table: (field, header) in display order (the Duke columns of Table 1 left out). Table 1's
CUHK03 headers may break inside the name (a soft hyphen), so that its eight columns fit a page."""

_TABLES = {1: TABLE1, 2: TABLE2, 3: TABLE3, 4: TABLE4}


def table_rows(table: int) -> list[dict]:
    """Table 1, 2, 3 or 4 as a list of plain dicts (one per row, every field, None for "-")."""
    if table not in _TABLES:
        raise ValueError(f"table={table!r}: expected 1, 2, 3 or 4 (the paper's Tables 1-4)")
    return [dataclasses.asdict(row) for row in _TABLES[table]]


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "✓" if value else ""
    if isinstance(value, float):
        return f"{value:.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, tuple):
        return "+".join(f"P{n}" for n in value)
    return str(value)


def format_table(table: int | Sequence[Mapping], columns: Sequence | None = None, fmt: str = "markdown",
                 bold_best: bool = True) -> str:
    """A table as Markdown (``fmt="markdown"``) or HTML (``"html"``) text for a notebook.

    ``table`` is 1-4 (the paper's table, with the headers of :data:`COLUMNS`) or a list of
    dicts (e.g. ``table_rows(2)`` filtered, or your own results). ``columns`` picks fields:
    names, or (field, header) pairs. ``bold_best`` marks the largest number of each accuracy
    column (fields ending in ``map``/``rank1``) in bold. Numbers are printed as the paper
    prints them (one decimal, thousands separators, "-" for a missing entry).
    """
    if fmt not in ("markdown", "html"):
        raise ValueError(f"fmt={fmt!r}: expected 'markdown' or 'html'")
    if isinstance(table, int):
        rows = table_rows(table)
        columns = columns or COLUMNS[table]
    else:
        rows = [dict(r) for r in table]
        if not rows:
            raise ValueError("format_table: expected at least one row")
        columns = columns or list(rows[0])
    columns = [(c, c) if isinstance(c, str) else tuple(c) for c in columns]
    for field, _ in columns:
        if field not in rows[0]:
            raise ValueError(f"format_table: no column {field!r}; expected one of {list(rows[0])}")
    best = {}
    if bold_best:
        for field, _ in columns:
            if field.lower().endswith(("map", "rank1")):
                values = [r[field] for r in rows if isinstance(r[field], (int, float))]
                if values:
                    best[field] = max(values)
    body = [[(_cell(r[f]), f in best and r[f] == best[f]) for f, _ in columns] for r in rows]
    headers = [h for _, h in columns]
    if fmt == "markdown":
        esc = lambda s: s.replace("|", "\\|")  # noqa: E731
        lines = ["| " + " | ".join(esc(h) for h in headers) + " |",
                 "|" + "|".join("---" for _ in headers) + "|"]
        lines += ["| " + " | ".join(f"**{esc(t)}**" if b else esc(t) for t, b in row) + " |" for row in body]
        return "\n".join(lines)
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    trs = "".join("<tr>" + "".join(f"<td><b>{html.escape(t)}</b></td>" if b else f"<td>{html.escape(t)}</td>"
                                   for t, b in row) + "</tr>" for row in body)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{trs}</tbody></table>"


def show_claims(claims: Sequence[Claim]):
    """Claims (:func:`table1_claims`) as an IPython ``Markdown`` list: each statement, the paper's words
    in quotes, and its caveat in italics."""
    from IPython.display import Markdown   # IPython: there in every notebook, optional for the package

    return Markdown(format_claims(claims))


def format_claims(claims: Sequence[Claim]) -> str:
    """Claims as a Markdown list (see :func:`show_claims`)."""
    items = []
    for c in claims:
        text = f"- {c.text}" + (f" The paper: \"{c.quote}\"" if c.quote else "")
        items.append(text + (f" *{c.caveat}*" if c.caveat else ""))
    return "\n".join(items)


def show_table(table: int | Sequence[Mapping], columns: Sequence | None = None, caption: str | None = None,
               bold_best: bool = True):
    """The table as an IPython ``Markdown`` object (the last line of a notebook cell shows it).

    ``caption`` is printed under the table in italics; for Table 1 the note on the missing
    Duke columns is added to it. ``bold_best`` as in :func:`format_table`.
    """
    from IPython.display import Markdown   # IPython: there in every notebook, optional for the package

    text = format_table(table, columns, bold_best=bold_best)
    notes = [caption] if caption else []
    if table == 1:
        notes.append(DUKE_NOTE)
        notes += [f"{r.method}: {r.note}" for r in TABLE1 if r.note]
    if notes:
        text += "\n\n" + "\n".join(f"*{n}*  " for n in notes)
    return Markdown(text)
