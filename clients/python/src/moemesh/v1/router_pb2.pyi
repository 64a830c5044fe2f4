from moemesh.v1 import tensor_pb2 as _tensor_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ForwardRequest(_message.Message):
    __slots__ = ("layer", "hidden_states", "return_routing", "token_ids", "noise_seed", "return_balance", "request_id", "timeout_ms")
    LAYER_FIELD_NUMBER: _ClassVar[int]
    HIDDEN_STATES_FIELD_NUMBER: _ClassVar[int]
    RETURN_ROUTING_FIELD_NUMBER: _ClassVar[int]
    TOKEN_IDS_FIELD_NUMBER: _ClassVar[int]
    NOISE_SEED_FIELD_NUMBER: _ClassVar[int]
    RETURN_BALANCE_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    layer: str
    hidden_states: _tensor_pb2.Tensor
    return_routing: bool
    token_ids: _containers.RepeatedScalarFieldContainer[int]
    noise_seed: int
    return_balance: bool
    request_id: int
    timeout_ms: int
    def __init__(self, layer: _Optional[str] = ..., hidden_states: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ..., return_routing: _Optional[bool] = ..., token_ids: _Optional[_Iterable[int]] = ..., noise_seed: _Optional[int] = ..., return_balance: _Optional[bool] = ..., request_id: _Optional[int] = ..., timeout_ms: _Optional[int] = ...) -> None: ...

class Routing(_message.Message):
    __slots__ = ("top_k", "topk_ids", "topk_weights", "residual_weights")
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    TOPK_IDS_FIELD_NUMBER: _ClassVar[int]
    TOPK_WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    RESIDUAL_WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    top_k: int
    topk_ids: _containers.RepeatedScalarFieldContainer[int]
    topk_weights: _containers.RepeatedScalarFieldContainer[float]
    residual_weights: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, top_k: _Optional[int] = ..., topk_ids: _Optional[_Iterable[int]] = ..., topk_weights: _Optional[_Iterable[float]] = ..., residual_weights: _Optional[_Iterable[float]] = ...) -> None: ...

class BalanceStats(_message.Message):
    __slots__ = ("layer", "tokens", "tokens_per_expert", "routed_fraction", "mean_probability", "aux_loss", "z_loss", "balancedness", "dropped_slots", "dead_experts")
    LAYER_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    TOKENS_PER_EXPERT_FIELD_NUMBER: _ClassVar[int]
    ROUTED_FRACTION_FIELD_NUMBER: _ClassVar[int]
    MEAN_PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    AUX_LOSS_FIELD_NUMBER: _ClassVar[int]
    Z_LOSS_FIELD_NUMBER: _ClassVar[int]
    BALANCEDNESS_FIELD_NUMBER: _ClassVar[int]
    DROPPED_SLOTS_FIELD_NUMBER: _ClassVar[int]
    DEAD_EXPERTS_FIELD_NUMBER: _ClassVar[int]
    layer: str
    tokens: int
    tokens_per_expert: _containers.RepeatedScalarFieldContainer[int]
    routed_fraction: _containers.RepeatedScalarFieldContainer[float]
    mean_probability: _containers.RepeatedScalarFieldContainer[float]
    aux_loss: float
    z_loss: float
    balancedness: float
    dropped_slots: int
    dead_experts: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, layer: _Optional[str] = ..., tokens: _Optional[int] = ..., tokens_per_expert: _Optional[_Iterable[int]] = ..., routed_fraction: _Optional[_Iterable[float]] = ..., mean_probability: _Optional[_Iterable[float]] = ..., aux_loss: _Optional[float] = ..., z_loss: _Optional[float] = ..., balancedness: _Optional[float] = ..., dropped_slots: _Optional[int] = ..., dead_experts: _Optional[_Iterable[int]] = ...) -> None: ...

class ForwardResponse(_message.Message):
    __slots__ = ("output", "routing", "balance", "rerouted_experts", "request_id", "error")
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    ROUTING_FIELD_NUMBER: _ClassVar[int]
    BALANCE_FIELD_NUMBER: _ClassVar[int]
    REROUTED_EXPERTS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    output: _tensor_pb2.Tensor
    routing: Routing
    balance: BalanceStats
    rerouted_experts: _containers.RepeatedScalarFieldContainer[int]
    request_id: int
    error: _tensor_pb2.CallError
    def __init__(self, output: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ..., routing: _Optional[_Union[Routing, _Mapping]] = ..., balance: _Optional[_Union[BalanceStats, _Mapping]] = ..., rerouted_experts: _Optional[_Iterable[int]] = ..., request_id: _Optional[int] = ..., error: _Optional[_Union[_tensor_pb2.CallError, _Mapping]] = ...) -> None: ...

class DescribeModelRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class MoELayer(_message.Message):
    __slots__ = ("name", "num_experts", "top_k", "shared_expert", "gate_probe")
    NAME_FIELD_NUMBER: _ClassVar[int]
    NUM_EXPERTS_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    SHARED_EXPERT_FIELD_NUMBER: _ClassVar[int]
    GATE_PROBE_FIELD_NUMBER: _ClassVar[int]
    name: str
    num_experts: int
    top_k: int
    shared_expert: bool
    gate_probe: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, name: _Optional[str] = ..., num_experts: _Optional[int] = ..., top_k: _Optional[int] = ..., shared_expert: _Optional[bool] = ..., gate_probe: _Optional[_Iterable[float]] = ...) -> None: ...

class DescribeModelResponse(_message.Message):
    __slots__ = ("model_type", "hidden_size", "layers", "routing", "expert_precisions")
    MODEL_TYPE_FIELD_NUMBER: _ClassVar[int]
    HIDDEN_SIZE_FIELD_NUMBER: _ClassVar[int]
    LAYERS_FIELD_NUMBER: _ClassVar[int]
    ROUTING_FIELD_NUMBER: _ClassVar[int]
    EXPERT_PRECISIONS_FIELD_NUMBER: _ClassVar[int]
    model_type: str
    hidden_size: int
    layers: _containers.RepeatedCompositeFieldContainer[MoELayer]
    routing: str
    expert_precisions: _containers.RepeatedCompositeFieldContainer[ExpertPrecisionReplicas]
    def __init__(self, model_type: _Optional[str] = ..., hidden_size: _Optional[int] = ..., layers: _Optional[_Iterable[_Union[MoELayer, _Mapping]]] = ..., routing: _Optional[str] = ..., expert_precisions: _Optional[_Iterable[_Union[ExpertPrecisionReplicas, _Mapping]]] = ...) -> None: ...

class ExpertPrecisionReplicas(_message.Message):
    __slots__ = ("layer", "expert", "precision", "replicas")
    LAYER_FIELD_NUMBER: _ClassVar[int]
    EXPERT_FIELD_NUMBER: _ClassVar[int]
    PRECISION_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    layer: str
    expert: int
    precision: str
    replicas: int
    def __init__(self, layer: _Optional[str] = ..., expert: _Optional[int] = ..., precision: _Optional[str] = ..., replicas: _Optional[int] = ...) -> None: ...

class GetBalanceRequest(_message.Message):
    __slots__ = ("layer", "reset")
    LAYER_FIELD_NUMBER: _ClassVar[int]
    RESET_FIELD_NUMBER: _ClassVar[int]
    layer: str
    reset: bool
    def __init__(self, layer: _Optional[str] = ..., reset: _Optional[bool] = ...) -> None: ...

class GetBalanceResponse(_message.Message):
    __slots__ = ("layers",)
    LAYERS_FIELD_NUMBER: _ClassVar[int]
    layers: _containers.RepeatedCompositeFieldContainer[BalanceStats]
    def __init__(self, layers: _Optional[_Iterable[_Union[BalanceStats, _Mapping]]] = ...) -> None: ...
