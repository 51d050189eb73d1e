"""The person reID data sets: Market-1501, DukeMTMC-reID, CUHK03-NP and a user's own list.

Every data set is three lists of ``ImageRecord(path, pid, camid)``:

* ``train``   identities relabelled 0..K-1 in sorted order of the original ids (the labels
  of the K-way classifiers),
* ``query``   and ``gallery``: the test identities with their original ids, so that the
  evaluation can match them.

Camera ids are 0-based everywhere. Market-1501 file names read ``PPPP_cCsS_FFFFFF_BB.jpg``
(person, camera C, sequence S, frame, box); pid -1 marks junk boxes (dropped everywhere)
and pid 0000 marks distractors (kept in the gallery only, where they can only lower the
rank of the true matches). Duke and CUHK03-NP use the same naming without the sequence
(``0001_c2_f0046182.jpg``, ``0001_c1_1.png``), so one parser reads all of them.

Nothing is skipped silently: a missing folder, a file name that does not parse, an empty
split, a query that cannot be matched and an unreadable image are errors that name what
is wrong. ``skip_bad=True`` turns the last three kinds into warnings.

Only regular files (or links to them) are read as images: a named pipe, socket, device,
folder or broken link with an image's name is an error naming it (opening a pipe would wait
forever), and so is an image of more pixels than PIL's ``Image.MAX_IMAGE_PIXELS`` (about 89
million; a small file can declare billions and take gigabytes to decode).
"""

from __future__ import annotations

import csv
import os
import re
import stat
import warnings
from pathlib import Path
from typing import NamedTuple, Sequence

from PIL import Image

from rrid.errors import DatasetError, listing, one_line, short_repr
from rrid.files import file_kind, file_problem

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}
_NAME = re.compile(r"^(-?\d+)_c(\d+)(?:s\d+)?(?:_[^/]*)?\.(?:jpe?g|png)$", re.IGNORECASE)


class ImageRecord(NamedTuple):
    """One image: its path, person id and 0-based camera id."""

    path: str
    pid: int
    camid: int




def parse_name(filename: str) -> tuple[int, int] | None:
    """``"0002_c1s1_000451_03.jpg"`` -> ``(2, 0)``: (pid, 0-based camid), or None."""
    m = _NAME.match(filename)
    if m is None:
        return None
    return int(m.group(1)), int(m.group(2)) - 1


def require_path(value, what: str) -> Path:
    """``Path(value)``; refuse an empty string, which ``Path`` would silently read as the working directory."""
    if value is None or not str(value).strip():
        raise DatasetError(f"{what} is empty; give the data set's folder (or the CSV for an image list)")
    return Path(value)


def _complain(message: str, skip_bad: bool) -> None:
    if not skip_bad:
        raise DatasetError(message)
    warnings.warn(message + " (skipped because skip_bad=True)", stacklevel=3)


def _complain_about(problems: list[tuple], skip_bad: bool) -> None:
    """:func:`_complain` once for each (what is wrong, the entries[, what to do]) that has entries;
    the message lists them (``listing``)."""
    for what, entries, *todo in problems:
        if entries:
            _complain(f"{what} ({listing(entries)})" + "".join(f"; {t}" for t in todo), skip_bad)


def read_image(path: str | os.PathLike) -> Image.Image:
    """The image at ``path``, decoded (``load()`` done) and its file closed.

    A DatasetError naming the file when it is not a regular file (checked on the open file, which
    is opened without waiting, so a named pipe never blocks), cannot be decoded or is truncated, or
    has more pixels than ``Image.MAX_IMAGE_PIXELS`` (PIL's decompression-bomb warning, and error
    above twice that, both refused here).
    """
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except (OSError, ValueError) as e:
        raise DatasetError(f"cannot read image {path}: {one_line(getattr(e, 'strerror', None) or e, 120)}") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise DatasetError(f"image {path} is {file_kind(mode)}, not a regular file; remove it or put the image there")
    with open(fd, "rb") as f:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                im = Image.open(f)
                im.load()
                return im
        except (Image.DecompressionBombWarning, Image.DecompressionBombError) as e:
            raise DatasetError(f"image {path} has too many pixels ({one_line(str(e), 200)}); at most "
                               f"{Image.MAX_IMAGE_PIXELS:,} are read (PIL.Image.MAX_IMAGE_PIXELS)") from None
        except (OSError, SyntaxError, ValueError) as e:  # PIL raises OSError for truncation
            raise DatasetError(f"cannot decode image {path}: {one_line(str(e), 200)}") from e


def check_image(path: str | Path) -> None:
    """Decode ``path`` fully; raise DatasetError naming the file if it is unreadable or truncated."""
    read_image(path)


class ReIDDataset:
    """A reID data set: ``train``, ``query``, ``gallery`` lists of ImageRecord.

    Subclasses only find the files; this class relabels, validates and summarises.
    """

    name = "reid"

    def __init__(self, root, train, query, gallery, *, verify_images=False, skip_bad=False):
        self.root = Path(root)
        self.skip_bad = skip_bad
        self.train = relabel(train)
        self.query = list(query)
        self.gallery = list(gallery)
        for split in ("train", "query", "gallery"):
            if not getattr(self, split):
                raise DatasetError(f"{self.name}: the {split} split of {self.location} is empty")
        if verify_images:
            self._verify_images()
        self.query = self._matchable_queries()

    @property
    def location(self) -> str:
        """Where the data set was read from, as messages name it (the root folder; the CSV for ImageList)."""
        return str(self.root)

    @property
    def num_train_ids(self) -> int:
        return len({r.pid for r in self.train})

    @property
    def num_cameras(self) -> int:
        return 1 + max(r.camid for r in self.train + self.query + self.gallery)

    def _matchable_queries(self) -> list[ImageRecord]:
        """Every query needs a gallery image of its identity from another camera (else AP is undefined)."""
        cams: dict[int, set[int]] = {}
        for r in self.gallery:
            cams.setdefault(r.pid, set()).add(r.camid)
        bad = [r for r in self.query if not (cams.get(r.pid, set()) - {r.camid})]
        if bad:
            _complain(
                f"{self.name}: query images whose identity has no gallery image from another camera "
                f"({listing([Path(r.path).name for r in bad])}) in {self.location}",
                self.skip_bad,
            )
        unmatched = set(bad)
        return [r for r in self.query if r not in unmatched]

    def _verify_images(self) -> None:
        for split in ("train", "query", "gallery"):
            good = []
            for r in getattr(self, split):
                try:
                    check_image(r.path)
                    good.append(r)
                except DatasetError as e:
                    _complain(str(e), self.skip_bad)
            setattr(self, split, relabel(good) if split == "train" else good)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(root={str(self.root)!r})\n{summary(self)}"


def relabel(records: Sequence[ImageRecord]) -> list[ImageRecord]:
    """Map the train pids to 0..K-1 in sorted order of the original pids."""
    label = {pid: i for i, pid in enumerate(sorted({r.pid for r in records}))}
    return [r._replace(pid=label[r.pid]) for r in records]


# ---------------------------------------------------------------------------------------
# Market-style folders (Market-1501, DukeMTMC-reID, CUHK03-NP, the synthetic set)

SPLIT_FOLDERS = {"train": "bounding_box_train", "query": "query", "gallery": "bounding_box_test"}


def read_folder(folder: Path, num_cameras: int, skip_bad: bool = False) -> list[ImageRecord]:
    """All images in one Market-style folder as records with the raw pids (junk -1 included).

    An entry with an image's name that is not a regular file (or a link to one) is an error
    naming it, as is a name that does not parse (``skip_bad``: warnings, and skipped)."""
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError as e:
        raise DatasetError(f"cannot read the folder {folder}: {e.strerror or e}") from None
    records, bad, special = [], [], []
    for entry in entries:
        if os.path.splitext(entry.name)[1].lower() not in IMAGE_SUFFIXES:
            continue  # Thumbs.db, README and the like
        problem = file_problem(entry.path)
        if problem is not None:
            special.append(f"{entry.name} ({problem})")
            continue
        parsed = parse_name(entry.name)
        if parsed is None or not 0 <= parsed[1] < num_cameras:
            bad.append(entry.name)
            continue
        records.append(ImageRecord(str(folder / entry.name), *parsed))
    if special:
        _complain(f"entries of {folder} named like images that are not regular files ({listing(special)}); "
                  "remove them or put the images there", skip_bad)
    if bad:
        _complain(
            f"file names in {folder} that do not read as PPPP_cC..._.jpg with camera 1..{num_cameras} "
            f"({listing(bad)})",
            skip_bad,
        )
    return records


class MarketStyle(ReIDDataset):
    """A root holding ``bounding_box_train``, ``query`` and ``bounding_box_test``."""

    num_camera_ids = 6
    source = ""  # where to get it, shown when the folder is missing
    folder_names: tuple[str, ...] = ()  # accepted names of a single wrapping folder

    def __init__(self, root, verify_images=False, skip_bad=False):
        root = self.locate(require_path(root, f"{self.name} root"))
        splits = {}
        for split, folder in SPLIT_FOLDERS.items():
            records = read_folder(root / folder, self.num_camera_ids, skip_bad)
            records = [r for r in records if r.pid != -1]  # junk: dropped everywhere
            if split != "gallery":
                records = [r for r in records if r.pid != 0]  # distractors: gallery only
            splits[split] = records
        super().__init__(root, **splits, verify_images=verify_images, skip_bad=skip_bad)

    @classmethod
    def locate(cls, root: Path) -> Path:
        """``root`` itself, or the single data set folder inside it (as the archive unpacks).

        Otherwise a DatasetError that shows the expected tree and names what is missing.
        """
        root = Path(root)

        def present(folder: Path) -> list[str]:
            return [f for f in SPLIT_FOLDERS.values() if (folder / f).is_dir()]

        if len(present(root)) == len(SPLIT_FOLDERS):
            return root
        try:
            inner = sorted(d for d in root.iterdir() if d.is_dir()) if root.is_dir() else []
        except OSError as e:
            raise DatasetError(f"{cls.name}: cannot read {root}: {e.strerror}") from None
        complete = [d for d in inner if len(present(d)) == len(SPLIT_FOLDERS)]
        if len(complete) == 1:
            return complete[0]
        tree = "\n".join(f"    {root}/{f}/" for f in SPLIT_FOLDERS.values())
        expected = (f"Expected the folder tree\n{tree}\n(or {root}/<one folder>/ holding them, as the archive "
                    f"unpacks). {cls.source}")
        if complete:
            raise DatasetError(f"{cls.name}: {root} holds several data set folders "
                               f"({listing(d.name for d in complete)}); point the root at one of them")
        partial = max([root, *inner], key=lambda d: len(present(d)))
        if present(partial):
            missing = ", ".join(f"{partial}/{f}/" for f in SPLIT_FOLDERS.values() if f not in present(partial))
            raise DatasetError(f"{cls.name} at {partial} is incomplete: missing {missing}. {expected}")
        found = "does not exist" if not root.exists() else "holds none of the split folders"
        raise DatasetError(f"{cls.name} not found at {root} ({found}). {expected}")


class Market1501(MarketStyle):
    """Market-1501 (Zheng et al., ICCV 2015): 751 train / 750 test identities, 6 cameras.

    12,936 train, 3,368 query and 19,732 gallery images (including 2,793 distractors,
    pid 0000; the 3,819 junk boxes, pid -1, are dropped). The synthetic set of
    ``rrid.data.synthetic`` uses the same layout and this same parser.
    """

    name = "Market-1501"
    source = (
        "Get Market-1501-v15.09.15.zip from the authors' page (Zheng et al., ICCV 2015; the links "
        "have moved over the years) and unpack it with rrid.data.download.prepare_market1501(zip, root)."
    )


class DukeMTMCReID(MarketStyle):
    """DukeMTMC-reID (Zheng et al., ICCV 2017): 702 train / 1,110 test identities, cameras c1..c8.

    Note: the DukeMTMC data set was withdrawn by its authors in 2019; it is supported here
    only for those who already hold a copy. Expected: ``root/DukeMTMC-reID/bounding_box_train`` etc.
    """

    name = "DukeMTMC-reID"
    num_camera_ids = 8
    source = "DukeMTMC was withdrawn by its authors in 2019 and cannot be downloaded any more; supported only for existing copies."


class CUHK03NP(MarketStyle):
    """CUHK03 with the new protocol of Zhong et al. (CVPR 2017): 767 train / 700 test identities.

    ``variant="labeled"`` (7,368 / 1,400 / 5,328 train / query / gallery images) or
    ``"detected"`` (7,365 / 1,400 / 5,332), read from Zhong et al.'s Market-style release
    ``cuhk03-np/<variant>/{bounding_box_train,query,bounding_box_test}``; ``root`` may point
    at the folder holding ``cuhk03-np``, at ``cuhk03-np`` itself, or at the variant folder.
    """

    name = "CUHK03-NP"
    num_camera_ids = 2
    source = "Get Zhong et al.'s cuhk03-np release (the 767/700 protocol, linked from their re-ranking project page)."

    VARIANTS = ("labeled", "detected")

    def __init__(self, root, variant="labeled", verify_images=False, skip_bad=False):
        if variant not in self.VARIANTS:
            raise DatasetError(f"CUHK03NP variant must be 'labeled' or 'detected', got {short_repr(variant)}")
        root = self._variant_root(require_path(root, "CUHK03-NP root"), variant)
        self.variant = variant
        super().__init__(root, verify_images=verify_images, skip_bad=skip_bad)

    @staticmethod
    def _variant_root(root: Path, variant: str) -> Path:
        """The first of ``root/cuhk03-np/variant``, ``root/variant``, ``root`` that holds the three
        split folders (else the first, which the error then names)."""
        for candidate in (root / "cuhk03-np" / variant, root / variant, root):
            if all((candidate / f).is_dir() for f in SPLIT_FOLDERS.values()):
                return candidate
        return root / "cuhk03-np" / variant

    @classmethod
    def locate_variants(cls, root: Path) -> dict[str, Path]:
        """{variant: folder} for both variants under ``root`` (as the release's zip unpacks:
        ``cuhk03-np/{labeled,detected}/``); a DatasetError naming what is missing otherwise."""
        return {variant: cls.locate(cls._variant_root(Path(root), variant)) for variant in cls.VARIANTS}


def _is_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


class ImageList(ReIDDataset):
    """A user's own data: a CSV with columns ``path,pid,camid,split``.

    ``split`` is ``train``, ``query`` or ``gallery``; ``camid`` is a 0-based integer; relative
    paths are resolved against the CSV's folder. Train pids are relabelled 0..K-1 like the others.
    The file is read as UTF-8 (a byte-order mark, as Excel writes it, is accepted); an image
    listed twice (the same file on two rows) is an error naming the line numbers.
    """

    name = "ImageList"

    def __init__(self, csv_path, verify_images=False, skip_bad=False):
        csv_path = require_path(csv_path, "image list path")
        self.csv_path = csv_path
        problem = file_problem(csv_path)
        if problem == "missing":
            raise DatasetError(f"image list {csv_path} not found (a CSV with columns path,pid,camid,split)")
        if problem is not None:
            raise DatasetError(f"image list {csv_path} is {problem}, not a regular file (a CSV with columns "
                               "path,pid,camid,split)")
        splits: dict[str, list[ImageRecord]] = {"train": [], "query": [], "gallery": []}
        bad, missing, special, repeated = [], [], [], []
        first_line: dict[str, int] = {}
        try:
            with open(csv_path, newline="", encoding="utf-8-sig") as f:
                reader = csv.DictReader(f)
                fields = [name.strip() for name in reader.fieldnames or []]
                if not {"path", "pid", "camid", "split"} <= set(fields):
                    raise DatasetError(f"{csv_path}: header must name the columns path,pid,camid,split, "
                                       f"got {short_repr(reader.fieldnames, 200)}")
                reader.fieldnames = fields
                for row in reader:
                    line = reader.line_num  # the row's last physical line (a quoted field may span lines)
                    try:
                        pid, camid, split = int(row["pid"]), int(row["camid"]), row["split"].strip()
                        if camid < 0 or split not in splits or not (row["path"] or "").strip():
                            raise ValueError
                    except (TypeError, ValueError, AttributeError):
                        bad.append(f"line {line}")
                        continue
                    path = Path(row["path"])
                    path = path if path.is_absolute() else csv_path.parent / path
                    problem = file_problem(path)
                    if problem is not None:
                        (missing if problem == "missing" else special).append(
                            str(path) if problem == "missing" else f"line {line}: {path} ({problem})")
                        continue
                    key = os.path.realpath(path)
                    if key in first_line:
                        repeated.append(f"line {line} repeats line {first_line[key]} ({row['path']})")
                        continue
                    first_line[key] = line
                    splits[split].append(ImageRecord(str(path), pid, camid))
        except UnicodeDecodeError:
            lines = csv_path.read_bytes().splitlines()
            line = next(i for i, raw in enumerate(lines, 1) if not _is_utf8(raw))
            raise DatasetError(f"{csv_path} is not UTF-8 text (line {line}); save it as \"CSV UTF-8\"") from None
        except csv.Error as e:
            raise DatasetError(f"{csv_path}: not a readable CSV ({e})") from None
        _complain_about([(f"{csv_path}: rows that need a path, an integer pid, camid >= 0 and split in "
                          "train/query/gallery", bad), (f"{csv_path}: image files not found", missing),
                         (f"{csv_path}: rows whose image is not a regular file", special)], skip_bad)
        if repeated:
            _complain(f"{csv_path}: images listed more than once, which would count them twice in training and "
                      f"evaluation ({listing(repeated)})", skip_bad)
        super().__init__(csv_path.parent, **splits, verify_images=verify_images, skip_bad=skip_bad)

    @property
    def location(self) -> str:
        return str(self.csv_path)


# ---------------------------------------------------------------------------------------


def summary_rows(dataset: ReIDDataset) -> list[tuple[str, int, int, int]]:
    """``[(split, identities, images, cameras), ...]`` for train, query and gallery."""
    rows = []
    for split in ("train", "query", "gallery"):
        records = getattr(dataset, split)
        rows.append((split, len({r.pid for r in records}), len(records), len({r.camid for r in records})))
    return rows


def summary(dataset: ReIDDataset) -> str:
    """The usual statistics table: identities, images and cameras per split."""
    lines = [f"{'split':<8} {'ids':>6} {'images':>7} {'cameras':>7}"]
    lines += [f"{s:<8} {i:>6} {n:>7} {c:>7}" for s, i, n, c in summary_rows(dataset)]
    return "\n".join(lines)
