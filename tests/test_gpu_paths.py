"""The CUDA and multi-GPU paths of the engine, exercised on the CPU: the device capability, the
process group and the world size are mocked where no GPU (or second process) is present."""

import datetime

import pytest
import torch
import torch.distributed as dist

from rrid import runtime
from rrid.checkpoint import load_checkpoint, save_checkpoint
from rrid.config import apply_overrides, load_config
from rrid.errors import ConfigError, DatasetError, RunFolderError
from rrid.evaluation import _amp_dtype
from rrid.losses import RRIDLoss
from rrid.model import RRID, RRIDConfig
from rrid.train import TrainerState, build_optimizer, fit, train_one_epoch, train_step
from tiny import QUICK, tiny_overrides

CUDA0 = torch.device("cuda", 0)


@pytest.mark.parametrize("capability, expected", [((6, 0), torch.float16), ((7, 0), torch.float16),
                                                  ((7, 5), torch.float16), ((8, 0), torch.bfloat16),
                                                  ((9, 0), torch.bfloat16)])
def test_auto_amp_is_bf16_only_where_cudnn_has_bf16_convolutions(monkeypatch, capability, expected):
    """P100 (6.0), V100 (7.0) and Colab's T4 (7.5) report emulated bf16 support, but cuDNN has no bf16
    convolutions there: fp16 with the gradient scaler. A100 (8.0) and H100 (9.0): bf16."""
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert runtime.amp_dtype("auto", CUDA0) is expected
    assert _amp_dtype(None, CUDA0) is expected, "evaluation follows the same rule"
    assert runtime.amp_dtype("bf16", CUDA0) is torch.bfloat16 and runtime.amp_dtype("fp16", CUDA0) is torch.float16
    assert runtime.amp_dtype("off", CUDA0) is None


def test_auto_amp_is_off_on_the_cpu_and_bad_values_are_named():
    cpu = torch.device("cpu")
    assert runtime.amp_dtype("auto", cpu) is None and _amp_dtype(None, cpu) is None
    assert runtime.amp_dtype("bf16", cpu) is torch.bfloat16
    with pytest.raises(ConfigError, match="train.amp"):
        runtime.amp_dtype("half", cpu)


def test_a_missing_gpu_is_a_config_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="train.device=cuda: this machine has no CUDA GPU"):
        runtime.pick_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert runtime.pick_device("cuda", local_rank=0) == CUDA0
    with pytest.raises(ConfigError, match="there are 1 CUDA device"):
        runtime.pick_device("cuda:3")


def test_only_the_current_gpus_random_state_is_saved_and_restored(monkeypatch):
    """A run saved on 2 GPUs resumes on 1: the state of the process's own GPU is kept, and an older
    checkpoint's list (one state per visible GPU) gives its first."""
    calls = []
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda device=None: calls.append(("get", device)) or
                        torch.zeros(8, dtype=torch.uint8))
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda state, device=None: calls.append(("set", device,
                                                                                            state.shape)))
    state = runtime.rng_state(None, CUDA0)
    assert calls == [("get", CUDA0)] and state["cuda"].shape == (8,)
    runtime.set_rng_state(state, None, CUDA0)
    old = {**state, "cuda": [torch.zeros(5, dtype=torch.uint8), torch.zeros(6, dtype=torch.uint8)]}
    runtime.set_rng_state(old, None, CUDA0)
    assert calls[1:] == [("set", CUDA0, (8,)), ("set", CUDA0, (5,))]
    assert "cuda" not in runtime.rng_state(None, torch.device("cpu"))


def test_the_process_group_waits_long_enough_for_an_evaluation(monkeypatch):
    """Other ranks wait at a barrier while rank 0 evaluates (with re-ranking, minutes at Market-1501
    size): the collective timeout is hours, not torch's default 10 minutes."""
    seen = {}
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(dist, "is_initialized", lambda: bool(seen))
    monkeypatch.setattr(dist, "init_process_group", lambda backend, timeout: seen.update(backend=backend,
                                                                                         timeout=timeout))
    monkeypatch.setattr(dist, "get_rank", lambda: 1)
    monkeypatch.setattr(dist, "get_world_size", lambda: 2)
    monkeypatch.setattr(dist, "destroy_process_group", lambda: seen.clear())
    with runtime.distributed("cpu") as env:
        assert (env.rank, env.world, env.main) == (1, 2, False)
        assert seen["backend"] == "gloo" and seen["timeout"] >= datetime.timedelta(hours=1)
    assert not seen, "the group this call created is torn down"


def test_main_first_runs_on_rank_0_first_and_shares_its_error(monkeypatch):
    """What rank 0 fetches once (ImageNet weights, a generated data set), the others read after; an
    error rank 0 hits is raised on every rank instead of leaving them at a barrier."""
    boxes = []

    def broadcast(box, src):
        boxes.append(list(box))
        box[0] = DatasetError("data set missing")          # what rank 0 sent
    monkeypatch.setattr(dist, "broadcast_object_list", broadcast)
    calls = []
    other = runtime.Distributed(1, 2, torch.device("cpu"))
    with pytest.raises(DatasetError, match="data set missing"):
        other.main_first(lambda: calls.append("fetched"))
    assert calls == [] and boxes == [[None]], "rank 1 did no work and raised rank 0's error"
    single = runtime.Distributed(0, 1, torch.device("cpu"))
    assert single.main_first(lambda: 7) == 7


def test_a_run_saved_by_two_processes_resumes_only_on_two(tmp_path):
    cfg = load_config(QUICK, tiny_overrides(tmp_path, **{"train.epochs": 1}))
    run = fit(cfg, out_dir=tmp_path / "run", progress=False)
    ckpt = load_checkpoint(run.last_checkpoint)
    ckpt.pop("checksums")
    save_checkpoint({**ckpt, "world_size": 2}, run.last_checkpoint)
    with pytest.raises(RunFolderError, match=r"saved by a run of 2 process\(es\).*--nproc_per_node=2"):
        fit(apply_overrides(cfg, ["train.epochs=2"]), out_dir=tmp_path / "run", resume=True, progress=False)


class _Syncs:
    """Counts the tensor methods that copy a value to the host (a GPU sync): .item(), .tolist(),
    .cpu(), bool(tensor)."""

    def __init__(self, monkeypatch):
        self.count = 0
        for name in ("item", "tolist", "cpu", "__bool__"):
            original = getattr(torch.Tensor, name)

            def counted(t, *a, _original=original, **k):
                self.count += 1
                return _original(t, *a, **k)
            monkeypatch.setattr(torch.Tensor, name, counted)


def _state():
    torch.manual_seed(0)
    model = RRID(RRIDConfig(backbone="resnet18", scales=(2, 4, 6)), 4)
    return TrainerState(None, model.train(), build_optimizer(model.parameters(), load_config(QUICK).optim),
                        criterion=RRIDLoss(), steps_per_epoch=6)


def test_a_training_step_never_waits_for_the_device(monkeypatch):
    """The loss values stay on the device: train_step copies nothing to the host (the batch check
    aside, which the loop does once per epoch), and train_one_epoch only where it logs."""
    state = _state()
    images, labels = torch.randn(8, 3, 96, 32), torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    syncs = _Syncs(monkeypatch)
    train_step(state, images, labels)
    assert syncs.count == 0
    train_step(state, images, labels, check=True)
    assert syncs.count > 0, "the batch check is the one sync, when asked for"
    logged, state.batch = [], 2                  # two of the epoch's six batches done
    train_one_epoch(state, [(images, labels)] * 4, log_every=10, on_sync=lambda s, logs: logged.append(s.step))
    assert logged == [6], "4 more steps end the epoch of 6: one trip to the host, at its end"


def test_evaluation_follows_train_amp_in_fit_and_in_the_eval_command(tmp_path, monkeypatch):
    import rrid.__main__
    import rrid.train

    seen, original = [], rrid.train.evaluate

    def spy(*args, **kwargs):
        seen.append(kwargs["amp"])
        return original(*args, **kwargs)
    for module in (rrid.train, rrid.__main__):
        monkeypatch.setattr(module, "evaluate", spy)
    cfg = load_config(QUICK, tiny_overrides(tmp_path, **{"train.epochs": 1, "train.amp": "bf16"}))
    fit(cfg, out_dir=tmp_path / "run", progress=False)
    assert rrid.__main__.main(["eval", "--config", str(tmp_path / "run" / "config.yaml"),
                               "--checkpoint", str(tmp_path / "run" / "last.pt")]) == 0
    off = str(tmp_path / "off.yaml")
    (tmp_path / "off.yaml").write_text((tmp_path / "run" / "config.yaml").read_text().replace("amp: bf16", "amp: 'off'"))
    assert rrid.__main__.main(["eval", "--config", off, "--checkpoint", str(tmp_path / "run" / "last.pt")]) == 0
    assert seen == [torch.bfloat16, torch.bfloat16, False]
