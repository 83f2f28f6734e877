"""`Registry`: the name -> class table behind `AcceleratorRegistry` and `StrategyRegistry`.

An entry is `{"<kind>": class, "<kind>_name": name, "description": str, "init_params": dict}`, as
in Lightning's registries, so code that reads them (`StrategyRegistry["ddp"]["strategy"]`) works.
"""

from __future__ import annotations

from typing import Any, Callable


class Registry(dict):
    """Names -> classes of one `kind` ("accelerator", "strategy"); `get(name)` builds one."""

    kind = "entry"
    duplicate_error: type[Exception] = ValueError  # what registering a taken name raises

    def register(
        self, name: str, cls: Callable | None = None, description: str = "", override: bool = False,
        **init_params: Any,
    ) -> Callable:
        """Register `cls` under `name`; used bare or as a decorator (`@Registry.register("x")`)."""
        if not isinstance(name, str):
            raise TypeError(f"A {self.kind}'s name must be a str. Received: name={name!r}. Fix: e.g. 'my_{self.kind}'.")
        if name in self and not override:
            raise self.duplicate_error(
                f"A {self.kind} is already registered under this name. Received: name={name!r}. "
                "Fix: pass override=True to replace it, or choose another name."
            )

        def do_register(cls: Callable) -> Callable:
            self[name] = {self.kind: cls, f"{self.kind}_name": name, "description": description,
                          "init_params": init_params}
            return cls

        return do_register if cls is None else do_register(cls)

    def get(self, name: str, default: Any = None) -> Any:
        """A new object for `name`, built with its registered init_params."""
        if name in self:
            data = self[name]
            return data[self.kind](**data["init_params"])
        if default is not None:
            return default
        raise KeyError(f"No {self.kind} is registered under this name. Received: name={name!r}. "
                       f"Fix: use one of {sorted(self)}.")

    def remove(self, name: str) -> None:
        self.pop(name)
