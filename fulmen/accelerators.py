"""Which device to run on: the Accelerator classes, parsing `accelerator` and `devices`, and what "auto" means.

"auto" picks CUDA when available, then MPS, then CPU. `setup_hardware` puts the Trainer's hardware
arguments together: this process's device, the Accelerator object (`trainer.accelerator`), and the
strategy that runs one process or several.

The Accelerator classes carry Lightning's names and static methods (`CUDAAccelerator.is_available()`,
`CPUAccelerator.parse_devices(4)`, ...), so callbacks that ask `isinstance(trainer.accelerator,
CUDAAccelerator)` work; the Trainer itself keeps deciding on the plain name (`trainer._accelerator`).
`AcceleratorRegistry` maps the names `Trainer(accelerator=...)` accepts to their classes. The
functions Lightning keeps beside them (`get_cpu_stats`, `get_nvidia_gpu_stats`, MPS's stats as
`get_mps_stats`, `find_usable_cuda_devices`) live here too.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any

import torch

from fulmen.arguments import check_bool, check_int
from fulmen.errors import MisconfigurationException
from fulmen.utilities.registry import Registry
from fulmen.strategies import Strategy, parse_strategy
from fulmen.strategies.environment import processes_per_node, slurm_detected, torchrun_detected

if TYPE_CHECKING:
    from fulmen.plugins.resolve import ResolvedPlugins

_ACCELERATORS = ("auto", "cpu", "cuda", "gpu", "mps")
_NOT_SUPPORTED = {"tpu": "XLA (TPU)", "xla": "XLA (TPU)", "hpu": "Habana Gaudi (HPU)", "ipu": "Graphcore (IPU)"}


def _not_supported(what: str, received: str) -> MisconfigurationException:
    return MisconfigurationException(
        f"{what} is not supported by fulmen. Received: {received}. "
        "Fix: use accelerator='cuda', 'mps', 'cpu' or 'auto'."
    )


def _psutil_stats(prefix: str, caller: str) -> dict[str, float]:
    try:
        import psutil  # optional: only stats read where /proc is missing need it
    except ModuleNotFoundError:
        raise ModuleNotFoundError(
            "Reading CPU/MPS device stats without Linux's /proc needs the `psutil` package, which is not "
            f"installed. Received: {caller}. Fix: pip install psutil."
        ) from None
    return {
        f"{prefix}_vm_percent": psutil.virtual_memory().percent,
        f"{prefix}_percent": psutil.cpu_percent(),
        f"{prefix}_swap_percent": psutil.swap_memory().percent,
    }


def get_cpu_stats() -> dict[str, float]:
    """The CPU's memory, swap and busy percentages ("cpu_vm_percent", "cpu_swap_percent", "cpu_percent").

    On Linux they are read from /proc, as DeviceStatsMonitor reads them (plus "cpu_rss_bytes", this
    process's resident memory); elsewhere `psutil` is needed.

    >>> sorted(get_cpu_stats())[:3]
    ['cpu_percent', 'cpu_rss_bytes', 'cpu_swap_percent']
    """
    if os.path.exists("/proc/meminfo") and os.path.exists("/proc/stat"):
        from fulmen.callbacks.device_stats_monitor import get_cpu_stats as read_proc

        return read_proc()
    return _psutil_stats("cpu", "get_cpu_stats()")


def get_mps_stats() -> dict[str, float]:
    """Apple silicon's shared memory and CPU use, under Lightning's "M1_" keys ("M1_vm_percent", ...).

    Lightning's `accelerators.mps.get_device_stats()`. macOS has no /proc, so this needs `psutil`."""
    return _psutil_stats("M1", "accelerators.mps.get_device_stats()")


def get_nvidia_gpu_stats(device: Any) -> dict[str, float]:
    """One GPU's utilisation, memory, fan and temperatures as `nvidia-smi` reports them.

    Keys carry their unit, as in Lightning: "utilization.gpu (%)", "memory.used (MB)", "memory.free (MB)",
    "utilization.memory (%)", "fan.speed (%)", "temperature.gpu (°C)", "temperature.memory (°C)"; a value
    nvidia-smi cannot give ("[N/A]") reads 0.0. `device` is a torch device, an index or "cuda:1"; under
    CUDA_VISIBLE_DEVICES it is the visible index, mapped to the physical GPU for nvidia-smi.
    """
    import shutil
    import subprocess

    smi = shutil.which("nvidia-smi")
    if smi is None:
        # FileNotFoundError, as Lightning raises here.
        raise FileNotFoundError(
            f"Reading GPU stats runs `nvidia-smi`, which is not on PATH. Received: device={device!r}. "
            "Fix: install the NVIDIA driver tools, or use torch.cuda.memory_stats(device) instead."
        )
    metrics = (("utilization.gpu", "%"), ("memory.used", "MB"), ("memory.free", "MB"), ("utilization.memory", "%"),
               ("fan.speed", "%"), ("temperature.gpu", "°C"), ("temperature.memory", "°C"))
    index = torch.device(device).index if isinstance(device, (str, torch.device)) else int(device)
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    gpu_id = visible.split(",")[index or 0].strip() if visible else str(index or 0)
    out = subprocess.run(
        [smi, f"--query-gpu={','.join(k for k, _ in metrics)}", "--format=csv,nounits,noheader", f"--id={gpu_id}"],
        encoding="utf-8", capture_output=True, check=True,
    ).stdout.strip()

    def number(text: str) -> float:
        try:
            return float(text)
        except ValueError:  # "[N/A]", "[Not Supported]"
            return 0.0

    return {f"{key} ({unit})": number(v) for (key, unit), v in zip(metrics, out.split(", "))}


def find_usable_cuda_devices(num_devices: int = -1) -> list[int]:
    """Indices of the visible GPUs that accept a tensor now: `num_devices` of them, or all with -1.

    A GPU in "exclusive process" mode that another process holds is skipped. Use it as
    `Trainer(accelerator="cuda", devices=find_usable_cuda_devices(2))`. Two processes calling this at
    the same moment may both pick the same free GPU.

    >>> find_usable_cuda_devices(0)
    []
    """
    if num_devices == 0:
        return []
    visible = torch.cuda.device_count()
    # ValueError/RuntimeError, as Lightning raises here.
    if visible == 0:
        raise ValueError(
            f"No CUDA device is visible on this machine. Received: num_devices={num_devices}. "
            "Fix: run on a machine with a GPU (check CUDA_VISIBLE_DEVICES), or use accelerator='cpu'."
        )
    if num_devices > visible:
        raise ValueError(
            f"More GPUs were requested than this machine has ({visible}). Received: num_devices={num_devices}. "
            f"Fix: ask for at most {visible}, or -1 for all usable ones."
        )
    usable, busy = [], []
    for index in range(visible):
        try:
            torch.tensor(0, device=torch.device("cuda", index))
        except RuntimeError:  # held by another process in exclusive mode, or broken
            busy.append(index)
            continue
        usable.append(index)
        if len(usable) == num_devices:
            break
    if num_devices != -1 and len(usable) != num_devices:
        raise RuntimeError(
            f"Only {len(usable)} of the requested GPUs are usable now; GPUs {busy} are occupied by other processes. "
            f"Received: num_devices={num_devices}. Fix: ask for fewer, wait for them to be free, or pass -1."
        )
    return usable


class Accelerator(ABC):
    """One kind of hardware: how to prepare its device, count it, and read its stats.

    The static methods answer questions about the machine without an instance:

    >>> CPUAccelerator.is_available(), CPUAccelerator.parse_devices("2")
    (True, 2)
    """

    @abstractmethod
    def setup_device(self, device: torch.device) -> None:
        """Make `device` this process's device."""

    @abstractmethod
    def teardown(self) -> None:
        """Release what `setup_device` acquired."""

    def setup(self, trainer: Any) -> None:
        """Called with the Trainer before the model runs on the device; nothing by default."""

    def get_device_stats(self, device: Any) -> dict[str, Any]:
        """Numbers describing `device` (memory, utilisation), e.g. for DeviceStatsMonitor."""
        raise NotImplementedError

    @staticmethod
    @abstractmethod
    def parse_devices(devices: Any) -> Any:
        """The Trainer's `devices` argument in this accelerator's form (a count, or device indices)."""

    @staticmethod
    @abstractmethod
    def get_parallel_devices(devices: Any) -> list[torch.device]:
        """The torch devices for what `parse_devices` returned: one per process."""

    @staticmethod
    @abstractmethod
    def auto_device_count() -> int:
        """How many devices `devices="auto"` means."""

    @staticmethod
    @abstractmethod
    def is_available() -> bool:
        """Whether this machine has this hardware."""

    @staticmethod
    @abstractmethod
    def name() -> str:
        """The accelerator's name in `Trainer(accelerator=...)`."""

    @classmethod
    def register_accelerators(cls, accelerator_registry: _AcceleratorRegistry) -> None:
        """Add this class to `accelerator_registry`; the base class registers nothing."""


class CPUAccelerator(Accelerator):
    """The CPU. `devices` counts processes, all on the CPU."""

    def setup_device(self, device: torch.device) -> None:
        if device.type != "cpu":
            raise MisconfigurationException(
                f"CPUAccelerator was given a device that is not a CPU. Received: device={device}. "
                "Fix: use CUDAAccelerator/MPSAccelerator for that device, or torch.device('cpu')."
            )

    def teardown(self) -> None:
        pass

    def get_device_stats(self, device: Any) -> dict[str, Any]:
        return get_cpu_stats()

    @staticmethod
    def parse_devices(devices: int | str) -> int:
        if isinstance(devices, str) and devices.strip().isdigit():
            devices = int(devices)
        if not isinstance(devices, int) or isinstance(devices, bool) or devices <= 0:
            # TypeError, as Lightning raises here.
            raise TypeError(
                f"`devices` with CPUAccelerator must be a number of processes > 0. Received: devices={devices!r}. "
                "Fix: e.g. devices=1 or devices=4."
            )
        return devices

    @staticmethod
    def get_parallel_devices(devices: int | str) -> list[torch.device]:
        return [torch.device("cpu")] * CPUAccelerator.parse_devices(devices)

    @staticmethod
    def auto_device_count() -> int:
        return 1

    @staticmethod
    def is_available() -> bool:
        return True

    @staticmethod
    def name() -> str:
        return "cpu"

    @classmethod
    def register_accelerators(cls, accelerator_registry: _AcceleratorRegistry) -> None:
        accelerator_registry.register(cls.name(), cls, description=cls.__name__)


class CUDAAccelerator(Accelerator):
    """NVIDIA GPUs. `devices` selects GPU indices: a count, a list, "0,1", or -1 for all."""

    def setup_device(self, device: torch.device) -> None:
        if device.type != "cuda":
            raise MisconfigurationException(
                f"CUDAAccelerator was given a device that is not a GPU. Received: device={device}. "
                "Fix: use torch.device('cuda', index), or CPUAccelerator for the CPU."
            )
        torch.cuda.set_device(device)

    def teardown(self) -> None:
        if torch.cuda.is_initialized():
            torch.cuda.empty_cache()

    def get_device_stats(self, device: Any) -> dict[str, Any]:
        return torch.cuda.memory_stats(device)

    @staticmethod
    def parse_devices(devices: int | str | list[int]) -> list[int] | None:
        # None, 0 and [] mean "no GPU" in Lightning's device parser (and "0" is the count 0, not GPU 0).
        if devices is None or devices == 0 or devices == [] or (isinstance(devices, str) and devices.strip() == "0"):
            return None
        return parse_devices(devices, "cuda")

    @staticmethod
    def get_parallel_devices(devices: list[int]) -> list[torch.device]:
        return [torch.device("cuda", i) for i in devices]

    @staticmethod
    def auto_device_count() -> int:
        return torch.cuda.device_count()

    @staticmethod
    def is_available() -> bool:
        return torch.cuda.device_count() > 0

    @staticmethod
    def name() -> str:
        return "cuda"

    @classmethod
    def register_accelerators(cls, accelerator_registry: _AcceleratorRegistry) -> None:
        accelerator_registry.register(cls.name(), cls, description=cls.__name__)


class MPSAccelerator(Accelerator):
    """Apple silicon's GPU (Metal Performance Shaders): one device."""

    def setup_device(self, device: torch.device) -> None:
        if device.type != "mps":
            raise MisconfigurationException(
                f"MPSAccelerator was given a device that is not MPS. Received: device={device}. "
                "Fix: use torch.device('mps'), or CPUAccelerator for the CPU."
            )

    def teardown(self) -> None:
        pass

    def get_device_stats(self, device: Any) -> dict[str, Any]:
        return get_mps_stats()

    @staticmethod
    def parse_devices(devices: int | str | list[int]) -> list[int] | None:
        if devices is None or devices == 0 or devices == [] or (isinstance(devices, str) and devices.strip() == "0"):
            return None
        return parse_devices(devices, "mps")

    @staticmethod
    def get_parallel_devices(devices: int | str | list[int]) -> list[torch.device]:
        parsed = MPSAccelerator.parse_devices(devices) or []
        return [torch.device("mps", i) for i in range(len(parsed))]

    @staticmethod
    def auto_device_count() -> int:
        return 1

    @staticmethod
    def is_available() -> bool:
        return _mps_available()

    @staticmethod
    def name() -> str:
        return "mps"

    @classmethod
    def register_accelerators(cls, accelerator_registry: _AcceleratorRegistry) -> None:
        accelerator_registry.register(cls.name(), cls, description=cls.__name__)


class XLAAccelerator(Accelerator):
    """TPUs through torch_xla: importable so Lightning code that names it loads, but fulmen does not run on XLA."""

    def _refuse(self, *args: Any, **kwargs: Any) -> Any:
        raise _not_supported("XLAAccelerator (TPU)", "accelerator=XLAAccelerator()")

    setup_device = teardown = get_device_stats = _refuse

    @staticmethod
    def parse_devices(devices: Any) -> Any:
        raise _not_supported("XLAAccelerator (TPU)", f"XLAAccelerator.parse_devices({devices!r})")

    @staticmethod
    def get_parallel_devices(devices: Any) -> list[torch.device]:
        raise _not_supported("XLAAccelerator (TPU)", f"XLAAccelerator.get_parallel_devices({devices!r})")

    @staticmethod
    def auto_device_count() -> int:
        return 0

    @staticmethod
    def is_available() -> bool:
        return False

    @staticmethod
    def name() -> str:
        return "tpu"


class _AcceleratorRegistry(Registry):
    """Accelerator names -> {"accelerator": class, "description": str, "init_params": dict}.

    `Trainer(accelerator=name)` accepts the names registered here (besides "auto" and "gpu").

    >>> sorted(AcceleratorRegistry.available_accelerators())
    ['cpu', 'cuda', 'mps']
    """

    kind = "accelerator"
    duplicate_error = MisconfigurationException

    def available_accelerators(self) -> set[str]:
        return set(self)

    def __str__(self) -> str:
        return f"Registered Accelerators: {', '.join(sorted(self))}"


AcceleratorRegistry = _AcceleratorRegistry()
for _cls in (CPUAccelerator, CUDAAccelerator, MPSAccelerator, XLAAccelerator):
    _cls.register_accelerators(AcceleratorRegistry)
_KINDS = ((CUDAAccelerator, "cuda"), (MPSAccelerator, "mps"), (CPUAccelerator, "cpu"))


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend and backend.is_available())


def _available(accelerator: str) -> int:
    """How many devices of this kind exist here."""
    if accelerator == "cuda":
        return torch.cuda.device_count()
    if accelerator == "mps":
        return 1 if _mps_available() else 0
    return 1  # one CPU "device" per process; more processes come from a strategy


def _kind_of(accelerator: Accelerator) -> str:
    """fulmen's name for an Accelerator object (subclasses of the built-in ones count as them)."""
    if isinstance(accelerator, XLAAccelerator):
        raise _not_supported("XLAAccelerator (TPU)", f"accelerator={type(accelerator).__name__}()")
    for cls, kind in _KINDS:
        if isinstance(accelerator, cls):
            return kind
    raise MisconfigurationException(
        f"fulmen runs on CPU, CUDA and MPS only, and cannot drive a custom Accelerator. "
        f"Received: accelerator={type(accelerator).__name__}(). "
        "Fix: subclass CPUAccelerator/CUDAAccelerator/MPSAccelerator, or pass accelerator='auto'."
    )


def parse_accelerator(accelerator: Any) -> tuple[str, Accelerator]:
    """(name, Accelerator object) for the Trainer's `accelerator`: a name, "auto", or an Accelerator."""
    if isinstance(accelerator, Accelerator):
        name, chosen = _kind_of(accelerator), accelerator
    else:
        name = accelerator.lower() if isinstance(accelerator, str) else accelerator
        if name in _NOT_SUPPORTED:
            raise _not_supported(_NOT_SUPPORTED[name], f"accelerator={accelerator!r}")
        if name in AcceleratorRegistry and name not in _ACCELERATORS:  # one the user registered
            chosen = AcceleratorRegistry.get(name)
            name = _kind_of(chosen)
        elif name not in _ACCELERATORS:
            raise MisconfigurationException(
                f"Unknown accelerator. Received: accelerator={accelerator!r}. Fix: use one of {list(_ACCELERATORS)}."
            )
        else:
            if name == "gpu":
                name = "cuda"
            if name == "auto":
                name = "cuda" if torch.cuda.is_available() else "mps" if _mps_available() else "cpu"
            chosen = AcceleratorRegistry.get(name)
    if name != "cpu" and _available(name) == 0:
        raise MisconfigurationException(
            f"accelerator={accelerator!r} was requested but no {name.upper()} device is available on this machine. "
            "Received: 0 devices. Fix: use accelerator='auto' or 'cpu'."
        )
    return name, chosen


def parse_devices(devices: Any, accelerator: str) -> list[int]:
    """Device indices for this machine; `devices` is "auto", an int, a list, or a string like "0,1"."""
    available = _available(accelerator)
    given = devices  # for the error messages: `devices` is rewritten below
    if devices == "auto" or devices == -1 or devices == "-1":
        return list(range(available)) if accelerator == "cuda" else [0]
    if isinstance(devices, str):
        try:
            devices = [int(d) for d in devices.split(",") if d.strip()] if "," in devices else int(devices)
        except ValueError:
            devices = None  # falls through to the error below
    if isinstance(devices, int) and not isinstance(devices, bool) and devices > 0:
        indices = list(range(devices))
    elif isinstance(devices, (list, tuple)) and devices and all(isinstance(d, int) for d in devices):
        indices = list(devices)
    else:
        raise MisconfigurationException(
            f"`devices` must be a positive int, a list of device indices, or 'auto'. Received: devices={given!r}. "
            "Fix: e.g. devices=1, devices=[0], devices='auto'."
        )
    if accelerator != "cpu" and max(indices) >= available:
        raise MisconfigurationException(
            f"Asked for {accelerator} devices {indices}, but this machine has {available}. "
            f"Received: devices={given!r}. Fix: use at most {available} device(s), or devices='auto'."
        )
    return indices


def device_for(accelerator: str, index: int) -> torch.device:
    if accelerator == "cpu":
        return torch.device("cpu")
    if accelerator == "mps":
        return torch.device("mps")
    return torch.device("cuda", index)


def setup_hardware(
    accelerator: Any, strategy: Any, devices: Any, num_nodes: Any, sync_batchnorm: Any,
    plugins: ResolvedPlugins | None = None,
) -> tuple[str, list[int], Strategy, torch.device]:
    """(accelerator name, device indices, strategy, this process's device) for the Trainer's arguments.

    The Accelerator object is left on the strategy (`strategy.accelerator`, as in Lightning), where
    `trainer.accelerator` reads it; `plugins` (from `fulmen.plugins.resolve_plugins`) gives the strategy
    its cluster environment, checkpoint IO and layer sync before it works out its ranks."""
    # SingleDeviceStrategy(device=...) names the device itself: it decides "auto" and the index.
    pinned = getattr(strategy, "requested_device", None)
    if pinned is not None and accelerator == "auto":
        accelerator = pinned.type
    name, accelerator_object = parse_accelerator(accelerator)
    if pinned is not None:
        if pinned.type != name:
            raise MisconfigurationException(
                f"The strategy's device and the accelerator disagree. Received: strategy=SingleDeviceStrategy("
                f"device={str(pinned)!r}), accelerator={accelerator!r}. Fix: make them the same kind of device, "
                "or leave accelerator='auto'."
            )
        if devices == "auto":
            devices = [pinned.index or 0] if name == "cuda" else 1
    if devices == "auto" and (torchrun_detected() or slurm_detected()):
        devices = processes_per_node()  # a launcher started the processes: one device each
    device_ids = parse_devices(devices, name)
    check_int("num_nodes", num_nodes, 1)
    chosen = parse_strategy(strategy, len(device_ids) * num_nodes)
    if not chosen.distributed and (len(device_ids) > 1 or num_nodes > 1):
        raise MisconfigurationException(
            f"strategy={strategy!r} runs one process on one device, but {len(device_ids)} device(s) on "
            f"{num_nodes} node(s) were requested. Received: devices={devices!r}, num_nodes={num_nodes!r}. "
            "Fix: use strategy='ddp' (or 'auto') for several devices, or devices=1."
        )
    if plugins is not None:
        _give_plugins(chosen, plugins)
    chosen.configure(name, device_ids, num_nodes)
    # The backing attribute: a subclass may define root_device as a property (Ray's RayDDPStrategy
    # does), and then its answer is the device.
    chosen._root_device = device_for(name, chosen.root_device_index(device_ids))
    device = chosen.root_device
    chosen.accelerator = accelerator_object
    check_bool("sync_batchnorm", sync_batchnorm)
    if plugins is not None:
        sync_batchnorm = plugins.sync_batchnorm  # also True for a TorchSyncBatchNorm plugin
    if sync_batchnorm and chosen.distributed and name == "cpu":
        raise MisconfigurationException(
            "sync_batchnorm=True needs GPUs: torch.nn.SyncBatchNorm does not run on CPU. Received: "
            "sync_batchnorm=True with accelerator='cpu'. Fix: drop sync_batchnorm on CPU, or use accelerator='gpu'."
        )
    return name, device_ids, chosen, device


def _give_plugins(strategy: Strategy, plugins: ResolvedPlugins) -> None:
    """Hand the strategy the plugins it uses; one given both to the strategy and in `plugins=` is an error."""
    given = (("cluster_environment", "cluster_environment", plugins.cluster_environment),
             ("checkpoint_io", "_checkpoint_io", plugins.checkpoint_io))
    for arg, attribute, plugin in given:
        if plugin is None:
            continue
        if arg == "cluster_environment" and not hasattr(strategy, "cluster_environment"):
            continue  # one process: no ranks to take from an environment (as in Lightning)
        already = getattr(strategy, attribute, None)
        if already is not None and already is not plugin:
            raise MisconfigurationException(
                f"The {arg} is set both on the strategy and in plugins=. Received: "
                f"{type(strategy).__name__}({arg}={type(already).__name__}()), plugins=[{type(plugin).__name__}()]. "
                "Fix: pass it in one place only."
            )
        setattr(strategy, attribute, plugin)
    strategy._layer_sync = plugins.layer_sync
