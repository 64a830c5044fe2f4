"""A client of a MoEMesh router: `Client(target).forward(layer, hidden)` runs one MoE layer on the mesh."""
from __future__ import annotations

import itertools
import queue
import threading
from concurrent.futures import Future
from dataclasses import dataclass, field
from types import EllipsisType
from typing import Any, Generic, Iterator, Literal, Optional, Sequence, TypeVar, Union, overload

import grpc
import numpy as np
import numpy.typing as npt

from moemesh.v1 import router_pb2, router_pb2_grpc, tensor_pb2

try:  # torch is optional: numpy arrays work without it
    import torch

    HAS_TORCH = True
except ImportError:  # pragma: no cover - exercised only where torch is absent
    HAS_TORCH = False

# What `forward` takes and gives back: a numpy array, or a torch tensor (then on the same device and in the same
# dtype as given).
Array = Union[npt.NDArray[Any], "torch.Tensor"]
A = TypeVar("A", npt.NDArray[Any], "torch.Tensor")
# A call's `timeout`: seconds, None for no deadline, or left out (`...`) for the client's.
Timeout = Union[float, None, EllipsisType]
Metadata = tuple[tuple[str, str], ...]

# Messages of prefill batches are large: match the router's 256 MiB limit.
_MESSAGE_LIMIT = 256 << 20
# Reconnection after the router went away (a restart, a rolling update): tried again after 0.1 s, then backing off to
# at most 1 s between tries (gRPC's defaults grow to 120 s, so a client could wait minutes for a router back in 1 s).
_RECONNECT_BACKOFF_MS = (100, 1000)


class MoEMeshError(Exception):
    """A call the mesh refused or could not serve: the gRPC status code and the server's message."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message


@dataclass(frozen=True)
class TLS:
    """TLS for the channel: `ca` verifies the server (PEM bytes or a path); `cert` and `key` are the client's own
    certificate for mutual TLS."""

    ca: Optional[Union[str, bytes]] = None
    cert: Optional[Union[str, bytes]] = None
    key: Optional[Union[str, bytes]] = None

    def credentials(self) -> grpc.ChannelCredentials:
        def read(value: Union[str, bytes, None]) -> Optional[bytes]:
            if value is None or isinstance(value, bytes):
                return value
            with open(value, "rb") as file:
                return file.read()

        if (self.cert is None) != (self.key is None):
            raise ValueError("TLS: give both cert and key (mutual TLS), or neither")
        return grpc.ssl_channel_credentials(
            root_certificates=read(self.ca), private_key=read(self.key), certificate_chain=read(self.cert))


@dataclass(frozen=True)
class Layer:
    name: str
    num_experts: int
    top_k: int
    shared_expert: bool
    # The gate applied to the fixed probe vector (`moemesh.fingerprint.gate_probe`), `[num_experts]`: what tells
    # this model's weights from another's of the same shape. Empty from a router that does not send it.
    gate_probe: tuple[float, ...] = ()


@dataclass(frozen=True)
class ModelDescription:
    model_type: str
    hidden_size: int
    layers: list[Layer]
    routing: str
    # (layer, expert) → {precision ("f32", "bf16", "int8", "fp8"): live replicas storing the expert so}; the shared
    # expert is expert -1.
    precisions: dict[tuple[str, int], dict[str, int]] = field(default_factory=dict)


@dataclass(frozen=True)
class Routing:
    """Token t went to experts `ids[t]` with weights `weights[t]` (`[T, k]`; an id of -1 is a slot that went to no
    expert); `residual[t]` weighs the token's own hidden state (Switch's dropped tokens), or None."""

    ids: npt.NDArray[np.int32]
    weights: npt.NDArray[np.float32]
    residual: Optional[npt.NDArray[np.float32]]


@dataclass(frozen=True)
class ForwardResult(Generic[A]):
    """`forward(..., return_routing=True)`: the output (the kind of array given) and the routing."""

    output: A
    routing: Routing


_WIRE = {  # dtype name → (wire dtype, bytes per element, numpy storage type)
    "float32": (tensor_pb2.DTYPE_F32, 4, np.float32),
    "bfloat16": (tensor_pb2.DTYPE_BF16, 2, np.uint16),
    "float16": (tensor_pb2.DTYPE_F16, 2, np.float16),
}


# How to give an answer back: ("numpy", dtype, None) or ("torch", dtype, device).
_Back = tuple[str, Any, Any]


def encode(hidden: Array) -> tuple[tensor_pb2.Tensor, _Back]:
    """`hidden` ([T, H] or [B, S, H]; f32, bf16 or f16; numpy or torch) as a wire tensor, and how to decode the
    answer back into the same kind of array."""
    back: _Back
    if HAS_TORCH and isinstance(hidden, torch.Tensor):
        name = str(hidden.dtype).removeprefix("torch.")
        if name not in _WIRE:
            raise TypeError(f"hidden: expected a tensor of float32, bfloat16 or float16, got {hidden.dtype}")
        wire, _, storage = _WIRE[name]
        values = hidden.detach().to("cpu").contiguous()
        data = (values.view(torch.int16) if name == "bfloat16" else values).numpy().tobytes()
        shape = list(hidden.shape)
        back = ("torch", hidden.dtype, hidden.device)
    elif isinstance(hidden, np.ndarray):
        name = hidden.dtype.name
        if name not in ("float32", "float16"):
            raise TypeError(
                f"hidden: expected a numpy array of float32 or float16 (bf16: pass a torch tensor), got {hidden.dtype}")
        wire = _WIRE[name][0]
        data = np.ascontiguousarray(hidden).tobytes()
        shape = list(hidden.shape)
        back = ("numpy", hidden.dtype, None)
    else:
        raise TypeError(f"hidden: expected a numpy array or a torch tensor, got {type(hidden).__name__}")
    if len(shape) not in (2, 3):
        raise ValueError(f"hidden: expected shape [T, H] or [B, S, H], got {shape}")
    return tensor_pb2.Tensor(dtype=wire, shape=shape, data=data), back


def decode(tensor: tensor_pb2.Tensor, back: _Back) -> Array:
    """A wire tensor as the kind of array `encode` was given."""
    shape = tuple(tensor.shape)
    kind, dtype, device = back
    values: npt.NDArray[Any]
    if tensor.dtype == tensor_pb2.DTYPE_F32:
        values = np.frombuffer(tensor.data, np.float32)
    elif tensor.dtype == tensor_pb2.DTYPE_F16:
        values = np.frombuffer(tensor.data, np.float16)
    elif tensor.dtype == tensor_pb2.DTYPE_BF16:
        values = np.frombuffer(tensor.data, np.int16)
    else:
        raise MoEMeshError(grpc.StatusCode.INTERNAL, f"answer: unexpected dtype {tensor.dtype}")
    values = values.reshape(shape)
    if kind == "numpy":
        return values.copy()
    out = torch.from_numpy(values.copy())
    if tensor.dtype == tensor_pb2.DTYPE_BF16:
        out = out.view(torch.bfloat16)
    return out.to(device=device, dtype=dtype)


def _routing(message: router_pb2.Routing, tokens: int) -> Routing:
    k = max(1, message.top_k)
    residual = np.array(message.residual_weights, np.float32) if message.residual_weights else None
    return Routing(
        ids=np.array(message.topk_ids, np.int32).reshape(tokens, k),
        weights=np.array(message.topk_weights, np.float32).reshape(tokens, k),
        residual=residual)


def _error(error: grpc.RpcError) -> MoEMeshError:
    return MoEMeshError(error.code(), error.details() or "")


class Client:
    """A router of a mesh. `forward` sends one MoE layer's hidden states and returns the layer's output in the same
    shape, dtype and kind (numpy or torch) as given. Errors come back as `MoEMeshError` with the gRPC status.

    `token`: sent as `authorization: Bearer TOKEN` with every call. `tls`: a `TLS` (plaintext when None).
    `timeout`: each call's deadline, in seconds (a call's own `timeout=` overrides it). `stream`: carry `forward`
    calls over one `ForwardStream` (the router's streaming API; unary calls when False, or when the router has none).
    `wait_for_ready`: a call made while the router cannot be reached (restarting, not up yet) waits, within its
    deadline, for the connection instead of failing UNAVAILABLE at once; the channel tries to reconnect every 0.1 s
    at first, backing off to 1 s."""

    def __init__(
        self, target: str, token: Optional[str] = None, tls: Optional[TLS] = None, *,
        timeout: Optional[float] = 60.0, stream: bool = True, wait_for_ready: bool = False,
    ):
        options = [
            ("grpc.max_send_message_length", _MESSAGE_LIMIT), ("grpc.max_receive_message_length", _MESSAGE_LIMIT),
            ("grpc.initial_reconnect_backoff_ms", _RECONNECT_BACKOFF_MS[0]),
            ("grpc.min_reconnect_backoff_ms", _RECONNECT_BACKOFF_MS[0]),
            ("grpc.max_reconnect_backoff_ms", _RECONNECT_BACKOFF_MS[1]),
        ]
        self.target = target
        self._channel = (
            grpc.secure_channel(target, tls.credentials(), options=options) if tls is not None
            else grpc.insecure_channel(target, options=options))
        self._stub = router_pb2_grpc.RouterStub(self._channel)
        self._metadata = (("authorization", f"Bearer {token}"),) if token else None
        self._timeout = timeout
        self._wait_for_ready = wait_for_ready
        self._use_stream = stream
        self._session: Optional[_StreamSession] = None
        self._closed = False
        self._lock = threading.Lock()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Ends the client's stream and connection; a call after it raises `MoEMeshError` (CANCELLED)."""
        with self._lock:
            session, self._session = self._session, None
            self._closed = True
        if session is not None:
            session.close()
        self._channel.close()

    def _check_open(self) -> None:
        if self._closed:
            raise MoEMeshError(grpc.StatusCode.CANCELLED, f"the client of {self.target} is closed")

    def describe(self, *, timeout: Timeout = ...) -> ModelDescription:
        """The model the router serves: its type, hidden size and MoE layers."""
        self._check_open()
        try:
            reply = self._stub.DescribeModel(
                router_pb2.DescribeModelRequest(), timeout=self._deadline(timeout), metadata=self._metadata,
                wait_for_ready=self._wait_for_ready)
        except grpc.RpcError as error:
            raise _error(error) from None
        except ValueError as error:  # grpc's "Cannot invoke RPC on closed channel!"
            raise MoEMeshError(grpc.StatusCode.CANCELLED, str(error)) from None
        precisions: dict[tuple[str, int], dict[str, int]] = {}
        for entry in reply.expert_precisions:
            precisions.setdefault((entry.layer, entry.expert), {})[entry.precision] = entry.replicas
        return ModelDescription(
            model_type=reply.model_type, hidden_size=reply.hidden_size, routing=reply.routing,
            layers=[
                Layer(layer.name, layer.num_experts, layer.top_k, layer.shared_expert, tuple(layer.gate_probe))
                for layer in reply.layers],
            precisions=precisions)

    @overload
    def forward(
        self, layer: Union[str, int], hidden: A, *, return_routing: Literal[False] = False,
        token_ids: Optional[Sequence[int]] = None, timeout: Timeout = ...,
    ) -> A: ...

    @overload
    def forward(
        self, layer: Union[str, int], hidden: A, *, return_routing: Literal[True],
        token_ids: Optional[Sequence[int]] = None, timeout: Timeout = ...,
    ) -> ForwardResult[A]: ...

    def forward(
        self, layer: Union[str, int], hidden: A, *, return_routing: bool = False,
        token_ids: Optional[Sequence[int]] = None, timeout: Timeout = ...,
    ) -> Union[A, ForwardResult[A]]:
        """Layer `layer` (its name, "0", or its number, 0) on `hidden` ([T, H] or [B, S, H]). Returns the output,
        or a `ForwardResult` with the routing when `return_routing`. `timeout`: this call's deadline in seconds
        (the client's when not given; None: none)."""
        if isinstance(layer, bool) or not isinstance(layer, (str, int)):
            raise TypeError(f"layer: expected a layer name (str) or number (int), got {type(layer).__name__}")
        self._check_open()
        tensor, back = encode(hidden)
        request = router_pb2.ForwardRequest(
            layer=str(layer), hidden_states=tensor, return_routing=return_routing, token_ids=list(token_ids or []))
        reply = self._call(request, self._deadline(timeout))
        output: A = decode(reply.output, back)  # type: ignore[assignment]  # the kind `encode` was given
        if not return_routing:
            return output
        tokens = int(np.prod(tensor.shape[:-1]))
        return ForwardResult(output=output, routing=_routing(reply.routing, tokens))

    def _deadline(self, timeout: Timeout) -> Optional[float]:
        """A call's timeout: its own when given (`...`: not given), else the client's."""
        return self._timeout if isinstance(timeout, EllipsisType) else timeout

    def _call(self, request: router_pb2.ForwardRequest, timeout: Optional[float]) -> router_pb2.ForwardResponse:
        if self._use_stream:
            session = self._stream_session()
            try:
                return session.call(request, timeout)
            except _StreamUnavailable:
                self._use_stream = False  # a router without ForwardStream: unary from now on
        try:
            return self._stub.Forward(
                request, timeout=timeout, metadata=self._metadata, wait_for_ready=self._wait_for_ready)
        except grpc.RpcError as error:
            raise _error(error) from None
        except ValueError as error:  # grpc's "Cannot invoke RPC on closed channel!"
            raise MoEMeshError(grpc.StatusCode.CANCELLED, str(error)) from None

    def _stream_session(self) -> "_StreamSession":
        with self._lock:
            if self._closed:
                raise MoEMeshError(grpc.StatusCode.CANCELLED, f"the client of {self.target} is closed")
            if self._session is None or self._session.broken:
                self._session = _StreamSession(self._stub, self._metadata, self._wait_for_ready)
            return self._session


class _StreamUnavailable(Exception):
    """The router does not offer ForwardStream."""


class _StreamSession:
    """One long-lived `ForwardStream`: requests tagged with ids, answers matched to them (they may come out of
    order)."""

    def __init__(self, stub: router_pb2_grpc.RouterStub, metadata: Optional[Metadata], wait_for_ready: bool):
        self._requests: "queue.Queue[Optional[router_pb2.ForwardRequest]]" = queue.Queue()
        self._pending: dict[int, Future[router_pb2.ForwardResponse]] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self.broken = False
        # Why the stream ended: given to calls made after it (a router refusing the stream at once, e.g. for a
        # missing token, may do so before the first call is registered).
        self._failure: Exception = MoEMeshError(grpc.StatusCode.UNAVAILABLE, "the stream to the router is closed")
        self._responses = stub.ForwardStream(self._outgoing(), metadata=metadata, wait_for_ready=wait_for_ready)
        self._reader = threading.Thread(target=self._read, name="moemesh-forward-stream", daemon=True)
        self._reader.start()

    def _outgoing(self) -> Iterator[router_pb2.ForwardRequest]:
        while (request := self._requests.get()) is not None:
            yield request

    def _read(self) -> None:
        try:
            for answer in self._responses:
                with self._lock:
                    future = self._pending.pop(answer.request_id, None)
                if future is not None:
                    future.set_result(answer)
            failure: Exception = MoEMeshError(grpc.StatusCode.UNAVAILABLE, "the router ended the stream")
        except grpc.RpcError as error:
            failure = (
                _StreamUnavailable() if error.code() == grpc.StatusCode.UNIMPLEMENTED else _error(error))
        with self._lock:
            self.broken = True
            self._failure = failure
            pending, self._pending = self._pending, {}
        for future in pending.values():
            future.set_exception(failure)

    def call(self, request: router_pb2.ForwardRequest, timeout: Optional[float]) -> router_pb2.ForwardResponse:
        future: Future[router_pb2.ForwardResponse] = Future()
        with self._lock:
            if self.broken:
                raise self._failure
            request_id = next(self._ids)
            self._pending[request_id] = future
        request.request_id = request_id
        if timeout is not None:
            request.timeout_ms = max(1, int(timeout * 1000))
        self._requests.put(request)
        try:
            # The router answers DEADLINE_EXCEEDED within timeout_ms; the margin covers the trip.
            answer = future.result(timeout=None if timeout is None else timeout + 5)
        except TimeoutError:
            with self._lock:
                self._pending.pop(request_id, None)
            raise MoEMeshError(grpc.StatusCode.DEADLINE_EXCEEDED, f"no answer within {timeout} s") from None
        if answer.HasField("error"):
            raise MoEMeshError(_status(answer.error.code), answer.error.message)
        return answer

    def close(self) -> None:
        self._requests.put(None)
        self._responses.cancel()  # type: ignore[no-untyped-call]  # grpc-stubs leaves Call.cancel untyped


def _status(code: int) -> grpc.StatusCode:
    for status in grpc.StatusCode:
        if status.value[0] == code:
            return status
    return grpc.StatusCode.UNKNOWN
