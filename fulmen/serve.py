"""Serving checks (`lightning.pytorch.serve`): the `ServableModule` interface a model implements to be
served, and the `ServableModuleValidator` callback that serves it once at the start of training and
checks that a request round-trips through it.

Lightning's validator starts a FastAPI/uvicorn server in a child process; fulmen's serves the same
two endpoints (`GET /ping`, `POST /serve` with `{"body": {...}}`) with the standard library's HTTP
server in a thread, so the check needs no extra package. `server="fastapi"` is still the one value
accepted, as in Lightning.

Example:
    >>> import torch
    >>> class Doubler(torch.nn.Module, ServableModule):
    ...     def configure_payload(self): return {"body": {"x": [1.0, 2.0]}}
    ...     def configure_serialization(self): return {"x": torch.tensor}, {"y": torch.Tensor.tolist}
    ...     def serve_step(self, x): return {"y": 2 * x}
    ...     def configure_response(self): return {"y": [2.0, 4.0]}
    >>> Doubler().serve_step(torch.tensor([1.0]))
    {'y': tensor([2.])}
"""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.error
import urllib.request
from abc import ABC, abstractmethod
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Literal

import torch

from fulmen.callbacks.callback import Callback
from fulmen.errors import MisconfigurationException
from fulmen.utilities.model_helpers import is_overridden
from fulmen.utilities.rank_zero import rank_zero_only

_log = logging.getLogger(__name__)


class ServableModule(ABC, torch.nn.Module):
    """What a model provides to be served: a sample request, the (de)serializers of its fields, the
    step that answers it, and the response expected for the sample."""

    @abstractmethod
    def configure_payload(self) -> dict[str, Any]:
        """A sample request: `{"body": {field: serialized value, ...}}`."""

    @abstractmethod
    def configure_serialization(self) -> tuple[dict[str, Callable], dict[str, Callable]]:
        """`(deserializers, serializers)`: per request field, a function turning the received value
        into the step's input; per output key, one turning the step's output into JSON."""

    @abstractmethod
    def serve_step(self, *args: torch.Tensor, **kwargs: torch.Tensor) -> dict[str, torch.Tensor]:
        """Answer one request: called with the deserialized body fields as keyword arguments, under
        `torch.no_grad()`, the model in eval mode; returns a dict of outputs."""

    @abstractmethod
    def configure_response(self) -> dict[str, Any]:
        """The response expected for `configure_payload()`'s request."""


class ServableModuleValidator(Callback):
    """At the start of `fit`, serves the model, sends it `configure_payload()` and checks the answer.

    Args:
        optimization: accepted for Lightning's signature; only None (the model as it is) is supported.
        server: "fastapi", Lightning's only value (fulmen serves the same endpoints with the standard library).
        host, port: where to listen (`port=0` picks a free port).
        timeout: seconds to wait for the server to answer `/ping`.
        exit_on_failure: raise when the request fails, instead of only recording it in `successful`.
    """

    def __init__(
        self,
        optimization: Literal["trace", "script", "onnx", "tensorrt"] | None = None,
        server: Literal["fastapi", "ml_server", "torchserve", "sagemaker"] = "fastapi",
        host: str = "127.0.0.1",
        port: int = 8080,
        timeout: int = 20,
        exit_on_failure: bool = True,
    ) -> None:
        super().__init__()
        if optimization is not None:
            raise NotImplementedError(
                f"ServableModuleValidator serves the model as it is; optimized forms are not supported. "
                f"Received: optimization={optimization!r}. Fix: leave optimization=None.")
        if server != "fastapi":
            raise NotImplementedError(
                f"ServableModuleValidator supports Lightning's 'fastapi' server only. Received: server={server!r}. "
                "Fix: leave server='fastapi'.")
        self.optimization, self.server = optimization, server
        self.host, self.port, self.timeout, self.exit_on_failure = host, port, timeout, exit_on_failure
        self.resp_status: int | None = None
        self.resp_json: Any = None

    @property
    def successful(self) -> bool | None:
        """Whether the sample request was answered (None before it was sent)."""
        return None if self.resp_status is None else self.resp_status == 200

    def state_dict(self) -> dict[str, Any]:
        return {"successful": self.successful, "optimization": self.optimization, "server": self.server}

    @rank_zero_only
    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        from fulmen.strategies import DeepSpeedStrategy, FSDPStrategy

        if isinstance(trainer.strategy, (DeepSpeedStrategy, FSDPStrategy)):
            raise MisconfigurationException(
                "ServableModuleValidator cannot serve a sharded model. "
                f"Received: strategy={type(trainer.strategy).__name__}. Fix: validate serving with a single-device run.")
        if not isinstance(pl_module, ServableModule):
            raise TypeError(
                "ServableModuleValidator needs a model that subclasses ServableModule. "
                f"Received: {type(pl_module).__name__}. Fix: add ServableModule to the model's bases.")
        for name in ("configure_payload", "configure_serialization", "serve_step"):
            if not is_overridden(name, pl_module, ServableModule):
                raise NotImplementedError(f"ServableModule.{name} must be overridden. Received: {type(pl_module).__name__}.")

        server = _serve(pl_module, self.host, self.port)
        try:
            base = f"http://{self.host}:{server.server_address[1]}"
            _wait_for_ping(base, self.timeout)
            payload = pl_module.configure_payload()
            if "body" not in payload:
                raise MisconfigurationException(
                    f"configure_payload must return a dict with a 'body' field. Received: {payload!r}. "
                    "Fix: return {'body': {field: value, ...}}.")
            self.resp_status, self.resp_json = _post(f"{base}/serve", payload)
        finally:
            server.shutdown()
            server.server_close()

        if self.successful and is_overridden("configure_response", pl_module, ServableModule):
            expected = pl_module.configure_response()
            if self.resp_json != expected:
                raise MisconfigurationException(
                    f"The served model's response differs from configure_response(). Received: {self.resp_json!r}; "
                    f"expected {expected!r}. Fix: check serve_step and the serializers, or the expected response.")
        if self.exit_on_failure and not self.successful:
            raise MisconfigurationException(
                f"The model could not be served: /serve answered {self.resp_status}. Received: {self.resp_json!r}. "
                "Fix: read the error above (a deserializer, serve_step or a serializer raised).")
        if self.successful:
            _log.info("Your model is servable; it answered %s.", self.resp_json)


def _serve(module: ServableModule, host: str, port: int) -> ThreadingHTTPServer:
    """Start the two endpoints in a daemon thread; the model answers in eval mode, without grad,
    and is put back in its previous mode after each request (it is the model being trained)."""
    deserializers, serializers = module.configure_serialization()
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:  # keep the training output clean
            pass

        def _answer(self, status: int, content: Any) -> None:
            data = json.dumps(content).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            self._answer(200, True) if self.path == "/ping" else self._answer(404, "not found")

        def do_POST(self) -> None:
            if self.path != "/serve":
                return self._answer(404, "not found")
            try:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))["body"]
                inputs = {k: deserializers[k](v) if k in deserializers else v for k, v in body.items()}
                with lock, torch.no_grad():
                    was_training = module.training
                    module.eval()
                    try:
                        output = module.serve_step(**inputs)
                    finally:
                        module.train(was_training)
                if not isinstance(output, dict):
                    raise TypeError(f"serve_step must return a dict. Received: {type(output).__name__}.")
                self._answer(200, {k: serializers[k](v) if k in serializers else v for k, v in output.items()})
            except Exception as err:  # the client sees the error; the validator decides what to do
                _log.exception("ServableModuleValidator: serving the request failed")
                self._answer(500, f"{type(err).__name__}: {err}")

    server = ThreadingHTTPServer((host, port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True, name="fulmen-serve").start()
    return server


def _wait_for_ping(base: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"{base}/ping", timeout=timeout) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise MisconfigurationException(
                f"The serving check's server did not answer within {timeout} s. Received: {base}. "
                "Fix: raise timeout= or pick a free port=.")
        time.sleep(0.05)


def _post(url: str, payload: dict[str, Any]) -> tuple[int, Any]:
    request = urllib.request.Request(url, data=json.dumps(payload).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(request) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"null")


__all__ = ["ServableModule", "ServableModuleValidator"]
