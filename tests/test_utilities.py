"""fulmen.utilities: Lightning's utilities modules, each checked against Lightning 2.6's documented behaviour."""

from __future__ import annotations

import dataclasses
import logging
import subprocess
import sys
import warnings
from collections import defaultdict, namedtuple

import pytest
import torch
from torch import nn

import fulmen as pl
from fulmen import errors
from fulmen.utilities import rank_zero


@pytest.fixture
def rank():
    """Set rank_zero_only.rank for one test; put the original back after it."""
    original = rank_zero.rank_zero_only.rank
    yield lambda value: setattr(rank_zero.rank_zero_only, "rank", value)
    rank_zero.rank_zero_only.rank = original


# --- rank_zero ---------------------------------------------------------------------------------
def test_rank_zero_only_runs_on_rank_zero_only(rank):
    calls = []

    @rank_zero.rank_zero_only
    def record(x):
        calls.append(x)
        return x * 2

    rank(0)
    assert record(3) == 6
    rank(1)
    assert record(4) is None  # the rank is read at call time, not when decorated
    assert calls == [3]
    assert rank_zero.rank_zero_only(lambda: "x", default="skipped")() == "skipped"
    rank(None)
    with pytest.raises(RuntimeError, match=r"rank_zero_only.rank=None"):
        record(5)


def test_rank_from_environment_in_lightnings_order():
    code = "from fulmen.utilities.rank_zero import rank_zero_only; print(rank_zero_only.rank)"
    for env, expected in [({}, "0"), ({"LOCAL_RANK": "2", "SLURM_PROCID": "5"}, "2"),
                          ({"RANK": "3", "LOCAL_RANK": "1"}, "3"), ({"SLURM_PROCID": "4"}, "4"),
                          ({"JSM_NAMESPACE_RANK": "6"}, "6")]:
        clean = {k: v for k, v in __import__("os").environ.items()
                 if k not in ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK")}
        out = subprocess.run([sys.executable, "-c", code], env={**clean, **env}, capture_output=True, text=True, check=True)
        assert out.stdout.strip() == expected, env


def test_rank_zero_warn_and_deprecation_categories(rank):
    from fulmen.utilities.warnings import LightningDeprecationWarning, PossibleUserWarning

    rank(0)
    with pytest.warns(PossibleUserWarning, match="careful") as record:
        rank_zero.rank_zero_warn("careful", category=PossibleUserWarning)
    assert record[0].filename == __file__  # stacklevel points at the caller's line
    with pytest.warns(UserWarning, match="plain"):
        rank_zero.rank_zero_warn("plain")
    with pytest.warns(LightningDeprecationWarning, match="old"):
        rank_zero.rank_zero_deprecation("old")
    assert issubclass(LightningDeprecationWarning, DeprecationWarning)
    rank(1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rank_zero.rank_zero_warn("not on rank 1")  # would raise if it warned


def test_rank_zero_info_and_warning_cache(rank):
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    rank_zero.log.addHandler(handler)
    try:
        rank(0)
        rank_zero.rank_zero_info("hello %s", "there")
        cache = rank_zero.WarningCache()
        cache.info("once")
        cache.info("once")
        rank(1)
        rank_zero.rank_zero_info("hidden")
    finally:
        rank_zero.log.removeHandler(handler)
    assert [r.getMessage() for r in records] == ["hello there", "once"]
    assert records[0].pathname == __file__
    assert rank_zero.rank_prefixed_message("m", 2) == "[rank: 2] m"
    assert rank_zero.rank_prefixed_message("m", None) == "m"


# --- exceptions, warnings, enums ---------------------------------------------------------------
def test_one_misconfiguration_exception():
    from fulmen.utilities.exceptions import MisconfigurationException

    assert MisconfigurationException is errors.MisconfigurationException
    with pytest.raises(MisconfigurationException, match="limit_train_batches"):
        pl.Trainer(limit_train_batches=-1)


def test_possible_user_warnings_can_be_disabled():
    from fulmen.utilities.warnings import PossibleUserWarning, disable_possible_user_warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        disable_possible_user_warnings()
        warnings.warn("maybe", PossibleUserWarning)
        warnings.warn("surely", UserWarning)
    assert [str(w.message) for w in caught] == ["surely"]


def test_lightning_enum_compares_case_insensitively():
    from fulmen.utilities.enums import GradClipAlgorithmType, LightningEnum

    class Stage(LightningEnum):
        TRAIN = "train"
        VALIDATE = "Validate"

    assert Stage.TRAIN == "TRAIN" and Stage.VALIDATE == "validate" and Stage.TRAIN != "val"
    assert isinstance(Stage.TRAIN, str) and {Stage.TRAIN, Stage.TRAIN} == {Stage.TRAIN}
    assert Stage.from_str("validate") is Stage.VALIDATE  # by key, any case
    assert Stage.from_str("Validate", source="value") is Stage.VALIDATE
    with pytest.raises(ValueError, match=r"expected one of \['TRAIN', 'VALIDATE'\], but got x"):
        Stage.from_str("x")
    with pytest.warns(UserWarning, match="but got x"):
        assert Stage.try_from_str("x") is None
    assert GradClipAlgorithmType("norm") is GradClipAlgorithmType.NORM
    assert GradClipAlgorithmType.supported_types() == ["value", "norm"]


# --- types -------------------------------------------------------------------------------------
def test_types_names():
    from fulmen.optim import LRSchedulerConfig
    from fulmen.utilities import types

    assert types.LRSchedulerConfig is LRSchedulerConfig
    assert [f.name for f in dataclasses.fields(types.LRSchedulerConfig)] == [
        "scheduler", "name", "interval", "frequency", "reduce_on_plateau", "monitor", "strict"]
    assert types.LRScheduler is torch.optim.lr_scheduler.LRScheduler
    optimizer = torch.optim.SGD(nn.Linear(1, 1).parameters(), lr=0.1)
    assert isinstance(optimizer, types.Optimizable) and isinstance(optimizer, types._Stateful)
    assert not isinstance(object(), types.Steppable)
    for name in ("STEP_OUTPUT", "OptimizerLRScheduler", "OptimizerLRSchedulerConfig", "LRSchedulerTypeUnion",
                 "LRSchedulerPLType", "TRAIN_DATALOADERS", "EVAL_DATALOADERS", "_EVALUATE_OUTPUT", "_PREDICT_OUTPUT",
                 "_METRIC", "_PATH", "_DEVICE", "_MAP_LOCATION_TYPE", "_PARAMETERS", "_DictKey", "ReduceLROnPlateau"):
        assert hasattr(types, name), name


# --- apply_func --------------------------------------------------------------------------------
Pair = namedtuple("Pair", ["a", "b"])


@dataclasses.dataclass
class Batch:
    x: torch.Tensor
    label: str
    extra: list = dataclasses.field(default_factory=list)


def test_apply_to_collection_nested():
    from fulmen.utilities.apply_func import apply_to_collection

    data = {"t": torch.tensor(1.0), "pair": Pair(torch.tensor(2.0), "s"), "list": [torch.tensor(3.0), (4, "x")],
            "batch": Batch(torch.tensor(5.0), "l", [torch.tensor(6.0)]), "set": {1, 2}}
    out = apply_to_collection(data, torch.Tensor, lambda t, k: t * k, 10)
    assert out["t"].item() == 10 and out["list"][0].item() == 30 and out["list"][1] == (4, "x")
    assert isinstance(out["pair"], Pair) and out["pair"].a.item() == 20 and out["pair"].b == "s"
    assert isinstance(out["batch"], Batch) and out["batch"].x.item() == 50 and out["batch"].extra[0].item() == 60
    assert out["batch"].label == "l" and data["batch"].x.item() == 5  # the input is not modified
    assert out["set"] == {1, 2}  # sets are not collections to it (as in lightning_utilities)

    dd = defaultdict(list, {"a": 1})
    assert apply_to_collection(dd, int, str).default_factory is list
    assert apply_to_collection([1, 2.0, "3"], int, str, wrong_dtype=bool) == ["1", 2.0, "3"]
    assert apply_to_collection({"a": 1, "b": 2}, int, lambda v: None if v == 1 else v, include_none=False) == {"b": 2}

    @dataclasses.dataclass(frozen=True)
    class Frozen:
        x: int

    with pytest.raises(ValueError, match="frozen dataclass"):
        apply_to_collection(Frozen(1), int, str)
    assert apply_to_collection(Frozen(1), int, str, allow_frozen=True) == Frozen(1)


def test_apply_to_collections_zips():
    from fulmen.utilities.apply_func import apply_to_collections

    out = apply_to_collections({"a": [1, Pair(2, 3)]}, {"a": [10, Pair(20, 30)]}, int, lambda x, y: x + y)
    assert out == {"a": [11, Pair(22, 33)]}
    assert apply_to_collections(None, [1, 2], int, lambda x: -x) == [-1, -2]
    with pytest.raises(ValueError, match="same length"):
        apply_to_collections([1], [1, 2], int, lambda x, y: x)


def test_move_data_to_device_and_convert_to_tensors():
    from fulmen.utilities.apply_func import convert_to_tensors, move_data_to_device

    class Custom:
        def __init__(self):
            self.moved_to = None

        def to(self, device):  # forgets to return self: the object itself is kept
            self.moved_to = device

    custom = Custom()
    out = move_data_to_device({"x": torch.ones(2, dtype=torch.float64), "c": custom, "s": "keep"}, "cpu")
    assert out["x"].device.type == "cpu" and out["c"] is custom and custom.moved_to == torch.device("cpu")
    assert out["s"] == "keep"
    converted = convert_to_tensors({"b": True, "i": 3, "f": 0.5, "t": torch.zeros(1)}, "cpu")
    assert [converted[k].dtype for k in "bift"] == [torch.uint8, torch.int32, torch.float32, torch.float32]


# --- memory, grads -----------------------------------------------------------------------------
def test_memory_helpers():
    from fulmen.utilities import memory

    assert memory.is_oom_error(RuntimeError("CUDA out of memory. Tried to allocate 2 GiB"))
    assert memory.is_cuda_out_of_memory(RuntimeError("CUDA out of memory."))
    assert not memory.is_cuda_out_of_memory(RuntimeError("out of memory"))
    assert memory.is_out_of_cpu_memory(RuntimeError("DefaultCPUAllocator: can't allocate memory: 1 bytes"))
    assert not memory.is_oom_error(ValueError("CUDA out of memory"))
    w = torch.ones(2, requires_grad=True)
    out = memory.recursive_detach({"a": [w * 2], "b": "s"}, to_cpu=True)
    assert not out["a"][0].requires_grad and out["b"] == "s"
    memory.garbage_collection_cuda()  # no CUDA here: must not fail
    assert 0.0 < memory.get_model_size_mb(nn.Linear(100, 100)) < 0.05  # 10,100 floats, ~40 KB + headers


def test_grad_norm_keys_and_values():
    from fulmen.utilities.grads import grad_norm

    net = nn.Linear(2, 1)
    net.weight.grad = torch.tensor([[3.0, -4.0]])
    net.bias.grad = torch.tensor([12.0])
    norms = grad_norm(net, norm_type=2)
    assert list(norms) == ["grad_2.0_norm/weight", "grad_2.0_norm/bias", "grad_2.0_norm_total"]
    assert [round(v.item(), 5) for v in norms.values()] == [5.0, 12.0, 13.0]
    inf = grad_norm(net, "inf", group_separator="_")
    assert {k: v.item() for k, v in inf.items()} == {
        "grad_inf_norm_weight": 4.0, "grad_inf_norm_bias": 12.0, "grad_inf_norm_total": 12.0}
    assert grad_norm(nn.Linear(1, 1), 2) == {}  # no gradients yet
    with pytest.raises(ValueError, match="norm_type=-1.0"):
        grad_norm(net, -1)


# --- model_summary -----------------------------------------------------------------------------
class Summarized(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(256, 512), nn.BatchNorm1d(512))
        self.head = nn.Linear(512, 2)
        self.head.requires_grad_(False)
        self.scale = nn.Parameter(torch.ones(3))

    def forward(self, x):
        return self.head(self.net(x))


def test_model_summary_numbers():
    from fulmen.utilities.model_summary import LayerSummary, ModelSummary, summarize

    model = Summarized()
    summary = summarize(model, max_depth=1)
    assert isinstance(summary, ModelSummary)
    assert summary.layer_names == ["net", "head"] and summary.layer_types == ["Sequential", "Linear"]
    assert summary.param_nums == [256 * 512 + 512 + 2 * 512, 512 * 2 + 2]
    assert summary.total_parameters == 132_608 + 1026 + 3 and summary.trainable_parameters == 132_608 + 3
    assert summary.model_size == pytest.approx(summary.total_parameters * 4 / 1e6)
    assert summary.total_training_modes == {"train": 4, "eval": 0}
    assert summary.in_sizes == ["?", "?"] and summary.total_flops == 0
    text = str(summary)
    assert "other params" in text and "1.0 K     Non-trainable params" in text and "FLOPs" not in text
    deep = ModelSummary(model, max_depth=-1)
    assert deep.layer_names == ["net", "net.0", "net.1", "head"]
    assert ModelSummary(model, max_depth=0).layer_names == []
    with pytest.raises(ValueError, match="max_depth=-2"):
        ModelSummary(model, max_depth=-2)
    assert LayerSummary(nn.Conv2d(3, 8, 3)).num_parameters == 224


def test_model_summary_with_example_input_records_sizes_and_flops():
    from fulmen.utilities.model_summary import ModelSummary, measure_flops

    model = Summarized()
    model.example_input_array = torch.zeros(10, 256)
    model.net[1].eval()
    summary = ModelSummary(model, max_depth=2)
    assert summary.in_sizes == [[10, 256], [10, 256], [10, 512], [10, 512]]
    assert summary.out_sizes[-1] == [10, 2]
    assert summary.total_flops == 2 * 10 * (256 * 512 + 512 * 2)
    assert model.training and not model.net[1].training  # each module's mode is put back
    assert "In sizes" in str(summary) and "Total Flops" in str(summary)
    net = nn.Linear(4, 3)
    assert measure_flops(net, lambda: net(torch.zeros(2, 4))) == 48
    # + backward: the weight's gradient (48); the input needs none
    assert measure_flops(net, lambda: net(torch.zeros(2, 4)), lambda y: y.sum()) == 96


# --- seed --------------------------------------------------------------------------------------
def test_seed_and_isolate_rng(monkeypatch):
    from fulmen.utilities.seed import isolate_rng, reset_seed, seed_everything

    monkeypatch.delenv("PL_GLOBAL_SEED", raising=False)
    monkeypatch.delenv("PL_SEED_WORKERS", raising=False)
    import numpy as np

    assert seed_everything(np.int64(3), verbose=False) == 3
    first = torch.rand(2)
    reset_seed()
    assert torch.equal(torch.rand(2), first)
    with isolate_rng(include_cuda=False):
        inside = torch.rand(1)
    assert torch.equal(torch.rand(1), inside)


# --- data --------------------------------------------------------------------------------------
def test_data_helpers():
    from torch.utils.data import DataLoader, IterableDataset

    from fulmen.errors import MisconfigurationException
    from fulmen.utilities import data

    # Leaves that are not tensors are skipped (Lightning counts a string as a conflicting size).
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert data.extract_batch_size({"meta": ["a"], "x": torch.zeros(4, 3), "n": 1}) == 4
    assert data.extract_batch_size(Batch(torch.zeros(7), "l")) == 7
    assert data.extract_batch_size(torch.tensor(1.0)) == 1
    with pytest.warns(UserWarning, match="ambiguous: 4 was found first, then 2"):
        data.extract_batch_size([torch.zeros(4), torch.zeros(2)])
    with pytest.raises(MisconfigurationException, match="no tensor in the batch"):
        data.extract_batch_size({"a": 1})

    class Stream(IterableDataset):
        def __iter__(self):
            yield torch.zeros(1)

    assert data.sized_len(DataLoader(Stream())) is None and not data.has_len(DataLoader(Stream()))
    assert data.has_iterable_dataset(DataLoader(Stream()))
    with pytest.warns(UserWarning, match="returned 0 length"):
        assert data.has_len([])
    assert data.suggested_max_num_workers(1) >= 1
    with pytest.raises(ValueError, match="local_world_size=0"):
        data.suggested_max_num_workers(0)


# --- parsing, model_helpers --------------------------------------------------------------------
class Parent(pl.LightningModule):
    def __init__(self, lr=0.1, **kwargs):
        super().__init__()
        self.seen = __import__("fulmen.utilities.parsing", fromlist=["x"]).collect_init_args(
            __import__("inspect").currentframe(), [])


class Child(Parent):
    def __init__(self, depth, lr=0.5, *args, **kwargs):
        super().__init__(lr=lr, extra=1)
        self.batch_size = 8


def test_parsing():
    from fulmen.hparams import AttributeDict as FulmenAttributeDict
    from fulmen.utilities import parsing

    assert parsing.AttributeDict is FulmenAttributeDict
    child = Child(3, note="n")
    assert child.seen == [{"lr": 0.5, "extra": 1}, {"depth": 3, "lr": 0.5, "note": "n"}]
    assert parsing.parse_class_init_keys(Child) == ("self", "args", "kwargs")
    assert parsing.is_picklable([1]) and not parsing.is_picklable(lambda: 0)
    hp = {"ok": 1, "fn": lambda: 0}
    with pytest.warns(UserWarning, match="'fn' removed"):
        parsing.clean_namespace(hp)
    assert hp == {"ok": 1}

    assert parsing.lightning_hasattr(child, "batch_size") and not parsing.lightning_hasattr(child, "nope")
    child.hparams["lr"] = 0.01
    assert parsing.lightning_getattr(child, "lr") == 0.01  # the hparams holder is the last one found
    parsing.lightning_setattr(child, "batch_size", 16)
    assert child.batch_size == 16
    with pytest.raises(AttributeError, match="attribute='nope'"):
        parsing.lightning_getattr(child, "nope")


def test_is_overridden():
    import functools

    from fulmen.utilities.model_helpers import find_shared_parameters, is_overridden, set_shared_parameters

    def wrap(fn):
        @functools.wraps(fn)
        def inner(*a, **k):
            return fn(*a, **k)
        return inner

    class Model(pl.LightningModule):
        def training_step(self, batch):
            return None

        @wrap
        def validation_step(self, batch):
            return None

    class CB(pl.Callback):
        def on_fit_start(self, trainer, pl_module):
            pass

        def custom(self):
            pass

    assert is_overridden("training_step", Model()) and is_overridden("validation_step", Model())
    assert not is_overridden("test_step", Model()) and not is_overridden("training_step", None)
    assert is_overridden("on_fit_start", CB()) and not is_overridden("on_fit_end", CB())
    assert is_overridden("on_fit_start", CB(), parent=pl.Callback)
    with pytest.raises(ValueError, match="parent="):
        is_overridden("forward", nn.Linear(1, 1))
    assert not is_overridden("nope", CB())  # the instance has no such method
    with pytest.raises(ValueError, match="no method 'custom'"):
        is_overridden("custom", CB())

    net = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))
    net[1].weight = net[0].weight
    shared = find_shared_parameters(net)
    assert shared == [["0.weight", "1.weight"]]
    net[1].weight = nn.Parameter(net[0].weight.detach().clone())
    set_shared_parameters(net, shared)
    assert net[1].weight is net[0].weight


# --- cloud_io, imports, distributed ------------------------------------------------------------
def test_cloud_io_roundtrip(tmp_path):
    from fulmen.utilities.cloud_io import _atomic_save, _is_dir, _load, get_filesystem

    path = tmp_path / "ckpt.pt"
    _atomic_save({"w": torch.arange(3), "step": 7}, path)
    loaded = _load(path, weights_only=True)
    assert torch.equal(loaded["w"], torch.arange(3)) and loaded["step"] == 7
    assert type(get_filesystem(path)).__name__ == "LocalFileSystem"
    assert _is_dir(get_filesystem(tmp_path), tmp_path) and not _is_dir(get_filesystem(path), path)

    torch.save({"obj": Pair(1, 2)}, tmp_path / "unsafe.pt")
    with pytest.raises(Exception, match="Weights only load failed"):
        _load(str(tmp_path / "unsafe.pt"), weights_only=True)
    with open(path, "rb") as f:  # a file object
        assert _load(f, weights_only=True)["step"] == 7

    url = "memory://fulmen-test/ckpt.pt"  # an fsspec filesystem other than the local one
    _atomic_save({"step": 9}, url)
    assert _load(url, weights_only=True) == {"step": 9}
    assert type(get_filesystem(url)).__name__ == "MemoryFileSystem"


def test_imports_flags():
    from fulmen.utilities import imports

    assert imports._TORCH_GREATER_EQUAL_2_1 is True
    assert bool(imports.RequirementCache("torch>=1.0")) and not imports.RequirementCache("torch<1.0")
    missing = imports.RequirementCache("surely_not_a_package_xyz")
    assert not missing and "pip install -U 'surely_not_a_package_xyz'" in str(missing)
    assert bool(imports.RequirementCache(module="torch.nn")) and not imports.module_available("torch.nope")
    assert imports.package_available("torch") and not imports.package_available("surely_not_a_package_xyz")
    with pytest.raises(ValueError, match="needs something to check"):
        imports.RequirementCache()


def test_distributed_helpers_without_a_process_group():
    from fulmen.utilities import distributed

    t = torch.tensor([1.0, 2.0])
    assert not distributed.distributed_available()
    assert distributed.sync_ddp_if_available(t, reduce_op="mean") is t
    assert distributed._all_gather_ddp_if_available(t) is t
    assert distributed.rank_zero_only is rank_zero.rank_zero_only


# --- the package -------------------------------------------------------------------------------
def test_package_exports_and_cheap_import():
    import fulmen.utilities as utilities

    for name in utilities.__all__:
        if name != "CombinedLoader":  # another module's, tested with it
            assert getattr(utilities, name) is not None, name
    assert utilities.rank_zero_only is rank_zero.rank_zero_only
    assert utilities.FLOAT32_EPSILON == torch.finfo(torch.float32).eps
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        utilities.nope  # noqa: B018

    code = (
        "import sys, fulmen, fulmen.utilities as u; before = set(sys.modules); u.rank_zero_only; "
        "print(sorted(m for m in set(sys.modules) - before if m.startswith('fulmen'))); "
        "print(any(m.startswith(('fsspec', 'packaging')) for m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.splitlines()
    assert out == ["['fulmen.utilities.rank_zero']", "False"]
    bare = "import sys, fulmen.utilities; print(sorted(m for m in sys.modules if m.startswith('fulmen.utilities')))"
    out = subprocess.run([sys.executable, "-c", bare], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "['fulmen.utilities']"
