"""The open-reid layout, in which the RRID authors distribute Market-1501.

The authors' Market-1501 download (Google Drive, linked from their README) is a folder in the
layout of the open-reid project (Xiao et al.)::

    images/        {pid:08d}_{cam:02d}_{index:04d}.jpg  (camera 0-based)
    meta.json      {"identities": [for every pid: [for every camera: [file names]]], ...}
    splits.json    [{"trainval": [pids], "query": [pids], "gallery": [pids]}, ...]
    test.json      [{"query": [[file name, pid, camid], ...], "gallery": [...]}]
    poses/         (not used here)

The training split is every image of the ``trainval`` identities of split ``split_id`` (their
code holds the last 100 of them, in sorted order, out for validation: ``data.val_ids: 100``);
query and gallery are the exact lists of ``test.json``, as their evaluation reads them.
As in ``Market1501``, pid -1 (junk) is dropped and pid 0 (distractors) is kept in the gallery
only; a missing file, a bad name, an empty split or a query without a match is an error that
names it (``skip_bad=True`` makes the last kinds warnings). The JSON files are read only up to
``MAX_JSON_BYTES`` (the authors' meta.json is about 1 MB), and an entry is shown shortened.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from ..errors import listing, one_line, short_repr
from ..files import file_problem, read_at_most
from .datasets import DatasetError, ImageRecord, ReIDDataset, _complain_about
from .download import prepare

OPENREID_FILES = ("images/", "meta.json", "splits.json", "test.json")
MAX_JSON_BYTES = 64 << 20
_NAME = re.compile(r"^\d{8}_\d{2}_\d{4}\.(?:jpe?g|png)$", re.IGNORECASE)


class OpenReID(ReIDDataset):
    """A data set in open-reid layout, e.g. the RRID authors' Market-1501 (751 train ids).

    ``root`` is the folder holding ``images/``, ``meta.json``, ``splits.json`` and ``test.json``,
    or a folder with exactly one such folder inside (as their zip unpacks).
    """

    name = "open-reid"

    def __init__(self, root, split_id: int = 0, verify_images=False, skip_bad=False):
        root = self.locate(Path(root))
        images = root / "images"
        meta, splits, test = (_read_json(root / f) for f in ("meta.json", "splits.json", "test.json"))
        identities = meta.get("identities") if isinstance(meta, dict) else None
        if not isinstance(identities, list):
            raise DatasetError(f"{root / 'meta.json'}: expected an object with 'identities' (per pid, per camera, file names)")
        if not isinstance(splits, list) or not 0 <= split_id < len(splits) or not isinstance(splits[split_id], dict):
            raise DatasetError(f"{root / 'splits.json'}: expected a list of splits with index split_id={split_id}")
        trainval = splits[split_id].get("trainval")
        if not isinstance(trainval, list) or not all(isinstance(p, int) and 0 <= p < len(identities) for p in trainval):
            raise DatasetError(f"{root / 'splits.json'}: split {split_id} needs 'trainval', a list of pids indexing "
                               f"meta.json's {len(identities)} identities")
        if not isinstance(test, list) or not test or not isinstance(test[0], dict):
            raise DatasetError(f"{root / 'test.json'}: expected [{{'query': [...], 'gallery': [...]}}]")

        bad, missing, special = [], [], []

        def record(entry, where):
            """ImageRecord of [file name, pid, camid], or None (noted in bad / missing / special)."""
            fname, pid, camid = entry if isinstance(entry, (list, tuple)) and len(entry) == 3 else (None, None, None)
            if not (isinstance(fname, str) and _NAME.match(fname) and isinstance(pid, int)
                    and isinstance(camid, int) and camid >= 0):
                bad.append(f"{where} {short_repr(entry, 80)}")
                return None
            problem = file_problem(images / fname)
            if problem is not None:
                (missing if problem == "missing" else special).append(
                    fname if problem == "missing" else f"{fname} ({problem})")
                return None
            return ImageRecord(str(images / fname), pid, camid)

        def images_of(pid):
            """meta.json's identities[pid]: per camera (0-based) a list of file names."""
            cams = identities[pid]
            if not (isinstance(cams, list) and all(isinstance(names, list) for names in cams)):
                bad.append(f"meta.json identities[{pid}]")
                return []
            return [(fname, pid, camid) for camid, names in enumerate(cams) for fname in names]

        train = [record(entry, "meta.json") for pid in trainval for entry in images_of(pid)]
        split = {}
        for part in ("query", "gallery"):
            entries = test[0].get(part)
            if not isinstance(entries, list):
                raise DatasetError(f"{root / 'test.json'}: expected a list under {part!r}")
            split[part] = [record(entry, f"test.json {part}") for entry in entries]
        _complain_about([(f"entries of {root} that are not [{{pid:08d}}_{{cam:02d}}_{{index:04d}}.jpg, pid, camid]", bad),
                         (f"image files not found in {images}", missing),
                         (f"entries of {images} named in the JSON files that are not regular files", special,
                          "remove them or put the images there")], skip_bad)
        train = [r for r in train if r is not None]
        query = [r for r in split["query"] if r is not None and r.pid > 0]      # junk and distractors: gallery only
        gallery = [r for r in split["gallery"] if r is not None and r.pid != -1]
        overlap = {r.pid for r in train} & {r.pid for r in query + gallery}
        if overlap:
            raise DatasetError(f"{root}: identities in both trainval and test.json ({listing(sorted(overlap))})")
        self.split_id = split_id
        super().__init__(root, train, query, gallery, verify_images=verify_images, skip_bad=skip_bad)

    @classmethod
    def locate(cls, root: Path) -> Path:
        """``root`` itself, or the single open-reid folder inside it (as the archive unpacks)."""
        def complete(d: Path) -> bool:
            return (d / "images").is_dir() and all((d / f).is_file() for f in OPENREID_FILES[1:])

        if complete(root):
            return root
        if root.is_dir():
            inner = [d for d in root.iterdir() if d.is_dir() and complete(d)]
            if len(inner) == 1:
                return inner[0]
        tree = "\n".join(f"    {root}/{f}" for f in OPENREID_FILES)
        raise DatasetError(
            f"{cls.name} data set not found at {root}. Expected the folder tree\n{tree}\n"
            f"(or {root}/<one folder>/ holding them, as the archive unpacks). The RRID authors' Market-1501 "
            "download has this layout: python -m rrid prepare openreid --source <their zip> --root <folder>.")


def _read_json(path: Path):
    """The JSON in ``path``; a one-line DatasetError if it is not a regular file, is larger than
    ``MAX_JSON_BYTES``, is not UTF-8 JSON, or nests too deep for Python's parser."""
    problem = file_problem(path)
    if problem is not None:
        raise DatasetError(f"cannot read {path}: it is {problem}, expected a JSON file")
    data = read_at_most(path, MAX_JSON_BYTES, DatasetError, "an open-reid JSON file (the authors' meta.json is "
                                                             "about 1 MB)")
    try:
        return json.loads(data)
    except ValueError as e:                       # JSONDecodeError, UnicodeDecodeError
        raise DatasetError(f"cannot read {path}: {one_line(str(e), 200)}") from None
    except RecursionError:
        raise DatasetError(f"cannot read {path}: its JSON nests too deep (open-reid files nest 3 deep)") from None


def prepare_openreid(source, root, md5: str | None = None, **kw) -> Path:
    """Make ``root`` hold an open-reid data set from ``source`` (a URL or a local zip/tar).

    The same steps as ``prepare market1501`` (``rrid.data.download.prepare``): the archive is
    checked against ``md5`` when given (no checksum is published for the authors' zip),
    unpacked beside ``root``, its tree checked there, then renamed to ``root``. Nothing
    happens if ``root`` already holds the data set.
    """
    return prepare(source, root, OpenReID.locate, "market1501-openreid.zip", what="the open-reid Market-1501",
                   md5=md5, **kw)
