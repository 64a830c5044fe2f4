import CoreMetrics
import GRPCCore
import InMemoryTracing
import MoECore
import MoEModel
import MoEInProcess
import MoEProto
import MoERuntime
import MoEServing
import MoETestSupport
import MoEWire
import Prometheus
import Testing
import Tracing

@Suite("metrics and traces of the services")
struct ObservabilityTests {
    static let shape = ModelSynthesizer.Shape(experts: 4, topK: 2, hiddenSize: 32, intermediateSize: 48, layers: 1)

    /// The value of one series in Prometheus text, nil if absent.
    static func value(_ text: String, _ series: String) -> Double? {
        for line in text.split(separator: "\n") where line.hasPrefix(series + " ") {
            return Double(line.dropFirst(series.count + 1))
        }
        return nil
    }

    @Test("/metrics series carry the right values after known traffic (task-local metrics factory)")
    func metricsAfterTraffic() async throws {
        let model = try SmallModel(shape: Self.shape, seed: 21)
        defer { model.remove() }
        let reference = try InProcessMoE(checkpoint: MoECheckpoint(path: model.path))
        let registry = PrometheusCollectorRegistry()
        var routed = [Int](repeating: 0, count: 4)
        try await withMetricsFactory(PrometheusMetricsFactory(registry: registry)) {
            try await withLoopbackMesh(model: model) { router, _ in
                for (index, tokens) in [3, 5, 8].enumerated() {
                    let hidden = model.randomHidden(tokens: tokens, seed: UInt64(index))
                    var request = Moemesh_V1_ForwardRequest()
                    request.layer = "0"
                    request.hiddenStates = Moemesh_V1_Tensor(hidden, dtype: .f32)
                    _ = try await router.forward(request)
                    let expected = try await reference.forward(layer: "0", hidden: hidden)
                    for id in expected.routing.topkIDs { routed[Int(id)] += 1 }
                }
                var bad = Moemesh_V1_ForwardRequest()
                bad.layer = "7"
                bad.hiddenStates = Moemesh_V1_Tensor(model.randomHidden(tokens: 1), dtype: .f32)
                await #expect(throws: RPCError.self) { _ = try await router.forward(bad) }
            }
        }
        let text = registry.emitToString()
        #expect(Self.value(text, #"moemesh_router_requests_total{layer="0"}"#) == 3)
        #expect(Self.value(text, #"moemesh_router_tokens_total{layer="0"}"#) == 16)
        #expect(Self.value(text, #"moemesh_rpc_requests_total{service="router",method="Forward"}"#) == 4)
        #expect(Self.value(text, #"moemesh_rpc_errors_total{service="router",method="Forward",code="notFound"}"#) == 1)
        // The expert's Compute calls (messages of the router's stream, counted as unary calls) on their own handle.
        #expect(Self.value(text, #"moemesh_rpc_requests_total{service="expert",method="Compute"}"#) == 3)
        #expect(Self.value(text, #"moemesh_router_request_seconds_count{layer="0"}"#) == 3)
        #expect(Self.value(text, #"moemesh_router_dropped_slots_total{layer="0"}"#) == 0)
        // One replica hosts every expert: each Forward sent it one message, whichever experts its tokens chose.
        #expect(Self.value(text, "moemesh_router_expert_messages_total") == 3)
        #expect(Self.value(text, #"moemesh_router_balancedness{layer="0"}"#).map { $0 > 0 && $0 <= 1 } == true)
        for expert in 0..<4 where routed[expert] > 0 {
            // Tokens the router sent each expert, and the rows the expert computed: both the routing's count.
            #expect(
                Self.value(text, #"moemesh_router_expert_rows_total{layer="0",expert="\#(expert)"}"#)
                    == Double(routed[expert]))
            #expect(
                Self.value(text, #"moemesh_expert_rows_total{layer="0",expert="\#(expert)"}"#) == Double(routed[expert])
            )
            #expect((Self.value(text, #"moemesh_expert_calls_total{layer="0",expert="\#(expert)"}"#) ?? 0) >= 1)
            #expect(
                (Self.value(text, #"moemesh_router_expert_call_seconds_count{layer="0",expert="\#(expert)"}"#) ?? 0)
                    >= 1)
        }
        #expect(Self.value(text, #"moemesh_expert_rows_in_flight"#) == 0)
        #expect(routed.reduce(0, +) == 32)
    }

    @Test(
        "a trace of one Forward has a server span with a child client span per expert message (one per replica), naming its experts, with the expert's server span under it"
    )
    func traceOfForward() async throws {
        let model = try SmallModel(shape: Self.shape, seed: 22)
        defer { model.remove() }
        let reference = try InProcessMoE(checkpoint: MoECheckpoint(path: model.path))
        let tracer = InMemoryTracer()
        let hidden = model.randomHidden(tokens: 6, seed: 3)
        try await withLoopbackMesh(model: model, tracer: tracer) { router, _ in
            var request = Moemesh_V1_ForwardRequest()
            request.layer = "0"
            request.hiddenStates = Moemesh_V1_Tensor(hidden, dtype: .f32)
            _ = try await router.forward(request)
        }
        let experts = Set(try await reference.forward(layer: "0", hidden: hidden).routing.topkIDs)
        let spans = tracer.finishedSpans
        let forward = try #require(spans.first { $0.operationName == "moemesh.v1.Router/Forward" })
        #expect(forward.kind == .server)
        let calls = spans.filter { $0.operationName == "moemesh.v1.Expert/Compute" && $0.kind == .client }
        // One replica hosts every expert here: the layer's experts go to it in one message.
        #expect(calls.count == 1)
        #expect(calls.allSatisfy { $0.spanContext.parentSpanID == forward.spanContext.spanID })
        #expect(calls.allSatisfy { $0.spanContext.traceID == forward.spanContext.traceID })
        let named = calls.flatMap { span -> [Int32] in
            guard case .string(let list) = span.attributes.get("moemesh.experts") else { return [] }
            return list.split(separator: ",").compactMap { Int32($0) }
        }
        #expect(Set(named) == experts && named.count == experts.count)
        // The context crossed the wire: the expert's server span is a child of its client span.
        let served = spans.filter { $0.operationName == "moemesh.v1.Expert/Compute" && $0.kind == .server }
        #expect(served.count == 1)
        #expect(Set(served.compactMap(\.spanContext.parentSpanID)) == Set(calls.map(\.spanContext.spanID)))
    }
}
