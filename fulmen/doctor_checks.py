"""The rules of `fulmen doctor`: the table of codes, the `Finding` record, and `FileChecker`,
which walks one parsed file (`ast`) and reports every rule's findings.

Entry points (files, folders, the command, the check at fit start) are in fulmen.doctor; the
codes with before/after examples are in docs/common_mistakes.md. The checks are heuristics on
the source: they look for the usual spelling of each mistake (`self.losses.append(loss)`,
`x.to("cuda")`), follow names within one method, and resolve base classes within one file.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["RULES", "FileChecker", "Finding"]

# code -> (severity, what it catches). The order is the order of docs/common_mistakes.md.
RULES: dict[str, tuple[str, str]] = {
    "FM101": ("error", "hard-coded device move (.cuda(), .to('cuda'), device='cuda') in a LightningModule"),
    "FM102": ("warning", ".to(device) with a device variable in a LightningModule"),
    "FM103": ("warning", "tensor created in a step or forward without a device"),
    "FM201": ("error", "training_step has a path that returns nothing"),
    "FM202": ("error", "training_step returns something other than the loss"),
    "FM301": ("error", "zero_grad/backward/optimizer step called under automatic optimization"),
    "FM302": ("error", "loss.backward() under manual optimization"),
    "FM303": ("warning", "manual optimization without manual_backward"),
    "FM401": ("error", "__init__ without super().__init__()"),
    "FM402": ("warning", "self.log called in forward"),
    "FM403": ("warning", "a tensor that keeps its autograd graph stored in a list/dict on self"),
    "FM501": ("advice", "Trainer constructed inside the LightningModule or when its file is imported"),
    "FM502": ("advice", "data loading inside the LightningModule class"),
    "FM601": ("advice", "DataLoader without num_workers"),
    "FM602": ("advice", "shuffle=True on validation/test/predict data"),
}
_STEP_METHODS = {"training_step", "validation_step", "test_step", "predict_step", "forward"}
_FACTORIES = {"zeros", "ones", "empty", "full", "rand", "randn", "randint", "randperm", "arange", "linspace",
              "logspace", "eye", "tensor", "as_tensor"}
_NO_GRAPH_CALLS = {"detach", "item", "tolist", "numpy", "argmax", "argmin", "long", "int", "bool", "sign"}
_PLAIN_VALUE_CALLS = {"float", "int", "bool", "str", "len", "round"}
# Dataset classes that read files: a DataLoader over them wants worker processes.
_DISK_DATASETS = {"MNIST", "FashionMNIST", "KMNIST", "EMNIST", "CIFAR10", "CIFAR100", "SVHN", "STL10", "ImageNet",
                  "CelebA", "Caltech101", "Places365", "Food101", "Flowers102", "OxfordIIITPet", "ImageFolder",
                  "DatasetFolder", "load_dataset", "LibriSpeech", "COCODetection", "CocoDetection", "VOCDetection"}
_FILE_READERS = {"open", "imread", "read_image", "decode_image", "load", "read_csv", "read_parquet", "loadtxt",
                 "read_file", "load_wav", "read"}
_CONFIG_NAMES = {"args", "cfg", "config", "conf", "opt", "opts", "hparams", "settings", "hp"}
_ACCELERATOR_STRINGS = ("cuda", "mps", "xla", "gpu")
@dataclass(frozen=True)
class Finding:
    """One problem: where (`path:line:col`), which rule (`code`), what, and how to fix it."""

    code: str
    path: str
    line: int
    col: int
    message: str
    fix: str

    @property
    def severity(self) -> str:
        return RULES[self.code][0]

    def format(self) -> str:
        place = f"{self.path}:{self.line}:{self.col + 1}"
        return f"{place}: {self.code} ({self.severity}) {self.message}\n    Fix: {self.fix}"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "severity": self.severity}


# --- the AST helpers ------------------------------------------------------------------------------


def _name(node: ast.AST | None) -> str:
    """The last identifier of a Name/Attribute chain (`pl.LightningModule` -> 'LightningModule')."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.Call):
        return _name(node.func)
    return ""


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return node.id if isinstance(node, ast.Name) else "?"


def _is_self(node: ast.AST) -> bool:
    return isinstance(node, ast.Name) and node.id == "self"


def _kwarg(call: ast.Call, name: str) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def _has_star_kwargs(call: ast.Call) -> bool:
    return any(k.arg is None for k in call.keywords)


def _walk_own(node: ast.AST) -> Iterator[ast.AST]:
    """ast.walk without descending into nested functions, lambdas or classes."""
    stack = list(ast.iter_child_nodes(node))
    while stack:
        child = stack.pop()
        yield child
        if not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
            stack.extend(ast.iter_child_nodes(child))


def _methods(cls: ast.ClassDef) -> Iterator[ast.FunctionDef | ast.AsyncFunctionDef]:
    return (n for n in cls.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)))


def _falls_through(body: list[ast.stmt]) -> bool:
    """Whether execution can reach the end of `body` (so a function would return None)."""
    return all(_stmt_falls_through(stmt) for stmt in body)


def _stmt_falls_through(stmt: ast.stmt) -> bool:
    if isinstance(stmt, (ast.Return, ast.Raise)):
        return False
    if isinstance(stmt, ast.If):
        return _falls_through(stmt.body) or _falls_through(stmt.orelse)
    if isinstance(stmt, (ast.With, ast.AsyncWith)):
        return _falls_through(stmt.body)
    if isinstance(stmt, ast.Try) or type(stmt).__name__ == "TryStar":
        if stmt.finalbody and not _falls_through(stmt.finalbody):
            return False
        return _falls_through(stmt.body + stmt.orelse) or any(_falls_through(h.body) for h in stmt.handlers)
    if isinstance(stmt, ast.While):  # `while True:` without break never falls through
        infinite = isinstance(stmt.test, ast.Constant) and stmt.test.value is True
        return not infinite or any(isinstance(n, ast.Break) for n in _walk_own(stmt))
    if isinstance(stmt, ast.Match):
        irrefutable = any(isinstance(c.pattern, ast.MatchAs) and c.pattern.pattern is None and c.guard is None
                          for c in stmt.cases)
        return not irrefutable or any(_falls_through(c.body) for c in stmt.cases)
    return True


def _is_main_guard(stmt: ast.stmt) -> bool:
    """`if __name__ == "__main__":`"""
    return isinstance(stmt, ast.If) and isinstance(stmt.test, ast.Compare) and _name(stmt.test.left) == "__name__"


def _device_kind(node: ast.AST) -> str | None:
    """'fixed' for a literal accelerator ('cuda', torch.device('cuda')), 'variable' for a device
    variable (`device`, `args.device`), None when the argument is not a device to worry about
    (a dtype, `self.device`, another tensor's `.device`, 'cpu')."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return "fixed" if node.value.lower().startswith(_ACCELERATOR_STRINGS) else None
    if isinstance(node, ast.Call) and _name(node.func) == "device" and node.args:
        return _device_kind(node.args[0]) or ("variable" if not isinstance(node.args[0], ast.Constant) else None)
    if isinstance(node, ast.Name):
        return "variable" if "device" in node.id.lower() or node.id.lower() in ("dev", "gpu") else None
    if isinstance(node, ast.Attribute):
        if node.attr == "device":  # self.device or x.device follow the module/batch; cfg.device does not
            owner = _name(node.value)
            return "variable" if owner.lower() in _CONFIG_NAMES else None
        return "variable" if "device" in node.attr.lower() else None
    return None


# --- one file -------------------------------------------------------------------------------------


class FileChecker:
    """Runs every rule over one parsed file and collects the findings."""

    def __init__(self, tree: ast.Module, path: str) -> None:
        self.tree, self.path = tree, path
        self.findings: list[Finding] = []
        classes = [n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)]
        self.by_name = {c.name: c for c in classes}
        self.modules = self._subclasses(classes, "LightningModule")
        self.datamodules = self._subclasses(classes, "LightningDataModule")
        self.disk_datasets = self._disk_dataset_names(classes)

    def _subclasses(self, classes: list[ast.ClassDef], base: str) -> list[ast.ClassDef]:
        """Classes deriving from `base`, directly or through a class of this file."""
        found: dict[str, ast.ClassDef] = {}
        changed = True
        while changed:
            changed = False
            for cls in classes:
                if cls.name not in found and any(_name(b) == base or _name(b) in found for b in cls.bases):
                    found[cls.name] = cls
                    changed = True
        return list(found.values())

    def add(self, code: str, node: ast.AST, message: str, fix: str) -> None:
        self.findings.append(Finding(code, self.path, getattr(node, "lineno", 1), getattr(node, "col_offset", 0),
                                     message, fix))

    def run(self) -> list[Finding]:
        for cls in self.modules:
            self._check_module(cls)
        for cls in self.datamodules:
            self._check_init(cls)
        self._check_layout()
        self._check_dataloaders()
        return self.findings

    # --- LightningModule classes ------------------------------------------------------------
    def _automatic(self, cls: ast.ClassDef) -> bool | None:
        """True/False from `self.automatic_optimization = ...` in the class or its same-file
        bases; True when never set; None when set to something not a constant."""
        chain, seen = [cls], set()
        while chain:
            current = chain.pop()
            seen.add(current.name)
            for node in ast.walk(current):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(
                    node, ast.AnnAssign) else []
                if any(_name(t) == "automatic_optimization" for t in targets) and node.value is not None:
                    value = node.value
                    return value.value if isinstance(value, ast.Constant) and isinstance(value.value, bool) else None
            chain += [self.by_name[_name(b)] for b in current.bases if _name(b) in self.by_name
                      and _name(b) not in seen]
        return True

    def _check_module(self, cls: ast.ClassDef) -> None:
        self._check_init(cls)
        automatic = self._automatic(cls)
        methods = {m.name: m for m in _methods(cls)}
        for method in methods.values():
            self._check_devices(cls, method)
            if method.name in _STEP_METHODS:
                self._check_factories(method)
            if automatic is True:
                self._check_automatic_calls(method)
            elif automatic is False:
                self._check_manual_calls(method)
        step = methods.get("training_step")
        if step is not None and automatic is True:
            self._check_training_step_returns(cls, step)
        if step is not None:
            self._check_kept_graphs(step)
        if "forward" in methods:
            for node in _walk_own(methods["forward"]):
                if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and _is_self(node.func.value) \
                        and node.func.attr in ("log", "log_dict"):
                    self.add("FM402", node, f"self.{node.func.attr} in {cls.name}.forward: forward also runs for "
                             "inference, outside any Trainer, where there is nothing to log to.",
                             "log in training_step/validation_step, which call self(x).")
        if automatic is False and step is not None and not self._calls_anywhere(cls, "manual_backward") \
                and not self._calls_anywhere(cls, "backward"):
            self.add("FM303", step, f"{cls.name} sets automatic_optimization = False but never calls "
                     "self.manual_backward, so no gradients are computed.",
                     "in training_step: opt = self.optimizers(); opt.zero_grad(); self.manual_backward(loss); "
                     "opt.step().")
        for method in methods.values():  # one finding per method is enough to make the point
            data = [n for n in _walk_own(method) if self._is_data_call(n)]
            if data:
                first = min(data, key=lambda n: (n.lineno, n.col_offset))
                self.add("FM502", first, f"{_name(first.func)}(...) in {cls.name}.{method.name}: data code in the "
                         "model class ties the model to one dataset.", "move datasets and loaders into a "
                         "LightningDataModule in data.py and pass it with trainer.fit(model, datamodule=dm).")

    def _check_init(self, cls: ast.ClassDef) -> None:
        init = next((m for m in _methods(cls) if m.name == "__init__"), None)
        if init is None:
            return
        for node in ast.walk(init):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "__init__":
                receiver = node.func.value
                if isinstance(receiver, ast.Call) and _name(receiver.func) == "super":
                    return
                if node.args and _is_self(node.args[0]):  # Base.__init__(self, ...)
                    return
        self.add("FM401", init, f"{cls.name}.__init__ does not call super().__init__(), so the module has no "
                 "parameters registry, hooks or hparams.", "make `super().__init__()` the first line of __init__.")

    def _check_devices(self, cls: ast.ClassDef, method: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        if method.name == "transfer_batch_to_device":  # moving the batch to `device` is that hook's job
            return
        where = f"{cls.name}.{method.name}"
        fix = ("let the Trainer place the module and batches; create tensors with device=self.device or "
               "x.new_zeros(...)/torch.zeros_like(x), or register constants with self.register_buffer(...).")
        for node in _walk_own(method):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            if isinstance(func, ast.Attribute) and func.attr == "cuda" and not _dotted(func).startswith("torch.cuda"):
                self.add("FM101", node, f".cuda() in {where} pins this code to one GPU; it breaks CPU, "
                         "MPS and multi-device runs.", fix)
                continue
            targets = []
            if isinstance(func, ast.Attribute) and func.attr == "to":
                targets = node.args[:1] + [k.value for k in node.keywords if k.arg == "device"]
            elif _kwarg(node, "device") is not None:
                targets = [_kwarg(node, "device")]
            for target in targets:
                kind = _device_kind(target)
                if kind == "fixed":
                    self.add("FM101", node, f"a hard-coded device ({ast.unparse(target)}) in {where} breaks "
                             "CPU, MPS and multi-device runs.", fix)
                elif kind == "variable":
                    self.add("FM102", node, f"a device variable ({ast.unparse(target)}) in {where}: under "
                             "several devices each process has its own device, and it is not this one.",
                             "use self.device (or x.device of the batch) instead, or let the Trainer move data.")

    def _check_factories(self, method: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        moved = {id(n.func.value) for n in _walk_own(method) if isinstance(n, ast.Call)
                 and isinstance(n.func, ast.Attribute) and n.func.attr in ("to", "type_as", "cuda")}
        for node in _walk_own(method):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and _dotted(node.func.value) == "torch" and node.func.attr in _FACTORIES):
                continue
            if id(node) in moved or _kwarg(node, "device") is not None or _kwarg(node, "out") is not None:
                continue
            if node.func.attr in ("tensor", "as_tensor") and node.args and isinstance(node.args[0], ast.Constant):
                continue  # a 0-dim CPU tensor combines with tensors on any device
            self.add("FM103", node, f"torch.{node.func.attr}(...) in {method.name} is created on the CPU while "
                     "the batch may be on a GPU.", "pass device=self.device (or x.device), or build it from the "
                     "batch (x.new_zeros(...), torch.randn_like(x), .type_as(x)); register constants once with "
                     "self.register_buffer.")

    def _check_training_step_returns(self, cls: ast.ClassDef, step: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        if _falls_through(step.body):
            self.add("FM201", step, f"{cls.name}.training_step can end without returning the loss, so that batch "
                     "is skipped: no backward, no optimizer step.",
                     "end training_step with `return loss` (return None explicitly only to skip a batch on purpose).")
        for node in _walk_own(step):
            if isinstance(node, ast.Return) and node.value is not None:
                problem = self._not_a_loss(node.value)
                if problem:
                    self.add("FM202", node, f"{cls.name}.training_step returns {problem}; the Trainer needs the "
                             "loss tensor with its graph to run backward.",
                             "return the loss tensor itself, or a dict {'loss': loss, ...}; log other values with "
                             "self.log.")

    @staticmethod
    def _not_a_loss(value: ast.expr) -> str | None:
        text = ast.unparse(value)
        if isinstance(value, ast.Call):
            if isinstance(value.func, ast.Attribute) and value.func.attr in ("item", "tolist", "numpy", "detach"):
                return f"`{text}` (no graph left)"
            if isinstance(value.func, ast.Name) and value.func.id in _PLAIN_VALUE_CALLS:
                return f"`{text}` (a Python number)"
        if isinstance(value, ast.Constant) and value.value is not None:
            return f"the constant {text}"
        if isinstance(value, (ast.Tuple, ast.List)):
            return f"a {type(value).__name__.lower()} (`{text}`)"
        if isinstance(value, ast.Dict) and all(isinstance(k, ast.Constant) for k in value.keys) \
                and "loss" not in [k.value for k in value.keys]:
            return f"a dict without a 'loss' key (`{text}`)"
        return None

    def _check_automatic_calls(self, method: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        allowed = {"zero_grad": {"optimizer_zero_grad", "optimizer_step"}, "backward": {"backward"},
                   "step": {"optimizer_step", "lr_scheduler_step"}}
        for node in _walk_own(method):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            verb, receiver = node.func.attr, node.func.value
            if verb == "manual_backward" and _is_self(receiver):
                self.add("FM301", node, f"self.manual_backward in {method.name}, but automatic optimization is on: "
                         "it raises at runtime, and the Trainer would run backward on the returned loss again.",
                         "set `self.automatic_optimization = False` in __init__, or return the loss and drop this call.")
                continue
            if verb not in allowed or method.name in allowed[verb]:
                continue
            if verb == "step":
                owner = _name(receiver).lower()
                if "opt" not in owner or "sched" in owner:  # only optimizers; schedulers/EMAs are not this rule
                    continue
            self.add("FM301", node, f"`{ast.unparse(node)}` in {method.name}: under automatic optimization the "
                     "Trainer already calls zero_grad, backward and step, so this one runs twice or out of order.",
                     "return the loss from training_step and delete this call, or set "
                     "`self.automatic_optimization = False` in __init__ and use self.manual_backward.")

    def _check_manual_calls(self, method: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        if method.name == "backward":
            return
        for node in _walk_own(method):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "backward" \
                    and not _dotted(node.func).startswith("torch.autograd"):
                self.add("FM302", node, f"`{ast.unparse(node)}` in {method.name}: under manual optimization "
                         "backward must go through the Trainer (precision scaling, several devices).",
                         f"self.manual_backward({ast.unparse(node.func.value)}).")

    def _calls_anywhere(self, cls: ast.ClassDef, attr: str) -> bool:
        classes = [cls] + [self.by_name[_name(b)] for b in cls.bases if _name(b) in self.by_name]
        return any(isinstance(n, ast.Call) and _name(n.func) == attr for c in classes for n in ast.walk(c))

    def _check_kept_graphs(self, step: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        """`self.losses.append(loss)` in training_step keeps every step's graph alive."""
        carries: set[str] = set()

        def has_graph(expr: ast.AST) -> bool:
            nodes = list(ast.walk(expr))
            if any(isinstance(n, ast.Compare) or (isinstance(n, ast.Call) and _name(n.func) in _NO_GRAPH_CALLS
                                                  | _PLAIN_VALUE_CALLS) for n in nodes):
                return False
            return any((isinstance(n, ast.Name) and n.id in carries)
                       or (isinstance(n, ast.Call) and (_is_self(n.func) or (isinstance(n.func, ast.Attribute)
                           and _is_self(n.func.value) and not n.func.attr.startswith("log")))) for n in nodes)

        for node in sorted(_walk_own(step), key=lambda n: (getattr(n, "lineno", 0), getattr(n, "col_offset", 0))):
            if isinstance(node, ast.Assign) and has_graph(node.value):
                carries |= {n.id for t in node.targets for n in ast.walk(t) if isinstance(n, ast.Name)}
            stored = None
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in (
                    "append", "extend", "insert") and isinstance(node.func.value, ast.Attribute) \
                    and _is_self(node.func.value.value) and node.args:
                stored = node.args[-1]
            elif isinstance(node, ast.Assign) and any(
                    isinstance(t, ast.Subscript) and isinstance(t.value, ast.Attribute) and _is_self(t.value.value)
                    for t in node.targets):
                stored = node.value
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and _is_self(node.func.value) \
                    and node.func.attr == "log":
                value = node.args[1] if len(node.args) > 1 else _kwarg(node, "value")
                if isinstance(value, (ast.List, ast.Tuple, ast.Dict)) and has_graph(value):
                    self.add("FM403", node, f"`{ast.unparse(node)}` logs a {type(value).__name__.lower()} of tensors: "
                             "self.log takes one scalar, and a container keeps the tensors' graphs alive.",
                             "log each value with its own name, or several at once with self.log_dict({...}).")
            if stored is not None and has_graph(stored):
                self.add("FM403", node, f"`{ast.unparse(node)}` keeps the autograd graph of every step (and its "
                         "activations) alive: memory grows each batch.",
                         f"store `{ast.unparse(stored)}.detach()` (or .item() at epoch end), or log it with self.log.")

    @staticmethod
    def _is_data_call(node: ast.AST) -> bool:
        if not isinstance(node, ast.Call):
            return False
        called = _name(node.func)
        return called == "DataLoader" or called.endswith("Dataset") or called in _DISK_DATASETS

    # --- the file as a whole ---------------------------------------------------------------------
    def _check_layout(self) -> None:
        """A Trainer built inside a LightningModule, or when the model's file is imported (top level,
        not under `if __name__ == "__main__":` and not in a function): one finding per place."""
        if not self.modules:
            return
        fix = "keep the LightningModule in model.py and build the Trainer in train.py (see `fulmen new`)."
        for cls in self.modules:
            first = self._first_trainer(list(ast.walk(cls)))
            if first is not None:
                self.add("FM501", first, f"a Trainer is constructed inside {cls.name}: the model owns its own "
                         "execution, so it cannot be trained or evaluated any other way.", fix)
        top_level = [n for stmt in self.tree.body if not isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef,
                     ast.ClassDef)) and not _is_main_guard(stmt) for n in ast.walk(stmt)]
        first = self._first_trainer(top_level)
        if first is not None:
            self.add("FM501", first, f"a Trainer is constructed when this file is imported, next to "
                     f"{self.modules[0].name}: importing the model (tests, notebooks) starts a run.", fix)

    @staticmethod
    def _first_trainer(nodes: list[ast.AST]) -> ast.Call | None:
        calls = [n for n in nodes if isinstance(n, ast.Call) and _name(n.func) == "Trainer"]
        return min(calls, key=lambda n: (n.lineno, n.col_offset)) if calls else None

    def _disk_dataset_names(self, classes: list[ast.ClassDef]) -> set[str]:
        """Names that build a dataset read from disk: the known dataset classes, classes of this
        file whose __getitem__ reads files, and variables assigned from either."""
        names = set(_DISK_DATASETS)
        for cls in classes:
            getitem = next((m for m in _methods(cls) if m.name == "__getitem__"), None)
            if getitem is not None and any(isinstance(n, ast.Call) and _name(n.func) in _FILE_READERS
                                           for n in ast.walk(getitem)):
                names.add(cls.name)
        for node in ast.walk(self.tree):
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call) and self._is_disk(node.value, names):
                names |= {_name(t) for t in node.targets}
        return names

    @staticmethod
    def _is_disk(node: ast.AST, names: set[str]) -> bool:
        if isinstance(node, ast.Call):
            called = _name(node.func)
            return called in names or called.endswith("Folder") or _dotted(node.func).startswith("datasets.")
        return _name(node) in names

    def _check_dataloaders(self) -> None:
        scopes = [n for n in ast.walk(self.tree) if isinstance(n, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef))]
        for scope in scopes:
            for node in _walk_own(scope):
                if isinstance(node, ast.Call) and _name(node.func) == "DataLoader":
                    self._check_dataloader(node, getattr(scope, "name", ""))

    def _check_dataloader(self, call: ast.Call, function: str) -> None:
        dataset = call.args[0] if call.args else _kwarg(call, "dataset")
        if _kwarg(call, "num_workers") is None and not _has_star_kwargs(call) and dataset is not None \
                and self._is_disk(dataset, self.disk_datasets):
            self.add("FM601", call, f"DataLoader over a dataset read from disk ({ast.unparse(dataset)}) without "
                     "num_workers: every sample is read and decoded in the training process while the model waits.",
                     "pass num_workers=N (a few per GPU, e.g. min(8, os.cpu_count())) and persistent_workers=True.")
        shuffle = _kwarg(call, "shuffle")
        if isinstance(shuffle, ast.Constant) and shuffle.value is True:
            evaluation = function in ("val_dataloader", "test_dataloader", "predict_dataloader") or (
                dataset is not None and re.search(r"val|test|eval|predict", ast.unparse(dataset), re.I))
            if evaluation:
                self.add("FM602", call, "shuffle=True on evaluation data: metrics do not change, but the order of "
                         "predictions and per-batch logs does, and runs stop being comparable.",
                         "use shuffle=False for validation, test and predict loaders.")
