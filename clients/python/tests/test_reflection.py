"""gRPC server reflection on every MoEMesh service, as grpcurl and other tools use it: the services listed, and every
message, service and method described from the server alone (grpcio-reflection's descriptor database, which asks
`grpc.reflection.v1alpha`; the same messages under `grpc.reflection.v1` asked directly)."""

import grpc
import pytest
from google.protobuf import descriptor_pool
from grpc_reflection.v1alpha import reflection_pb2
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from conftest import started_roles

SERVICES = {
    "router": "moemesh.v1.Router",
    "expert": "moemesh.v1.Expert",
    "coordinator": "moemesh.v1.Coordinator",
}


@pytest.fixture(scope="module")
def endpoints(moemesh_binary, tiny_models):
    common = ["--model", tiny_models["mixtral"], "--port", "0", "--log-level", "error"]
    with started_roles([moemesh_binary, "coordinator", "--scaler", "none", *common], ["coordinator"]) as c:
        with started_roles([moemesh_binary, "expert", *common], ["expert"]) as e:
            with started_roles([moemesh_binary, "router", "--expert", e["expert"], *common], ["router"]) as r:
                yield {"router": r["router"], "expert": e["expert"], "coordinator": c["coordinator"]}


@pytest.mark.parametrize("role", sorted(SERVICES))
def test_every_service_describes_itself(endpoints, role):
    with grpc.insecure_channel(endpoints[role]) as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        assert set(database.get_services()) == {
            SERVICES[role], "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection"}
        pool = descriptor_pool.DescriptorPool(database)
        service = pool.FindServiceByName(SERVICES[role])
        assert service.methods, f"{SERVICES[role]} has no methods"
        for method in service.methods:
            # Every request and answer type resolves, with its fields (imports such as tensor.proto included).
            assert method.input_type.fields is not None and method.output_type.full_name
        assert pool.FindServiceByName("grpc.health.v1.Health").methods_by_name["Check"]
    if role == "router":
        forward = service.methods_by_name["Forward"].input_type
        assert forward.full_name == "moemesh.v1.ForwardRequest"
        assert forward.fields_by_name["hidden_states"].message_type.full_name == "moemesh.v1.Tensor"


def test_v1_answers_and_unknown_symbols_say_what_was_expected(endpoints):
    with grpc.insecure_channel(endpoints["router"]) as channel:
        call = channel.stream_stream(
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
            response_deserializer=reflection_pb2.ServerReflectionResponse.FromString)
        requests = [
            reflection_pb2.ServerReflectionRequest(list_services=""),
            reflection_pb2.ServerReflectionRequest(file_containing_symbol="moemesh.v1.Router.Forward"),
            reflection_pb2.ServerReflectionRequest(file_containing_symbol="moemesh.v1.NoSuchThing"),
            reflection_pb2.ServerReflectionRequest(file_by_filename="moemesh/v1/nothing.proto"),
        ]
        answers = list(call(iter(requests), timeout=30))
    assert len(answers) == 4
    assert "moemesh.v1.Router" in [service.name for service in answers[0].list_services_response.service]
    files = answers[1].file_descriptor_response.file_descriptor_proto
    assert len(files) >= 2  # router.proto and the tensor.proto it imports
    assert answers[2].error_response.error_code == grpc.StatusCode.NOT_FOUND.value[0]
    assert "symbol 'moemesh.v1.NoSuchThing': expected" in answers[2].error_response.error_message
    assert "file 'moemesh/v1/nothing.proto': expected one of" in answers[3].error_response.error_message
