from moemesh.v1 import expert_pb2 as _expert_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ReplicaState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REPLICA_STATE_UNSPECIFIED: _ClassVar[ReplicaState]
    REPLICA_STATE_SERVING: _ClassVar[ReplicaState]
    REPLICA_STATE_DRAINING: _ClassVar[ReplicaState]
REPLICA_STATE_UNSPECIFIED: ReplicaState
REPLICA_STATE_SERVING: ReplicaState
REPLICA_STATE_DRAINING: ReplicaState

class RegisterRequest(_message.Message):
    __slots__ = ("endpoint", "group", "experts", "device", "model_type", "hidden_size", "instance", "unix_socket", "host_id", "precisions", "gate_probes")
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    GROUP_FIELD_NUMBER: _ClassVar[int]
    EXPERTS_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    MODEL_TYPE_FIELD_NUMBER: _ClassVar[int]
    HIDDEN_SIZE_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_FIELD_NUMBER: _ClassVar[int]
    UNIX_SOCKET_FIELD_NUMBER: _ClassVar[int]
    HOST_ID_FIELD_NUMBER: _ClassVar[int]
    PRECISIONS_FIELD_NUMBER: _ClassVar[int]
    GATE_PROBES_FIELD_NUMBER: _ClassVar[int]
    endpoint: str
    group: str
    experts: _containers.RepeatedCompositeFieldContainer[_expert_pb2.ExpertKey]
    device: str
    model_type: str
    hidden_size: int
    instance: str
    unix_socket: str
    host_id: str
    precisions: _containers.RepeatedCompositeFieldContainer[_expert_pb2.ExpertPrecision]
    gate_probes: _containers.RepeatedCompositeFieldContainer[_expert_pb2.GateProbe]
    def __init__(self, endpoint: _Optional[str] = ..., group: _Optional[str] = ..., experts: _Optional[_Iterable[_Union[_expert_pb2.ExpertKey, _Mapping]]] = ..., device: _Optional[str] = ..., model_type: _Optional[str] = ..., hidden_size: _Optional[int] = ..., instance: _Optional[str] = ..., unix_socket: _Optional[str] = ..., host_id: _Optional[str] = ..., precisions: _Optional[_Iterable[_Union[_expert_pb2.ExpertPrecision, _Mapping]]] = ..., gate_probes: _Optional[_Iterable[_Union[_expert_pb2.GateProbe, _Mapping]]] = ...) -> None: ...

class RegisterResponse(_message.Message):
    __slots__ = ("replica_id", "heartbeat_interval_ms", "lease_ms")
    REPLICA_ID_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_INTERVAL_MS_FIELD_NUMBER: _ClassVar[int]
    LEASE_MS_FIELD_NUMBER: _ClassVar[int]
    replica_id: str
    heartbeat_interval_ms: int
    lease_ms: int
    def __init__(self, replica_id: _Optional[str] = ..., heartbeat_interval_ms: _Optional[int] = ..., lease_ms: _Optional[int] = ...) -> None: ...

class ReplicaLoad(_message.Message):
    __slots__ = ("in_flight_rows", "rows_per_second", "latency_p50_ms", "latency_p99_ms", "rows_per_expert")
    IN_FLIGHT_ROWS_FIELD_NUMBER: _ClassVar[int]
    ROWS_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    LATENCY_P50_MS_FIELD_NUMBER: _ClassVar[int]
    LATENCY_P99_MS_FIELD_NUMBER: _ClassVar[int]
    ROWS_PER_EXPERT_FIELD_NUMBER: _ClassVar[int]
    in_flight_rows: int
    rows_per_second: float
    latency_p50_ms: float
    latency_p99_ms: float
    rows_per_expert: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, in_flight_rows: _Optional[int] = ..., rows_per_second: _Optional[float] = ..., latency_p50_ms: _Optional[float] = ..., latency_p99_ms: _Optional[float] = ..., rows_per_expert: _Optional[_Iterable[int]] = ...) -> None: ...

class HeartbeatRequest(_message.Message):
    __slots__ = ("replica_id", "load")
    REPLICA_ID_FIELD_NUMBER: _ClassVar[int]
    LOAD_FIELD_NUMBER: _ClassVar[int]
    replica_id: str
    load: ReplicaLoad
    def __init__(self, replica_id: _Optional[str] = ..., load: _Optional[_Union[ReplicaLoad, _Mapping]] = ...) -> None: ...

class HeartbeatResponse(_message.Message):
    __slots__ = ("known", "state")
    KNOWN_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    known: bool
    state: ReplicaState
    def __init__(self, known: _Optional[bool] = ..., state: _Optional[_Union[ReplicaState, str]] = ...) -> None: ...

class DeregisterRequest(_message.Message):
    __slots__ = ("replica_id",)
    REPLICA_ID_FIELD_NUMBER: _ClassVar[int]
    replica_id: str
    def __init__(self, replica_id: _Optional[str] = ...) -> None: ...

class DeregisterResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Replica(_message.Message):
    __slots__ = ("replica_id", "endpoint", "group", "experts", "state", "device", "instance", "unix_socket", "host_id", "precisions")
    REPLICA_ID_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    GROUP_FIELD_NUMBER: _ClassVar[int]
    EXPERTS_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_FIELD_NUMBER: _ClassVar[int]
    UNIX_SOCKET_FIELD_NUMBER: _ClassVar[int]
    HOST_ID_FIELD_NUMBER: _ClassVar[int]
    PRECISIONS_FIELD_NUMBER: _ClassVar[int]
    replica_id: str
    endpoint: str
    group: str
    experts: _containers.RepeatedCompositeFieldContainer[_expert_pb2.ExpertKey]
    state: ReplicaState
    device: str
    instance: str
    unix_socket: str
    host_id: str
    precisions: _containers.RepeatedCompositeFieldContainer[_expert_pb2.ExpertPrecision]
    def __init__(self, replica_id: _Optional[str] = ..., endpoint: _Optional[str] = ..., group: _Optional[str] = ..., experts: _Optional[_Iterable[_Union[_expert_pb2.ExpertKey, _Mapping]]] = ..., state: _Optional[_Union[ReplicaState, str]] = ..., device: _Optional[str] = ..., instance: _Optional[str] = ..., unix_socket: _Optional[str] = ..., host_id: _Optional[str] = ..., precisions: _Optional[_Iterable[_Union[_expert_pb2.ExpertPrecision, _Mapping]]] = ...) -> None: ...

class WatchTopologyRequest(_message.Message):
    __slots__ = ("router_id",)
    ROUTER_ID_FIELD_NUMBER: _ClassVar[int]
    router_id: str
    def __init__(self, router_id: _Optional[str] = ...) -> None: ...

class Topology(_message.Message):
    __slots__ = ("version", "replicas", "startable", "pruned")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    STARTABLE_FIELD_NUMBER: _ClassVar[int]
    PRUNED_FIELD_NUMBER: _ClassVar[int]
    version: int
    replicas: _containers.RepeatedCompositeFieldContainer[Replica]
    startable: _containers.RepeatedCompositeFieldContainer[_expert_pb2.ExpertKey]
    pruned: _containers.RepeatedCompositeFieldContainer[_expert_pb2.ExpertKey]
    def __init__(self, version: _Optional[int] = ..., replicas: _Optional[_Iterable[_Union[Replica, _Mapping]]] = ..., startable: _Optional[_Iterable[_Union[_expert_pb2.ExpertKey, _Mapping]]] = ..., pruned: _Optional[_Iterable[_Union[_expert_pb2.ExpertKey, _Mapping]]] = ...) -> None: ...

class ExpertDemand(_message.Message):
    __slots__ = ("expert", "rows")
    EXPERT_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    expert: _expert_pb2.ExpertKey
    rows: int
    def __init__(self, expert: _Optional[_Union[_expert_pb2.ExpertKey, _Mapping]] = ..., rows: _Optional[int] = ...) -> None: ...

class DemandReport(_message.Message):
    __slots__ = ("router_id", "demand", "interval_ms", "ejections", "links", "coactivation")
    ROUTER_ID_FIELD_NUMBER: _ClassVar[int]
    DEMAND_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_MS_FIELD_NUMBER: _ClassVar[int]
    EJECTIONS_FIELD_NUMBER: _ClassVar[int]
    LINKS_FIELD_NUMBER: _ClassVar[int]
    COACTIVATION_FIELD_NUMBER: _ClassVar[int]
    router_id: str
    demand: _containers.RepeatedCompositeFieldContainer[ExpertDemand]
    interval_ms: int
    ejections: _containers.RepeatedCompositeFieldContainer[ReplicaEjection]
    links: _containers.RepeatedCompositeFieldContainer[ReplicaLink]
    coactivation: _containers.RepeatedCompositeFieldContainer[LayerCoactivation]
    def __init__(self, router_id: _Optional[str] = ..., demand: _Optional[_Iterable[_Union[ExpertDemand, _Mapping]]] = ..., interval_ms: _Optional[int] = ..., ejections: _Optional[_Iterable[_Union[ReplicaEjection, _Mapping]]] = ..., links: _Optional[_Iterable[_Union[ReplicaLink, _Mapping]]] = ..., coactivation: _Optional[_Iterable[_Union[LayerCoactivation, _Mapping]]] = ...) -> None: ...

class LayerCoactivation(_message.Message):
    __slots__ = ("layer", "num_experts", "tokens", "pairs")
    LAYER_FIELD_NUMBER: _ClassVar[int]
    NUM_EXPERTS_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    PAIRS_FIELD_NUMBER: _ClassVar[int]
    layer: str
    num_experts: int
    tokens: int
    pairs: _containers.RepeatedCompositeFieldContainer[ExpertPairCount]
    def __init__(self, layer: _Optional[str] = ..., num_experts: _Optional[int] = ..., tokens: _Optional[int] = ..., pairs: _Optional[_Iterable[_Union[ExpertPairCount, _Mapping]]] = ...) -> None: ...

class ExpertPairCount(_message.Message):
    __slots__ = ("a", "b", "tokens")
    A_FIELD_NUMBER: _ClassVar[int]
    B_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    a: int
    b: int
    tokens: int
    def __init__(self, a: _Optional[int] = ..., b: _Optional[int] = ..., tokens: _Optional[int] = ...) -> None: ...

class ReplicaLink(_message.Message):
    __slots__ = ("endpoint", "transport")
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    TRANSPORT_FIELD_NUMBER: _ClassVar[int]
    endpoint: str
    transport: str
    def __init__(self, endpoint: _Optional[str] = ..., transport: _Optional[str] = ...) -> None: ...

class ReplicaEjection(_message.Message):
    __slots__ = ("endpoint", "reason", "duration_ms")
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    DURATION_MS_FIELD_NUMBER: _ClassVar[int]
    endpoint: str
    reason: str
    duration_ms: int
    def __init__(self, endpoint: _Optional[str] = ..., reason: _Optional[str] = ..., duration_ms: _Optional[int] = ...) -> None: ...

class DemandResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class EnsureExpertsRequest(_message.Message):
    __slots__ = ("experts", "reason")
    EXPERTS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    experts: _containers.RepeatedCompositeFieldContainer[_expert_pb2.ExpertKey]
    reason: str
    def __init__(self, experts: _Optional[_Iterable[_Union[_expert_pb2.ExpertKey, _Mapping]]] = ..., reason: _Optional[str] = ...) -> None: ...

class GetStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ReplicaStatus(_message.Message):
    __slots__ = ("replica", "load", "last_heartbeat_ms", "ejected_by", "links")
    REPLICA_FIELD_NUMBER: _ClassVar[int]
    LOAD_FIELD_NUMBER: _ClassVar[int]
    LAST_HEARTBEAT_MS_FIELD_NUMBER: _ClassVar[int]
    EJECTED_BY_FIELD_NUMBER: _ClassVar[int]
    LINKS_FIELD_NUMBER: _ClassVar[int]
    replica: Replica
    load: ReplicaLoad
    last_heartbeat_ms: int
    ejected_by: _containers.RepeatedScalarFieldContainer[str]
    links: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, replica: _Optional[_Union[Replica, _Mapping]] = ..., load: _Optional[_Union[ReplicaLoad, _Mapping]] = ..., last_heartbeat_ms: _Optional[int] = ..., ejected_by: _Optional[_Iterable[str]] = ..., links: _Optional[_Iterable[str]] = ...) -> None: ...

class ExpertGroupStatus(_message.Message):
    __slots__ = ("group", "experts", "desired_replicas", "serving_replicas", "demand_rows_per_second", "state")
    GROUP_FIELD_NUMBER: _ClassVar[int]
    EXPERTS_FIELD_NUMBER: _ClassVar[int]
    DESIRED_REPLICAS_FIELD_NUMBER: _ClassVar[int]
    SERVING_REPLICAS_FIELD_NUMBER: _ClassVar[int]
    DEMAND_ROWS_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    group: str
    experts: _containers.RepeatedCompositeFieldContainer[_expert_pb2.ExpertKey]
    desired_replicas: int
    serving_replicas: int
    demand_rows_per_second: float
    state: str
    def __init__(self, group: _Optional[str] = ..., experts: _Optional[_Iterable[_Union[_expert_pb2.ExpertKey, _Mapping]]] = ..., desired_replicas: _Optional[int] = ..., serving_replicas: _Optional[int] = ..., demand_rows_per_second: _Optional[float] = ..., state: _Optional[str] = ...) -> None: ...

class ExpertLoad(_message.Message):
    __slots__ = ("expert", "demand_rows_per_second", "serving_replicas", "pruned")
    EXPERT_FIELD_NUMBER: _ClassVar[int]
    DEMAND_ROWS_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    SERVING_REPLICAS_FIELD_NUMBER: _ClassVar[int]
    PRUNED_FIELD_NUMBER: _ClassVar[int]
    expert: _expert_pb2.ExpertKey
    demand_rows_per_second: float
    serving_replicas: int
    pruned: bool
    def __init__(self, expert: _Optional[_Union[_expert_pb2.ExpertKey, _Mapping]] = ..., demand_rows_per_second: _Optional[float] = ..., serving_replicas: _Optional[int] = ..., pruned: _Optional[bool] = ...) -> None: ...

class ScalingDecision(_message.Message):
    __slots__ = ("at_unix_ms", "group", "from_replicas", "to_replicas", "reason")
    AT_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    GROUP_FIELD_NUMBER: _ClassVar[int]
    FROM_REPLICAS_FIELD_NUMBER: _ClassVar[int]
    TO_REPLICAS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    at_unix_ms: int
    group: str
    from_replicas: int
    to_replicas: int
    reason: str
    def __init__(self, at_unix_ms: _Optional[int] = ..., group: _Optional[str] = ..., from_replicas: _Optional[int] = ..., to_replicas: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...

class CoordinatorStatus(_message.Message):
    __slots__ = ("model_type", "scaler", "autoscale", "groups", "replicas", "experts", "decisions", "replica_balancedness", "topology_version", "routers", "coactivation")
    MODEL_TYPE_FIELD_NUMBER: _ClassVar[int]
    SCALER_FIELD_NUMBER: _ClassVar[int]
    AUTOSCALE_FIELD_NUMBER: _ClassVar[int]
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    EXPERTS_FIELD_NUMBER: _ClassVar[int]
    DECISIONS_FIELD_NUMBER: _ClassVar[int]
    REPLICA_BALANCEDNESS_FIELD_NUMBER: _ClassVar[int]
    TOPOLOGY_VERSION_FIELD_NUMBER: _ClassVar[int]
    ROUTERS_FIELD_NUMBER: _ClassVar[int]
    COACTIVATION_FIELD_NUMBER: _ClassVar[int]
    model_type: str
    scaler: str
    autoscale: bool
    groups: _containers.RepeatedCompositeFieldContainer[ExpertGroupStatus]
    replicas: _containers.RepeatedCompositeFieldContainer[ReplicaStatus]
    experts: _containers.RepeatedCompositeFieldContainer[ExpertLoad]
    decisions: _containers.RepeatedCompositeFieldContainer[ScalingDecision]
    replica_balancedness: float
    topology_version: int
    routers: _containers.RepeatedScalarFieldContainer[str]
    coactivation: _containers.RepeatedCompositeFieldContainer[LayerCoactivation]
    def __init__(self, model_type: _Optional[str] = ..., scaler: _Optional[str] = ..., autoscale: _Optional[bool] = ..., groups: _Optional[_Iterable[_Union[ExpertGroupStatus, _Mapping]]] = ..., replicas: _Optional[_Iterable[_Union[ReplicaStatus, _Mapping]]] = ..., experts: _Optional[_Iterable[_Union[ExpertLoad, _Mapping]]] = ..., decisions: _Optional[_Iterable[_Union[ScalingDecision, _Mapping]]] = ..., replica_balancedness: _Optional[float] = ..., topology_version: _Optional[int] = ..., routers: _Optional[_Iterable[str]] = ..., coactivation: _Optional[_Iterable[_Union[LayerCoactivation, _Mapping]]] = ...) -> None: ...

class SetPrunedRequest(_message.Message):
    __slots__ = ("expert", "pruned")
    EXPERT_FIELD_NUMBER: _ClassVar[int]
    PRUNED_FIELD_NUMBER: _ClassVar[int]
    expert: _expert_pb2.ExpertKey
    pruned: bool
    def __init__(self, expert: _Optional[_Union[_expert_pb2.ExpertKey, _Mapping]] = ..., pruned: _Optional[bool] = ...) -> None: ...

class SetPrunedResponse(_message.Message):
    __slots__ = ("pruned",)
    PRUNED_FIELD_NUMBER: _ClassVar[int]
    pruned: _containers.RepeatedCompositeFieldContainer[_expert_pb2.ExpertKey]
    def __init__(self, pruned: _Optional[_Iterable[_Union[_expert_pb2.ExpertKey, _Mapping]]] = ...) -> None: ...

class DrainReplicaRequest(_message.Message):
    __slots__ = ("replica_id",)
    REPLICA_ID_FIELD_NUMBER: _ClassVar[int]
    replica_id: str
    def __init__(self, replica_id: _Optional[str] = ...) -> None: ...

class DrainReplicaResponse(_message.Message):
    __slots__ = ("replica",)
    REPLICA_FIELD_NUMBER: _ClassVar[int]
    replica: Replica
    def __init__(self, replica: _Optional[_Union[Replica, _Mapping]] = ...) -> None: ...

class PlannedGroup(_message.Message):
    __slots__ = ("name", "selection", "replicas")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SELECTION_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    name: str
    selection: str
    replicas: int
    def __init__(self, name: _Optional[str] = ..., selection: _Optional[str] = ..., replicas: _Optional[int] = ...) -> None: ...

class ApplyPlanRequest(_message.Message):
    __slots__ = ("groups", "timeout_seconds")
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    groups: _containers.RepeatedCompositeFieldContainer[PlannedGroup]
    timeout_seconds: int
    def __init__(self, groups: _Optional[_Iterable[_Union[PlannedGroup, _Mapping]]] = ..., timeout_seconds: _Optional[int] = ...) -> None: ...

class ApplyPlanResponse(_message.Message):
    __slots__ = ("started", "kept", "draining")
    STARTED_FIELD_NUMBER: _ClassVar[int]
    KEPT_FIELD_NUMBER: _ClassVar[int]
    DRAINING_FIELD_NUMBER: _ClassVar[int]
    started: _containers.RepeatedScalarFieldContainer[str]
    kept: _containers.RepeatedScalarFieldContainer[str]
    draining: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, started: _Optional[_Iterable[str]] = ..., kept: _Optional[_Iterable[str]] = ..., draining: _Optional[_Iterable[str]] = ...) -> None: ...
