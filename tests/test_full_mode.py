"""Full mode's chapter helpers, and the GPU-only defects of the chapters, with the GPU mocked.

The chapters run in full mode under nbval in CI with ``RRID_SMOKE=1`` on a CPU (``make
test-full``); what only a GPU shows is tested here: a tensor that a GPU run keeps on the device
next to one made on the CPU (chapter 6's by-hand check, labels handed to ``extract_features``,
an image handed to a model on the GPU), TF32 in a float32 comparison (chapter 11), and the
resume check of chapter 7 on a device whose kernels are not deterministic.
"""

import dataclasses
import json
import os
import sys
import zipfile

import numpy as np
import pytest
import torch
from torch import nn

from rrid import book, paths, runtime
from rrid.config import config_diff, load_config
from rrid.data import Market1501
from rrid.explain import backbone_marks
from rrid.evaluation import extract_features
from rrid.losses import batch_hard_triplet_loss, pairwise_euclidean

ROOT = paths.ROOT
CUDA_ERROR = "Expected all tensors to be on the same device, but found at least two devices, cuda:0 and cpu!"


def cell_source(notebook: str, marker: str) -> str:
    cells = json.loads((ROOT / "book" / notebook).read_text())["cells"]
    (source,) = ["".join(c["source"]) for c in cells if c["cell_type"] == "code" and marker in "".join(c["source"])]
    return source


class OnGPU(torch.Tensor):
    """A CPU tensor playing a CUDA one: results of operations on it are OnGPU too, and combining it
    with a plain CPU tensor fails as CUDA does (``torch.stack`` / ``cat`` with any CPU tensor,
    other operations with a CPU tensor of one or more dimensions; 0-dim CPU tensors mix)."""

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        flat = [a for arg in (*args, *kwargs.values()) for a in (arg if isinstance(arg, (list, tuple)) else [arg])]
        on_gpu = any(isinstance(t, OnGPU) for t in flat)
        on_cpu = [t for t in flat if type(t) is torch.Tensor]
        if on_gpu and on_cpu and (func in (torch.stack, torch.cat) or any(t.dim() for t in on_cpu)):
            raise RuntimeError(CUDA_ERROR)
        return super().__torch_function__(func, types, args, kwargs)


# ----------------------------------------------------------------------------- chapter 6

def batch_hard_by_hand(source: str, d, labels, margin: float):
    """Run the chapter's by-hand loop (from its cell's source) and stack its per-anchor losses."""
    lines = source.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("hardest_pos, hardest_neg, by_hand"))
    stop = next(i for i, line in enumerate(lines) if "by_hand.append(" in line)
    scope = {"torch": torch, "d": d, "labels": labels, "margin": margin, "n_img": len(labels)}
    exec("\n".join(lines[start:stop + 1]), scope)
    return torch.stack(scope["by_hand"])


def test_chapter_6s_batch_hard_check_keeps_its_zero_on_the_device():
    source = cell_source("06_losses_sampling.ipynb", "hardest_pos, hardest_neg, by_hand")
    torch.manual_seed(0)
    labels = torch.arange(4).repeat_interleave(2)
    centers = torch.randn(4, 16, dtype=torch.float64)
    centers[1] = centers[0] + 0.1 * torch.randn(16, dtype=torch.float64)   # identities 0 and 1 look alike
    q = centers[labels] + 0.05 * torch.randn(8, 16, dtype=torch.float64)
    d = pairwise_euclidean(q)
    margin = 0.3                          # the anchors of identities 2 and 3 are inactive: their loss is the 0
    expected = batch_hard_triplet_loss(q, labels, margin=margin, reduction="none")
    assert (expected == 0).any() and (expected > 0).any()
    got = batch_hard_by_hand(source, d.as_subclass(OnGPU), labels.as_subclass(OnGPU), margin)
    assert isinstance(got, OnGPU)
    torch.testing.assert_close(got.as_subclass(torch.Tensor), expected)
    # the mock catches the defect of an earlier version of the loop: a zero made on the CPU
    old = source.replace("loss.clamp(min=0)", "max(loss, torch.tensor(0.0, dtype=d.dtype))")
    assert old != source
    with pytest.raises(RuntimeError, match="same device"):
        batch_hard_by_hand(old, d.as_subclass(OnGPU), labels.as_subclass(OnGPU), margin)


# ----------------------------------------------------------------------------- labels and images on the GPU

class CudaLabels(torch.Tensor):
    """Labels held on a GPU: NumPy cannot read them before ``.cpu()``, as with CUDA tensors."""

    def __array__(self, *args, **kwargs):
        raise TypeError("can't convert cuda:0 device type tensor to numpy. Use Tensor.cpu() first.")

    def cpu(self, *args, **kwargs):
        return self.as_subclass(torch.Tensor)


def test_extract_features_reads_labels_that_a_gpu_loader_holds():
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 4))
    images = torch.randn(3, 3, 2, 2)
    pids = torch.tensor([5, 6, 7]).as_subclass(CudaLabels)
    with pytest.raises(TypeError):
        np.asarray(pids)
    out = extract_features(model, [(images, pids, pids.cpu() - 5)], progress=False)
    assert out.pids.tolist() == [5, 6, 7] and out.camids.tolist() == [0, 1, 2]


def test_backbone_marks_moves_the_image_to_the_models_device():
    seen = []

    class Spy(nn.Module):
        def forward(self, x):
            seen.append(x.device.type)
            return torch.rand(1, 4, 6, 2)

    model = nn.Module()
    model.weight = nn.Parameter(torch.zeros(1, device="meta"))      # the model's device: not the CPU
    model.backbone = Spy()
    marks = backbone_marks(model, torch.zeros(3, 96, 32))
    assert seen == ["meta"] and len(marks.peaks) == 6


# ----------------------------------------------------------------------------- chapter 11

def test_full_float32_turns_tf32_off_and_restores_it():
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    try:
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = True
        with pytest.raises(KeyError):
            with runtime.full_float32():
                assert not torch.backends.cudnn.allow_tf32 and not torch.backends.cuda.matmul.allow_tf32
                raise KeyError("the settings come back after an error too")
        assert torch.backends.cudnn.allow_tf32 and torch.backends.cuda.matmul.allow_tf32
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved
    cell = cell_source("11_paper_vs_code.ipynb", "one = model(images)")
    assert "rrid.runtime.full_float32()" in cell and "atol=1e-5" not in cell


# ----------------------------------------------------------------------------- chapter 7's resume check

def weights(*values):
    return {"w": torch.tensor(values, dtype=torch.float32), "bn.num_batches_tracked": torch.tensor(8)}


def test_resume_check_is_bitwise_on_the_cpu():
    start, plain = weights(0.0, 0.0), weights(1.0, -2.0)
    assert book.resume_check(plain, weights(1.0, -2.0), start, torch.device("cpu")) == (
        True, "uninterrupted vs. interrupted + resumed, every tensor equal: True")
    one_bit = weights(float(np.nextafter(np.float32(1.0), np.float32(2.0))), -2.0)
    assert book.resume_check(plain, one_bit, start, torch.device("cpu"))[0] is False


def test_resume_check_on_a_gpu_allows_one_percent_of_the_distance_trained():
    start, plain = weights(0.0, 0.0), weights(3.0, 4.0)          # training moved the weights by 5
    near = weights(3.0 + 0.03, 4.0 - 0.04)                          # 0.05 away: 1 % of 5
    ok, message = book.resume_check(plain, near, start, torch.device("cuda", 0))
    assert ok and "on cuda: the weights differ by 0.05, 1.0e-02 of the distance training moved them (5)" in message
    assert "up to 1% is allowed" in message and "bitwise equality on the CPU" in message
    ok, message = book.resume_check(plain, weights(3.1, 4.0), start, torch.device("cuda", 0))
    assert not ok and "differ by 0.1, 2.0e-02 of the distance" in message
    counters = {**near, "bn.num_batches_tracked": torch.tensor(7)}
    assert book.resume_check(plain, counters, start, torch.device("cuda", 0)) == (
        False, "uninterrupted vs. interrupted + resumed: their integer counters differ")


# ----------------------------------------------------------------------------- banner, crops, claims

@pytest.fixture
def gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "Tesla T4")


def test_banner_says_what_each_chapter_runs_in_each_mode(monkeypatch, capsys, gpu, tmp_path):
    monkeypatch.setenv("RRID_MODE", "quick")
    monkeypatch.delenv("RRID_SMOKE", raising=False)
    book.banner("ch-relation")
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("RRID_MODE=quick on Tesla T4: small data") and len(lines) == 3
    assert lines[2] == "This chapter: " + book.CHAPTERS["ch-relation"].quick + "."
    monkeypatch.setenv("RRID_MODE", "full")
    monkeypatch.setattr(book, "market1501", lambda: tmp_path / "Market-1501-v15.09.15")
    book.banner("ch-relation")
    out = capsys.readouterr().out
    assert out.startswith("RRID_MODE=full on Tesla T4: the paper's setting")
    assert ("This chapter: model: Ours-S on ImageNet ResNet-50 (random weights after a note when they cannot be "
            f"downloaded) at 384 x 128; data: crops of Market-1501 ({tmp_path / 'Market-1501-v15.09.15'}); trained "
            "relation modules (row 5, rest-only): the full head-only protocol's once the ablation chapter") in out
    assert "Kept from quick mode: until the ablation chapter has run in full mode here, the trained relation" in out
    book.banner("ch-backbone")
    assert "untrained ResNet-50 at 384 x 128 on Tesla T4." in capsys.readouterr().out
    monkeypatch.setattr(book, "market1501", lambda: None)
    monkeypatch.setattr(paths, "market_mini", lambda: None)
    book.banner("ch-reid-task")
    assert "data: the synthetic set (Market-1501 is not prepared here); the section" in capsys.readouterr().out
    monkeypatch.setenv("RRID_SMOKE", "1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    book.banner("ch-training")
    out = capsys.readouterr().out
    assert out.startswith("RRID_MODE=full RRID_SMOKE=1 on CPU: full mode's code paths") and "mean nothing" in out
    assert "ResNet-50 with random weights (a smoke run downloads nothing)" in out


def test_crops_fall_back_in_full_mode_with_the_command_that_prepares_market1501(monkeypatch, capsys, tmp_path):
    mini = tmp_path / "mini"
    monkeypatch.setattr(paths, "market_mini", lambda: mini)
    monkeypatch.setenv("RRID_MODE", "quick")
    assert book.crops() == mini and capsys.readouterr().out == ""
    monkeypatch.setenv("RRID_MODE", "full")
    monkeypatch.delenv("RRID_SMOKE", raising=False)
    monkeypatch.setattr(book, "market1501", lambda: None)
    assert book.crops() == mini
    assert capsys.readouterr().out == ("Market-1501 is not prepared here, so this chapter shows market1501-mini instead: "
                                       + book.PREPARE_HINT + "\n")
    monkeypatch.setattr(book, "market1501", lambda: tmp_path / "market")
    assert book.crops() == tmp_path / "market" and book.crops_name(tmp_path / "market").startswith("Market-1501")
    assert book.crops_name(mini) == "market1501-mini (real Market-1501 crops, Zheng et al. 2015)"


def test_claims_are_asserted_in_quick_mode_and_reported_in_full_mode(monkeypatch, capsys):
    monkeypatch.setenv("RRID_MODE", "quick")
    assert book.claim(True, "x") is True
    with pytest.raises(AssertionError, match="GMP's top cells"):
        book.claim(False, "GMP's top cells carry more of p_i than GAP's")
    monkeypatch.setenv("RRID_MODE", "full")
    assert book.claim(False, "GMP's top cells carry more of p_i than GAP's") is False
    assert capsys.readouterr().out == ("Does not hold for this full-mode network: GMP's top cells carry more of p_i "
                                       "than GAP's\n")


# ----------------------------------------------------------------------------- the smoke setting

@pytest.fixture
def smoke(monkeypatch, tmp_path, market_mini):
    monkeypatch.setenv("RRID_MODE", "full")
    monkeypatch.setenv("RRID_SMOKE", "1")
    monkeypatch.setenv("RRID_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("RRID_MARKET_MINI", str(market_mini))
    return tmp_path


def test_the_smoke_data_set_is_a_market1501_archive_prepared_like_the_real_one(smoke, capsys, market_mini):
    root = book.prepare_market1501("/content/drive/MyDrive/Market-1501-v15.09.15.zip")
    out = capsys.readouterr().out
    assert "stands in for /content/drive/MyDrive/Market-1501-v15.09.15.zip" in out and str(root) in out
    with zipfile.ZipFile(book.smoke_zip()) as zf:
        names = zf.namelist()
    assert all(n.startswith("Market-1501-v15.09.15/") for n in names)
    data = Market1501(root)
    assert data.num_train_ids == book.SMOKE_IDS and len(data.train) == 2 * book.SMOKE_IDS
    assert len({r.pid for r in data.query}) == book.SMOKE_IDS == len(data.query)
    mini = Market1501(market_mini)
    assert {r.path.rsplit("/", 1)[1] for r in data.gallery} <= {r.path.rsplit("/", 1)[1] for r in mini.gallery}
    assert book.prepare_market1501("elsewhere.zip") == root            # prepared once, then kept


def test_the_smoke_config_changes_only_amounts_and_weights(smoke):
    smoke_cfg = book.full_config(book.FULL_CONFIG, ["train.checkpoint_every_steps=200"])
    full = load_config(ROOT / book.FULL_CONFIG, ["train.checkpoint_every_steps=200"])
    changed = {line.split(":")[0] for line in config_diff(full, smoke_cfg)}
    allowed = {o.split("=")[0] for o in book.SMOKE_OVERRIDES} | {"data.root"}
    assert changed <= allowed and "data.root" in changed
    assert (smoke_cfg.model.backbone, smoke_cfg.data.height, smoke_cfg.data.width) == ("resnet50", 384, 128)
    assert smoke_cfg.model == dataclasses.replace(full.model, pretrained=False)
    assert smoke_cfg.data.epoch_length == "official" and smoke_cfg.optim == full.optim and smoke_cfg.loss == full.loss


def test_full_run_folders_on_colab_and_here(monkeypatch, tmp_path):
    monkeypatch.setenv("RRID_MODE", "full")
    monkeypatch.delenv("RRID_SMOKE", raising=False)
    for key in [k for k in os.environ if k.startswith("COLAB_")]:
        monkeypatch.delenv(key)
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    monkeypatch.chdir(tmp_path)
    assert book.full_run_dir() == paths.resolve(book.FULL_RUN) and book.drive_mirror() is None
    mounted = []
    colab = type(sys)("google.colab")
    colab.drive = type(sys)("drive")
    colab.drive.mount = lambda where: mounted.append(where)
    monkeypatch.setitem(sys.modules, "google", type(sys)("google"))
    monkeypatch.setitem(sys.modules, "google.colab", colab)
    assert runtime.on_colab()
    assert book.full_run_dir() == book.Path("/content/runs/market1501_ours_f")
    assert book.drive_mirror() == book.DRIVE_RUN and mounted == ["/content/drive"], "Drive is mounted first"


def test_full_model_is_none_without_a_run(monkeypatch, tmp_path):
    monkeypatch.setenv("RRID_MODE", "full")
    monkeypatch.delenv("RRID_SMOKE", raising=False)
    monkeypatch.setattr(book, "full_run_dir", lambda: tmp_path / "no-run")
    monkeypatch.setattr(book, "drive_mirror", lambda: None)
    assert book.full_model() is None


def test_every_chapter_uses_the_helpers_of_full_mode():
    """The chapters that read real crops ask ``rrid.book.crops`` (Market-1501 in full mode); chapter
    8 evaluates the training chapter's full run; chapter 7 prepares the data and trains the paper's
    config through ``rrid.book``."""
    for name in ("01_reid_task", "03_stripe_pooling", "04_relation_module", "05_gcp", "10_beyond"):
        text = (ROOT / "book" / f"{name}.ipynb").read_text()
        assert "rrid.book.crops()" in text and "rrid.paths.market_mini() or rrid.book.synthetic()" not in text, name
    assert "rrid.book.crops(note=False)" in (ROOT / "book" / "06_losses_sampling.ipynb").read_text()
    assert "rrid.book.full_model()" in (ROOT / "book" / "08_evaluation.ipynb").read_text()
    training = (ROOT / "book" / "07_training.ipynb").read_text()
    assert "rrid.book.prepare_market1501(MARKET1501_ZIP)" in training and "rrid.book.full_config(" in training


def test_a_smoke_run_never_asks_for_imagenet_weights(monkeypatch, capsys):
    calls = []

    def build(name, pretrained):
        calls.append((name, pretrained))
        return "net"

    monkeypatch.setenv("RRID_MODE", "full")
    monkeypatch.setenv("RRID_SMOKE", "1")
    assert book.pretrained_backbone(build) == ("net", "untrained ResNet-50")
    assert calls == [("resnet50", False)] and capsys.readouterr().out == ""
