"""rrid.paper: the paper's tables agree with each other and with the sentences that quote them."""

import dataclasses
import types
import typing

import pytest

from rrid import paper
from rrid.config import ExperimentConfig
from rrid.model import RRIDConfig

# Every printed accuracy is rounded to 0.1, i.e. off by at most 0.05 from the unrounded value.
HALF_ULP = 0.05


def by_method(name):
    (row,) = [r for r in paper.TABLE1 if r.method == name]
    return row


def test_model_still_exports_table2_and_its_rows_build():
    from rrid import model

    assert model.TABLE2 is paper.TABLE2 and model.Table2Row is paper.Table2Row
    for t in paper.TABLE2:
        cfg = RRIDConfig.table2(t.row)
        assert (cfg.scales, cfg.global_pool, cfg.local_pool, cfg.relation) == (t.scales, t.global_pool, t.local_pool, t.relation)
        assert cfg.feature_dim == t.feature_dim
    assert RRIDConfig.table2(8) == RRIDConfig.preset("ours-s")
    with pytest.raises(ValueError, match="1..13"):
        RRIDConfig.table2(14)


def test_field_types():
    for table, cls in ((paper.TABLE1, paper.Table1Row), (paper.TABLE2, paper.Table2Row),
                       (paper.TABLE3, paper.Table3Row), (paper.TABLE4, paper.Table4Row)):
        hints = typing.get_type_hints(cls)
        for row in table:
            assert type(row) is cls
            for f in dataclasses.fields(cls):
                value, hint = getattr(row, f.name), hints[f.name]
                union = typing.get_origin(hint) in (typing.Union, types.UnionType)
                allowed = tuple(typing.get_origin(a) or a for a in (typing.get_args(hint) if union else (hint,)))
                assert isinstance(value, allowed) and not (isinstance(value, bool) and bool not in allowed), (row, f.name)
                if isinstance(value, float):
                    assert 0 < value < 100 and round(value, 1) == value, (row, f.name)  # percent, one decimal


def test_table1_ours_equal_table2_rows_8_and_13_in_every_shared_column():
    shared = [f.name for f in dataclasses.fields(paper.Table1Row)
              if f.name in {g.name for g in dataclasses.fields(paper.Table2Row)}]
    assert set(shared) >= {"feature_dim", "market_map", "market_rank1", "cuhk03_labeled_map",
                           "cuhk03_labeled_rank1", "cuhk03_detected_map", "cuhk03_detected_rank1"}
    for name, row in (("Ours-S", 8), ("Ours-F", 13)):
        t1, t2 = by_method(name), paper.TABLE2[row - 1]
        assert t2.name == name
        compared = [f for f in shared if getattr(t1, f) is not None]
        assert len(compared) == 7  # everything except the Duke columns, missing in the text
        assert [getattr(t1, f) for f in compared] == [getattr(t2, f) for f in compared]


def test_table1_shape_and_missing_duke():
    assert len(paper.TABLE1) == 11 and [r.method for r in paper.TABLE1 if r.ours] == ["Ours-S", "Ours-F"]
    assert all(r.duke_map is None and r.duke_rank1 is None for r in paper.TABLE1)
    assert [r.method for r in paper.TABLE1 if r.note] == ["Deep-Person"]
    assert "not in the paper text" in paper.DUKE_NOTE
    assert set(r.cite for r in paper.TABLE1) == set(paper.CITATIONS)
    # "-" entries: Triplet reports Market-1501 only
    assert [getattr(by_method("Triplet"), f) for f in ("cuhk03_labeled_map", "cuhk03_detected_rank1")] == [None, None]
    # the text: "Ours-S uses 1,792-dimensional features"; GCP's 93.4 "comparable with 93.1% for PCB+RPP
    # using 1,536-dimensional features"; Ours-F's Market-1501 rank-1 is below MGN's
    assert by_method("Ours-S").feature_dim == 1792
    assert (by_method("PCB+RPP").market_rank1, by_method("PCB+RPP").feature_dim) == (93.1, 1536)
    assert by_method("Ours-F").market_rank1 < by_method("MGN").market_rank1
    # "Ours-F gives the best results again on all datasets in terms of mAP"
    for f in ("market_map", "cuhk03_labeled_map", "cuhk03_detected_map"):
        assert max((getattr(r, f) for r in paper.TABLE1 if getattr(r, f) is not None)) == getattr(by_method("Ours-F"), f)


def test_text_quotes_of_table2():
    t = {r.row: r for r in paper.TABLE2}
    # "We achieve mAP of 88.9% and rank-1 accuracy of 95.2% for the Market1501, mAP of 69.6%/75.6%
    # and rank-1 accuracy of 74.4%/77.9% with detected/labeled images for the CUHK03, and mAP of
    # 78.6% and rank-1 accuracy of 89.7% for the DukeMTMC-reID."
    f = t[13]
    assert (f.market_map, f.market_rank1, f.cuhk03_detected_map, f.cuhk03_labeled_map) == (88.9, 95.2, 69.6, 75.6)
    assert (f.cuhk03_detected_rank1, f.cuhk03_labeled_rank1, f.duke_map, f.duke_rank1) == (74.4, 77.9, 78.6, 89.7)
    # the relation module: "performance gains of 3% and 1% for mAP and rank-1" (row 4 -> row 5)
    assert round(t[5].market_map - t[4].market_map, 1) == 3.0 and round(t[5].market_rank1 - t[4].market_rank1, 1) == 1.0
    # "compared with GMP+GAP, our GCP improves mAP from 86.6% to 88.0%" (row 7 -> row 8)
    assert (t[7].market_map, t[8].market_map) == (86.6, 88.0)
    # F-dim: c per q_i and q_0 (c = 256)
    for r in paper.TABLE2:
        assert r.feature_dim == 256 * ((sum(r.scales) if r.local_pool else 0) + (len(r.scales) if r.global_pool else 0))


def test_table3_mean_gains_equal_the_texts_averages_within_rounding():
    n = len(paper.TABLE3)
    gain_map = sum(r.map_with - r.map_without for r in paper.TABLE3) / n
    gain_r1 = sum(r.rank1_with - r.rank1_without for r in paper.TABLE3) / n
    # each difference is off by <= 2 * 0.05 from the unrounded one, so is their mean; the
    # stated average is itself rounded to 0.1: |computed - stated| <= 0.1 + 0.05
    assert abs(gain_map - paper.TABLE3_MEAN_GAIN["mAP"]) <= 2 * HALF_ULP + HALF_ULP  # 21.62 vs 21.7
    assert abs(gain_r1 - paper.TABLE3_MEAN_GAIN["rank1"]) <= 2 * HALF_ULP + HALF_ULP  # 19.53 vs 19.6
    assert [r.region for r in paper.TABLE3] == list(range(1, 7))
    # "the third and last horizontal regions give the best and the worst results"
    for key in ("map_without", "rank1_without", "map_with", "rank1_with"):
        values = [getattr(r, key) for r in paper.TABLE3]
        assert values.index(max(values)) == 2, key
    assert min(r.map_with for r in paper.TABLE3) == paper.TABLE3[5].map_with
    assert all(r.map_with > r.map_without and r.rank1_with > r.rank1_without for r in paper.TABLE3)


def test_table4_and_rest_only():
    t4 = {r.pooling: r for r in paper.TABLE4}
    assert (t4["GCP"].map, t4["GCP"].rank1) == (84.6, 93.4)
    assert [r.pooling for r in sorted(paper.TABLE4, key=lambda r: r.map)] == ["GAP", "GMP", "GAP+GMP", "GCP"]
    for r in paper.TABLE4:  # the model of each pooling is the Table 2 row with that global pooling, RM, GMP
        t2 = paper.TABLE2[r.table2_row - 1]
        assert (t2.global_pool, t2.local_pool, t2.relation, t2.scales) == (r.global_pool, "gmp", True, (6,))
        RRIDConfig(global_pool=r.global_pool)  # a valid RRIDConfig value
    # "The mAP/rank-1 for r̄_i on Market1501 are 84.5/93.4 which are lower than 86.7/94.2 ... in Table 2"
    assert (paper.REST_ONLY.market_map, paper.REST_ONLY.market_rank1) == (84.5, 93.4)
    assert (paper.TABLE2[4].market_map, paper.TABLE2[4].market_rank1) == (86.7, 94.2)


def test_training_recipe_is_the_configs_default():
    tr, cfg = paper.TRAINING, ExperimentConfig()
    assert tr.batch_size == tr.identities_per_batch * tr.images_per_identity == cfg.data.p * cfg.data.k == 64
    assert (tr.height, tr.width, tr.epochs) == (cfg.data.height, cfg.data.width, cfg.train.epochs)
    assert (tr.backbone_lr, tr.head_lr, tr.momentum, tr.weight_decay) == (
        cfg.optim.backbone_lr, cfg.optim.head_lr, cfg.optim.momentum, cfg.optim.weight_decay)
    assert (tr.lr_milestones, tr.lr_gamma, tr.ce_weight) == (cfg.optim.milestones, cfg.optim.gamma, cfg.loss.ce_weight)
    assert tr.reduced_dim == cfg.model.reduced_dim and dict(tr.hours) == {"market1501": 6, "cuhk03": 3, "dukemtmc": 8}
    # 1,792 and 3,840: q^P6 and T(q^P2, q^P4, q^P6) with c = 256
    assert 7 * tr.reduced_dim == 1792 and 15 * tr.reduced_dim == 3840
    m = paper.DATASETS["market1501"]
    assert (m.train_images, m.train_ids, m.query_images, m.gallery_images) == (12936, 751, 3368, 19732)
    assert m.train_images_of(651) == 11213 and m.train_images_of(751) == 12936   # 12,936 x 651 / 751 = 11,213.497


def test_table_rows_and_formatting():
    rows = paper.table_rows(1)
    assert len(rows) == 11 and rows[0]["method"] == "SVDNet" and rows[1]["cuhk03_labeled_map"] is None
    assert paper.table_rows(3)[0] == {"region": 1, "map_without": 29.6, "rank1_without": 49.4,
                                      "map_with": 58.7, "rank1_with": 82.2}
    md = paper.format_table(4).splitlines()
    assert md[0] == "| pooling | mAP | rank-1 |" and md[1] == "|---|---|---|"
    assert md[2] == "| GAP | 81.0 | 91.3 |" and md[5] == "| GCP | **84.6** | **93.4** |"
    t1 = paper.format_table(1).splitlines()
    assert t1[2] == "| SVDNet | 2,048 | 62.1 | 82.3 | 37.8 | 40.9 | 37.3 | 41.5 |"
    assert t1[3] == "| Triplet | 128 | 69.1 | 84.9 | - | - | - | - |"
    assert "**95.7**" in t1[10] and "**88.9**" in t1[12]  # MGN's rank-1, Ours-F's mAP
    t2 = paper.format_table(2, columns=["row", "scales", "relation", "market_map"], bold_best=False).splitlines()
    assert t2[2] == "| 1 | P6 |  | 74.5 |" and t2[-1] == "| 13 | P2+P4+P6 | ✓ | 88.9 |"
    h = paper.format_table([{"a": "<x>", "mAP": 1.25}], fmt="html")
    assert h == "<table><thead><tr><th>a</th><th>mAP</th></tr></thead><tbody><tr><td>&lt;x&gt;</td><td><b>1.2</b></td></tr></tbody></table>"
    with pytest.raises(ValueError, match="expected 1, 2, 3 or 4"):
        paper.table_rows(5)
    with pytest.raises(ValueError, match="no column 'nope'"):
        paper.format_table(3, columns=["nope"])
    shown = paper.show_table(1, caption="Table 1")
    assert shown.data.startswith("| method |") and "*Table 1*" in shown.data and "DukeMTMC-reID" in shown.data


# ----------------------------------------------------------------------------- later methods (not the paper's)


def test_later_methods_types_sources_and_citations():
    import re
    from pathlib import Path

    bib = (Path(__file__).resolve().parents[1] / "book" / "references.bib").read_text(encoding="utf-8")
    keys = {k.lower() for k in re.findall(r"^@\w+\{([^,\s]+),", bib, re.M)}
    hints = typing.get_type_hints(paper.LaterMethod)
    methods = [r.method for r in paper.LATER_METHODS]
    assert len(set(methods)) == len(methods) >= 5
    assert not set(methods) & {r.method for r in paper.TABLE1}, "Table 1's methods live in TABLE1"
    for r in paper.LATER_METHODS:
        assert type(r) is paper.LaterMethod
        for f in dataclasses.fields(r):
            value, hint = getattr(r, f.name), hints[f.name]
            union = typing.get_origin(hint) in (typing.Union, types.UnionType)
            allowed = tuple(typing.get_origin(a) or a for a in (typing.get_args(hint) if union else (hint,)))
            assert isinstance(value, allowed) and not (isinstance(value, bool) and bool not in allowed), (r.method, f.name)
            if isinstance(value, float):
                assert 0 < value < 100 and round(value, 1) == value, (r.method, f.name)  # percent, one decimal
        assert r.cite.lower() in keys, f"{r.method}: {r.cite} is not in book/references.bib"
        assert len(r.input_size) == 2 and all(type(v) is int and v > 0 for v in r.input_size)
        assert 2019 <= r.year <= 2030 and r.source.strip() and r.backbone.strip()
        if r.market_minp is not None:
            # INP = M / rho_M <= j / rho_j for every j (rho_j <= rho_M - (M - j)), so mINP <= mAP
            assert r.market_minp <= r.market_map, r.method
    assert {r.rerun for r in paper.LATER_METHODS} == {True, False}  # both kinds, each marked


# ----------------------------------------------------------------------------- Table 1 read with Table 2


def test_deep_person_shows_no_cuhk03_number():
    """The transcription's '- - - 64.8' would be the only rank-1 of Table 1 without its mAP: every
    other row has both numbers of a data set or neither, so the cell is shown as '-' with a note."""
    for r in paper.TABLE1:
        for group in paper.TABLE1_GROUPS:
            pair = (getattr(r, f"{group}_map"), getattr(r, f"{group}_rank1"))
            assert (pair[0] is None) == (pair[1] is None), (r.method, group)
    deep = by_method("Deep-Person")
    assert (deep.market_map, deep.market_rank1) == (79.5, 92.3)
    cuhk03 = [f"{g}_{m}" for g in ("cuhk03_labeled", "cuhk03_detected") for m in ("map", "rank1")]
    assert all(getattr(deep, f) is None for f in cuhk03)
    assert "64.8" in deep.note and "Duke" in deep.note
    assert paper.format_table(1).splitlines()[5] == "| Deep-Person | 2,048 | 79.5 | 92.3 | - | - | - | - |"


def test_table1_claims_match_an_independent_reading_of_the_table():
    claims = paper.table1_claims()
    text = paper.format_claims(claims)
    earlier = [r for r in paper.TABLE1 if not r.ours]
    f, s, mgn = by_method("Ours-F"), by_method("Ours-S"), by_method("MGN")
    # mAP: Ours-F first and Ours-S second in every column, MGN the best earlier method
    for group in ("market", "cuhk03_labeled", "cuhk03_detected"):
        values = sorted((getattr(r, f"{group}_map"), r.method) for r in paper.TABLE1 if getattr(r, f"{group}_map"))
        assert [m for _, m in values[-3:]] == ["MGN", "Ours-S", "Ours-F"], group
        assert f"Ours-F {getattr(f, group + '_map')}, Ours-S {getattr(s, group + '_map')}, the best earlier method " \
               f"MGN {getattr(mgn, group + '_map')}" in claims[0].text
    # Market-1501 rank-1: MGN leads, 0.5 and 0.9 above Ours-F and Ours-S
    assert max(r.market_rank1 for r in paper.TABLE1) == mgn.market_rank1 == 95.7
    assert "MGN 95.7 leads; Ours-F has 95.2 (0.5 lower), Ours-S has 94.8 (0.9 lower)" in claims[1].text
    # CUHK03 rank-1 wins carry the single-gallery-shot caveat, and so does Ours-S's claim
    assert "Ours-F 77.9, the best earlier method MGN 68.0" in claims[2].text and "Ours-F 74.4" in claims[2].text
    assert claims[2].caveat == paper.CUHK03_RANK1_CAVEAT and "single-gallery-shot" in claims[2].caveat
    assert "caveat above" in claims[3].caveat
    # Ours-S is ahead of every earlier method in 5 of 6 columns: all but MGN's Market-1501 rank-1
    fields = [f"{g}_{m}" for g in paper.TABLE1_GROUPS for m in ("map", "rank1")]
    ahead = [c for c in fields if all(getattr(r, c) is None or getattr(r, c) < getattr(s, c) for r in earlier)]
    assert [c for c in fields if c not in ahead] == ["market_rank1"] and len(ahead) == 5
    assert "in 5 of the 6 columns; the exception: Market-1501 rank-1, where MGN (2,048 numbers) has 95.7 " \
           "against 94.8." in claims[3].text and "except MGN" in claims[3].quote
    # Duke: from Table 2, and the claim says it cannot be checked
    assert "mAP 77.1, rank-1 89.3" in claims[4].text and "mAP 78.6, rank-1 89.7" in claims[4].text
    assert "cannot be checked" in claims[4].caveat
    assert text.count("\n- ") == len(claims) - 1 and text.startswith("- mAP: ")


def test_prior_art_rows_are_built_as_the_map_says():
    rows = {r.row: r for r in paper.TABLE2}
    art = {p.method: p for p in paper.PRIOR_ART}
    assert set(art) == {"PCB", "HPM", "MGN"} and set(art) <= {r.method for r in paper.TABLE1}
    # PCB's 1,536-d: six GAP stripes of c = 256, no global feature
    pcb = rows[art["PCB"].rows[0]]
    assert (pcb.local_pool, pcb.global_pool, pcb.scales) == ("gap", None, (6,))
    assert pcb.feature_dim == by_method("PCB").feature_dim == 6 * 256
    # HPM's 3,840-d: 15 features of 256 over several numbers of stripes, global GAP+GMP ("or both")
    hpm = rows[art["HPM"].rows[0]]
    assert hpm.global_pool == "gap+gmp" and len(hpm.scales) > 1 and not hpm.relation
    assert hpm.feature_dim == by_method("HPM").feature_dim == 15 * 256
    # MGN's GMP: global and stripe features by GMP, without the paper's modules; row 9 multi-scale
    for k in art["MGN"].rows:
        assert (rows[k].global_pool, rows[k].local_pool, rows[k].relation) == ("gmp", "gmp", False)
    assert [len(rows[k].scales) for k in art["MGN"].rows] == [1, 3]
    table = paper.prior_art_rows()
    assert table[0] == {"Table 1 method": "PCB", "F-dim": "1,536", "Market mAP / R-1": "77.3 / 92.4",
                        "Table 2 row": "2", "row F-dim": "1,536", "row Market mAP / R-1": "79.0 / 92.3"}
    assert table[2]["row Market mAP / R-1"] == "83.7 / 93.2; 86.7 / 94.4"
    md = paper.format_prior_art()
    assert md.startswith("| Table 1 method | F-dim |") and md.count("\n- **") == 3
    assert all(p.quote in md and p.where in md for p in paper.PRIOR_ART)
