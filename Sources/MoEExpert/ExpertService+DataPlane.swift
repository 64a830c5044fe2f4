import GRPCCore
import MoECore
import MoEDataPlane
import MoEProto
import MoEServing
import MoEWire
import Synchronization

extension ExpertService {
    /// `moemesh.v1.Expert` on a data-plane server: `Compute`, `ComputeStream` (each message a call, answered as it
    /// finishes), `DescribeExperts` and `Prefetch`, each served through `calls` (span, counters, deadline).
    public func dataPlaneMethods(calls: DataPlaneCalls) -> [String: DataPlaneMethod] {
        Dictionary(
            uniqueKeysWithValues: [
                calls.unary("/moemesh.v1.Expert/Compute") { (request: Moemesh_V1_ComputeRequest, _) in
                    try await self.compute(request)
                },
                calls.unary("/moemesh.v1.Expert/DescribeExperts") { (_: Moemesh_V1_DescribeExpertsRequest, _) in
                    self.describe()
                },
                calls.unary("/moemesh.v1.Expert/Prefetch") {
                    (request: Moemesh_V1_PrefetchRequest, _) -> Moemesh_V1_PrefetchResponse in
                    let loading = try self.prefetch(
                        request.experts.map { ExpertAddress(layer: $0.layer, expert: Int($0.expert)) })
                    return .with { $0.loading = loading.map(Moemesh_V1_ExpertKey.init) }
                },
                (
                    "/moemesh.v1.Expert/ComputeStream",
                    .bidirectionalStream { _, stream in
                        let cancellations = KeyedSignal<UInt64>(remembering: true)
                        return DataPlaneCallStream<Moemesh_V1_ComputeStreamRequest, Moemesh_V1_ComputeStreamResponse>(
                            stream: stream,
                            refusal: { message, error in
                                .with {
                                    $0.callID = message.callID
                                    $0.error = Moemesh_V1_CallError(error)
                                }
                            },
                            start: { message in
                                guard !message.cancel else {
                                    cancellations.signal(message.callID)
                                    return nil
                                }
                                return {
                                    await self.streamedAnswer(message, cancellations: cancellations, calls: calls)
                                }
                            })
                    }
                ),
            ])
    }
}
