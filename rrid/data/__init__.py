"""Data: the reID data sets, the synthetic set, PK sampling, transforms, loaders, downloads."""

from . import download, synthetic
from .datasets import (
    CUHK03NP,
    DatasetError,
    DukeMTMCReID,
    ImageList,
    ImageRecord,
    Market1501,
    ReIDDataset,
    summary,
    summary_rows,
)
from .loaders import ImageDataset, Loaders, build_loaders
from .openreid import OpenReID, prepare_openreid
from .sampler import PKSampler
from .transforms import IMAGENET_MEAN, IMAGENET_STD, OfficialRandomErasing, build_transforms

SyntheticReID = Market1501  # the synthetic set has the Market-1501 layout and parser

__all__ = [
    "CUHK03NP", "DatasetError", "DukeMTMCReID", "ImageDataset", "ImageList", "ImageRecord", "Loaders",
    "Market1501", "OpenReID", "prepare_openreid", "IMAGENET_MEAN", "IMAGENET_STD", "OfficialRandomErasing", "PKSampler", "ReIDDataset",
    "SyntheticReID", "build_loaders", "build_transforms", "download", "summary", "summary_rows", "synthetic",
]
