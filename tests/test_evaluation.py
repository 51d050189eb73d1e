"""rrid.evaluation: features, distances, the pipeline (re-ranking itself: tests/test_rerank.py)."""

import numpy as np
import pytest
import torch

from rrid.evaluation import Features, evaluate, extract_features, pairwise_distance, rerank
from rrid.metrics import evaluate_ranking


class OneHotIdentity(torch.nn.Module):
    """Stand-in model: the pid is written in the image's pixel values; returns 2 one-hot blocks."""

    def __init__(self, num_ids=10):
        super().__init__()
        self.num_ids = num_ids
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x):
        pid = x[:, 0, 0, 0].round().long()
        onehot = torch.nn.functional.one_hot(pid, self.num_ids).float()
        return torch.cat([onehot, 3 * onehot], 1) + 0 * self.dummy


class FlipProbe(torch.nn.Module):
    """Returns the left and right column sums, so the flipped image gives them swapped."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(1))

    def forward(self, x):
        return torch.stack([x[..., 0].sum((1, 2)), x[..., -1].sum((1, 2)), x.mean((1, 2, 3))], 1) * self.w


def loader_of(images, pids, camids, batch_size=4):
    ds = torch.utils.data.TensorDataset(images, torch.as_tensor(pids), torch.as_tensor(camids))
    return torch.utils.data.DataLoader(ds, batch_size=batch_size)


def id_images(pids):
    return torch.as_tensor(pids, dtype=torch.float32)[:, None, None, None].expand(-1, 3, 8, 4).clone()


def test_one_hot_model_gives_perfect_map():
    rng = np.random.default_rng(0)
    q_pids, g_pids = np.arange(1, 8), rng.integers(0, 10, 40)
    g_pids[:7] = np.arange(1, 8)
    q_cams, g_cams = np.zeros(7, int), np.ones(40, int)
    model = OneHotIdentity().train()
    qf = extract_features(model, loader_of(id_images(q_pids), q_pids, q_cams), progress=False)
    gf = extract_features(model, loader_of(id_images(g_pids), g_pids, g_cams), progress=False)
    assert model.training  # mode restored
    assert isinstance(qf, Features) and qf.feats.dtype == torch.float32 and qf.feats.shape == (7, 20)
    np.testing.assert_array_equal(gf.pids, g_pids)
    m = evaluate_ranking(pairwise_distance(qf.feats, gf.feats), qf.pids, gf.pids, qf.camids, gf.camids)
    assert m["mAP"] == 1.0 and m["cmc"][0] == 1.0 and m["mINP"] == 1.0


def test_flip_average_and_l2_normalisation():
    x = torch.rand(5, 3, 6, 4, generator=torch.Generator().manual_seed(0))
    loader = loader_of(x, np.zeros(5), np.zeros(5))
    # features are float32: compare with the float64 values within 32 eps32 of the largest
    # (a sum of 18 terms and a mean of two round at most ~20 eps of it; a wrong flip or a
    # missing average is off by ~|left - right|, about 1)
    x64 = x.double()
    left, right, mean = x64[..., 0].sum((1, 2)), x64[..., -1].sum((1, 2)), x64.mean((1, 2, 3))

    def close(actual, expected):
        tol = 32 * torch.finfo(torch.float32).eps * expected.abs().max().item()
        torch.testing.assert_close(actual.double(), expected, rtol=0, atol=tol)

    raw = extract_features(FlipProbe(), loader, flip=False, normalize=False, progress=False).feats
    close(raw, torch.stack([left, right, mean], 1))
    flipped = extract_features(FlipProbe(), loader, flip=True, normalize=False, progress=False).feats
    avg = torch.stack([(left + right) / 2, (left + right) / 2, mean], 1)
    close(flipped, avg)
    unit = extract_features(FlipProbe(), loader, flip=True, normalize=True, progress=False).feats
    close(unit, avg / avg.norm(dim=1, keepdim=True))
    assert (raw.double() - avg).abs().max() > 1000 * 32 * torch.finfo(torch.float32).eps * avg.abs().max()


def test_pairwise_distance_equals_cdist_and_chunks():
    # float64: rounding ~1e-15 here, far below assert_close's default float64 tolerance (1e-7)
    q, g = torch.randn(13, 7, dtype=torch.float64), torch.randn(9, 7, dtype=torch.float64)
    torch.testing.assert_close(pairwise_distance(q, g), torch.cdist(q, g))
    torch.testing.assert_close(pairwise_distance(q, g, chunk=4), torch.cdist(q, g))
    torch.testing.assert_close(pairwise_distance(q, g, squared=True, chunk=5), torch.cdist(q, g) ** 2)
    cos = 1 - torch.nn.functional.cosine_similarity(q[:, None], g[None], dim=2)
    torch.testing.assert_close(pairwise_distance(q, g, metric="cosine", chunk=3), cos)
    with pytest.raises(ValueError, match="metric"):
        pairwise_distance(q, g, metric="manhattan")


def test_evaluate_with_loaders():
    class Loaders:
        pass
    data = Loaders()
    pids = np.array([1, 2, 3, 1, 2, 3, 4])
    data.query = loader_of(id_images(pids[:3]), pids[:3], np.zeros(3, int))
    data.gallery = loader_of(id_images(pids), pids, np.ones(7, int))
    metrics, distmat = evaluate(OneHotIdentity(), data, progress=False)
    assert distmat.shape == (3, 7) and metrics["mAP"] == 1.0
    metrics, distmat = evaluate(OneHotIdentity(), data, progress=False, rerank=True)
    assert distmat.shape == (3, 7) and metrics["cmc"][0] == 1.0
    qf, gf = (extract_features(OneHotIdentity(), loader, progress=False) for loader in (data.query, data.gallery))
    assert distmat.device.type == "cpu" and torch.equal(distmat, rerank(qf.feats, gf.feats))


def test_synthetic_data_set_with_one_hot_identity_model_gives_map_1(synthetic_small):
    """The whole pipeline from a data set folder: rrid.data parses it, ``evaluate`` builds the
    test loaders, extracts flipped features and ranks them. A stand-in that recognises each test
    image (by a fingerprint of its pixels, which a horizontal flip keeps) and returns the one-hot
    code of its identity must reach mAP = rank-1 = 1: every match is at distance 0, every
    other image (distractors included) at sqrt(2)."""
    from rrid.data import ImageDataset, Market1501, build_transforms

    data = Market1501(synthetic_small)
    transform = build_transforms(32, 16, train=False)
    records = data.query + data.gallery
    fingerprints = {round(float(ImageDataset([r], transform)[0][0].sum()), 2): r.pid for r in records}
    assert len(fingerprints) == len(records), "fingerprints must tell the test images apart"
    pids = sorted({r.pid for r in records})

    class OneHotByFingerprint(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.dummy = torch.nn.Parameter(torch.zeros(1))

        def forward(self, x):
            idx = [pids.index(fingerprints[round(float(img.sum()), 2)]) for img in x]
            return torch.nn.functional.one_hot(torch.tensor(idx), len(pids)).float() + 0 * self.dummy

    metrics, distmat = evaluate(OneHotByFingerprint(), data, height=32, width=16, flip=True, progress=False)
    assert distmat.shape == (len(data.query), len(data.gallery))
    assert metrics["mAP"] == 1.0 and metrics["cmc"][0] == 1.0 and metrics["mINP"] == 1.0
    assert metrics["num_valid_queries"] == len(data.query)
    same = torch.tensor([[q.pid == g.pid for g in data.gallery] for q in data.query])
    # one-hot features are exact in float32 (0 and 1), so are their distances: 0 and sqrt(2)
    assert torch.allclose(distmat[same], torch.zeros(())) and torch.allclose(distmat[~same], torch.tensor(2.0).sqrt())


def test_evaluate_ranking_metric_option():
    """``ranking_metric`` picks the protocol of rrid.metrics.ranking_metrics on evaluate's own distances."""
    from rrid.metrics import ranking_metrics

    class Loaders:
        pass
    rng = np.random.default_rng(0)
    pids = np.r_[np.arange(8), np.repeat(np.arange(8), 3)]
    cams = np.r_[np.zeros(8, int), rng.integers(0, 2, 24)]
    images = torch.as_tensor(rng.standard_normal((32, 3, 8, 4)), dtype=torch.float32) + id_images(pids) / 4
    data = Loaders()
    data.query, data.gallery = loader_of(images[:8], pids[:8], cams[:8]), loader_of(images[8:], pids[8:], cams[8:])
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(96, 16))
    market, d = evaluate(model, data, progress=False)
    single, d2 = evaluate(model, data, progress=False, ranking_metric="cuhk03_single_shot")
    torch.testing.assert_close(d, d2)  # the same model, images and kernels: the same distances, bit for bit
    expected = ranking_metrics(d, pids[:8], pids[8:], cams[:8], cams[8:], metric="cuhk03_single_shot")
    np.testing.assert_array_equal(single["cmc"], expected["cmc"])
    np.testing.assert_array_equal(single["cmc_market"], market["cmc"])
    assert single["mAP"] == market["mAP"] and market["metric"] == "market"
    assert not np.array_equal(single["cmc"], market["cmc"])
    with pytest.raises(ValueError, match="ranking_metric='cuhk'"):
        evaluate(model, data, progress=False, ranking_metric="cuhk")
