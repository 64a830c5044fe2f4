from moemesh.v1 import tensor_pb2 as _tensor_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ComputeRequest(_message.Message):
    __slots__ = ("layer", "expert", "rows", "experts", "row_counts")
    LAYER_FIELD_NUMBER: _ClassVar[int]
    EXPERT_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    EXPERTS_FIELD_NUMBER: _ClassVar[int]
    ROW_COUNTS_FIELD_NUMBER: _ClassVar[int]
    layer: str
    expert: int
    rows: _tensor_pb2.Tensor
    experts: _containers.RepeatedScalarFieldContainer[int]
    row_counts: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, layer: _Optional[str] = ..., expert: _Optional[int] = ..., rows: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ..., experts: _Optional[_Iterable[int]] = ..., row_counts: _Optional[_Iterable[int]] = ...) -> None: ...

class ComputeResponse(_message.Message):
    __slots__ = ("rows",)
    ROWS_FIELD_NUMBER: _ClassVar[int]
    rows: _tensor_pb2.Tensor
    def __init__(self, rows: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ...) -> None: ...

class ComputeStreamRequest(_message.Message):
    __slots__ = ("call_id", "compute", "cancel", "timeout_ms", "metadata")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    COMPUTE_FIELD_NUMBER: _ClassVar[int]
    CANCEL_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    call_id: int
    compute: ComputeRequest
    cancel: bool
    timeout_ms: int
    metadata: _containers.ScalarMap[str, str]
    def __init__(self, call_id: _Optional[int] = ..., compute: _Optional[_Union[ComputeRequest, _Mapping]] = ..., cancel: _Optional[bool] = ..., timeout_ms: _Optional[int] = ..., metadata: _Optional[_Mapping[str, str]] = ...) -> None: ...

class ComputeStreamResponse(_message.Message):
    __slots__ = ("call_id", "compute", "error")
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    COMPUTE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    call_id: int
    compute: ComputeResponse
    error: _tensor_pb2.CallError
    def __init__(self, call_id: _Optional[int] = ..., compute: _Optional[_Union[ComputeResponse, _Mapping]] = ..., error: _Optional[_Union[_tensor_pb2.CallError, _Mapping]] = ...) -> None: ...

class DescribeExpertsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ExpertKey(_message.Message):
    __slots__ = ("layer", "expert")
    LAYER_FIELD_NUMBER: _ClassVar[int]
    EXPERT_FIELD_NUMBER: _ClassVar[int]
    layer: str
    expert: int
    def __init__(self, layer: _Optional[str] = ..., expert: _Optional[int] = ...) -> None: ...

class DescribeExpertsResponse(_message.Message):
    __slots__ = ("model_type", "hidden_size", "intermediate_size", "experts", "cache", "precisions", "gate_probes")
    MODEL_TYPE_FIELD_NUMBER: _ClassVar[int]
    HIDDEN_SIZE_FIELD_NUMBER: _ClassVar[int]
    INTERMEDIATE_SIZE_FIELD_NUMBER: _ClassVar[int]
    EXPERTS_FIELD_NUMBER: _ClassVar[int]
    CACHE_FIELD_NUMBER: _ClassVar[int]
    PRECISIONS_FIELD_NUMBER: _ClassVar[int]
    GATE_PROBES_FIELD_NUMBER: _ClassVar[int]
    model_type: str
    hidden_size: int
    intermediate_size: int
    experts: _containers.RepeatedCompositeFieldContainer[ExpertKey]
    cache: ExpertCacheStats
    precisions: _containers.RepeatedCompositeFieldContainer[ExpertPrecision]
    gate_probes: _containers.RepeatedCompositeFieldContainer[GateProbe]
    def __init__(self, model_type: _Optional[str] = ..., hidden_size: _Optional[int] = ..., intermediate_size: _Optional[int] = ..., experts: _Optional[_Iterable[_Union[ExpertKey, _Mapping]]] = ..., cache: _Optional[_Union[ExpertCacheStats, _Mapping]] = ..., precisions: _Optional[_Iterable[_Union[ExpertPrecision, _Mapping]]] = ..., gate_probes: _Optional[_Iterable[_Union[GateProbe, _Mapping]]] = ...) -> None: ...

class GateProbe(_message.Message):
    __slots__ = ("layer", "values")
    LAYER_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    layer: str
    values: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, layer: _Optional[str] = ..., values: _Optional[_Iterable[float]] = ...) -> None: ...

class ExpertPrecision(_message.Message):
    __slots__ = ("expert", "precision")
    EXPERT_FIELD_NUMBER: _ClassVar[int]
    PRECISION_FIELD_NUMBER: _ClassVar[int]
    expert: ExpertKey
    precision: str
    def __init__(self, expert: _Optional[_Union[ExpertKey, _Mapping]] = ..., precision: _Optional[str] = ...) -> None: ...

class ExpertCacheStats(_message.Message):
    __slots__ = ("hits", "misses", "evictions", "load_seconds", "resident_bytes", "resident_experts", "budget_bytes", "prefetches")
    HITS_FIELD_NUMBER: _ClassVar[int]
    MISSES_FIELD_NUMBER: _ClassVar[int]
    EVICTIONS_FIELD_NUMBER: _ClassVar[int]
    LOAD_SECONDS_FIELD_NUMBER: _ClassVar[int]
    RESIDENT_BYTES_FIELD_NUMBER: _ClassVar[int]
    RESIDENT_EXPERTS_FIELD_NUMBER: _ClassVar[int]
    BUDGET_BYTES_FIELD_NUMBER: _ClassVar[int]
    PREFETCHES_FIELD_NUMBER: _ClassVar[int]
    hits: int
    misses: int
    evictions: int
    load_seconds: float
    resident_bytes: int
    resident_experts: int
    budget_bytes: int
    prefetches: int
    def __init__(self, hits: _Optional[int] = ..., misses: _Optional[int] = ..., evictions: _Optional[int] = ..., load_seconds: _Optional[float] = ..., resident_bytes: _Optional[int] = ..., resident_experts: _Optional[int] = ..., budget_bytes: _Optional[int] = ..., prefetches: _Optional[int] = ...) -> None: ...

class PrefetchRequest(_message.Message):
    __slots__ = ("experts",)
    EXPERTS_FIELD_NUMBER: _ClassVar[int]
    experts: _containers.RepeatedCompositeFieldContainer[ExpertKey]
    def __init__(self, experts: _Optional[_Iterable[_Union[ExpertKey, _Mapping]]] = ...) -> None: ...

class PrefetchResponse(_message.Message):
    __slots__ = ("loading",)
    LOADING_FIELD_NUMBER: _ClassVar[int]
    loading: _containers.RepeatedCompositeFieldContainer[ExpertKey]
    def __init__(self, loading: _Optional[_Iterable[_Union[ExpertKey, _Mapping]]] = ...) -> None: ...
