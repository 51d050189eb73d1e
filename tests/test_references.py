"""The book's apparatus holds together: bibliography, citations, glossary terms, notation.

* ``book/references.bib`` parses, has no duplicate key, and every entry has the fields its
  type needs;
* every ``{cite}``, ``{cite:p}``, ``{cite:t}`` key used anywhere in ``book/`` is in it;
* every ``{term}`` used anywhere in ``book/`` is defined in ``book/glossary.md``;
* every configuration key the notation and glossary pages name exists.
"""

import dataclasses
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "book"
BIB = BOOK / "references.bib"

REQUIRED = {  # BibTeX's required fields per entry type (those the bibliography uses)
    "article": {"author", "title", "journal", "year"},
    "inproceedings": {"author", "title", "booktitle", "year"},
    "book": {"author", "title", "publisher", "year"},
    "misc": {"author", "title", "year"},
}
CITE = re.compile(r"\{cite(?::[a-z]+)?\}`([^`]*)`")
TERM = re.compile(r"\{term\}`([^`]*)`")


def book_texts():
    """(name, markdown text) of every page: .md files and the markdown cells of notebooks."""
    for path in sorted(BOOK.glob("*.md")):
        yield path.name, path.read_text(encoding="utf-8")
    for path in sorted(BOOK.glob("*.ipynb")):
        cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
        for i, cell in enumerate(cells):
            if cell["cell_type"] == "markdown":
                yield f"{path.name} cell {i}", "".join(cell["source"])


def cited_keys(text):
    return [key.strip() for group in CITE.findall(text) for key in group.split(",") if key.strip()]


def used_terms(text):
    """The glossary entry each {term} role points at: `mAP` or `text <mAP>`."""
    found = []
    for role in TERM.findall(text):
        target = re.search(r"<([^<>]+)>\s*$", role)
        found.append((target.group(1) if target else role).strip())
    return found


def glossary_terms(text):
    """Terms of the ```{glossary} block: its unindented, non-empty lines."""
    block = re.search(r"^```\{glossary\}\n(.*?)^```", text, re.S | re.M)
    assert block, "book/glossary.md has no ```{glossary} block"
    return [line.strip() for line in block.group(1).splitlines() if line.strip() and not line[0].isspace()]


@pytest.fixture(scope="module")
def bibliography():
    from pybtex.database import parse_file

    return parse_file(str(BIB), bib_format="bibtex")


def test_bibliography_parses_with_the_required_fields(bibliography):
    assert len(bibliography.entries) >= 30
    for key, entry in bibliography.entries.items():
        fields = {name.lower() for name in entry.fields} | ({"author"} if entry.persons.get("author") else set())
        assert entry.type in REQUIRED, f"{key}: entry type @{entry.type} is not one the book uses"
        missing = REQUIRED[entry.type] - fields
        assert not missing, f"{key}: @{entry.type} lacks {sorted(missing)}"
        year = entry.fields["year"]
        assert re.fullmatch(r"(19|20)\d\d", year), f"{key}: year {year!r}"
        assert key.startswith(entry.persons["author"][0].last_names[0].lower().replace("-", "")[:4]), (
            f"{key}: keys start with the first author's surname")
        if "pages" in entry.fields:
            assert re.fullmatch(r"\d+--\d+", entry.fields["pages"]), f"{key}: pages as first--last"


def test_bibliography_has_no_duplicate_keys():
    # BibTeX keys are case-insensitive; pybtex's parser may keep the first of two silently
    keys = [k.lower() for k in re.findall(r"^@\w+\{([^,\s]+),", BIB.read_text(encoding="utf-8"), re.M)]
    duplicates = sorted({k for k in keys if keys.count(k) > 1})
    assert not duplicates, f"duplicate keys in {BIB.name}: {duplicates}"
    assert len(keys) == len(re.findall(r"^@", BIB.read_text(encoding="utf-8"), re.M)), "every entry has a key"


def test_the_papers_the_book_relies_on_are_there(bibliography):
    for key in ("park2020relation", "sun2017svdnet", "hermans2017defense", "li2018harmonious", "bai2017deepperson",
                "luo2019alignedreid", "sun2018beyond", "fu2019horizontal", "wang2018learning", "zheng2015scalable",
                "ristani2016performance", "li2014deepreid", "zhong2017reranking", "zhong2020random", "he2016deep",
                "deng2009imagenet", "ioffe2015batch", "santoro2017simple", "ye2021deep", "zhou2019omni",
                "zhou2019torchreid", "he2020fastreid", "chen2019abd", "luo2019bag", "he2021transreid"):
        assert key in bibliography.entries, f"{key} is missing from {BIB.name}"
    park = bibliography.entries["park2020relation"]
    assert [p.last_names[0] for p in park.persons["author"]] == ["Park", "Ham"]
    assert park.fields["year"] == "2020" and "AAAI" in park.fields["booktitle"]


def test_every_cited_key_is_in_the_bibliography(bibliography):
    known = {k.lower() for k in bibliography.entries}
    missing = [(where, key) for where, text in book_texts() for key in cited_keys(text) if key.lower() not in known]
    assert not missing, f"cited but not in {BIB.name}: {missing}"


def test_every_term_is_in_the_glossary():
    defined = {t.lower() for t in glossary_terms((BOOK / "glossary.md").read_text(encoding="utf-8"))}
    missing = [(where, term) for where, text in book_texts() for term in used_terms(text) if term.lower() not in defined]
    assert not missing, f"{{term}} roles without a glossary entry: {missing}"


def test_the_role_parsers_read_what_myst_writes():
    text = "see {cite:p}`a2020x, b2019y` and {cite:t}`c2018z`, {cite}`d1`; {term}`mAP`, {term}`PK batches <PK batch>`"
    assert cited_keys(text) == ["a2020x", "b2019y", "c2018z", "d1"]
    assert used_terms(text) == ["mAP", "PK batch"]
    glossary = "# G\n\n```{glossary}\nCMC\nrank-k accuracy\n  The fraction.\n\nmAP\n  Mean AP.\n```\n"
    assert glossary_terms(glossary) == ["CMC", "rank-k accuracy", "mAP"]


def test_config_keys_named_on_the_reference_pages_exist():
    from rrid.config import ExperimentConfig

    config = ExperimentConfig()
    text = "".join((BOOK / name).read_text(encoding="utf-8") for name in ("notation.md", "glossary.md"))
    keys = set(re.findall(r"`((?:model|data|optim|loss|train|eval)\.[a-z_]+)", text))
    assert {"data.p", "data.k", "loss.margin", "loss.ce_weight", "model.reduced_dim"} <= keys
    for key in sorted(keys):
        section, name = key.split(".")
        fields = {f.name for f in dataclasses.fields(getattr(config, section))}
        assert name in fields, f"{key} is named on a reference page but is not a config key"
