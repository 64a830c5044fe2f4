import GRPCCore
import MoEDataPlane
import MoEProto
import MoEServing
import MoEWire

extension RouterService {
    /// `moemesh.v1.Router` on a data-plane server: `Forward`, `ForwardStream` (each message a call, answered as it
    /// finishes, tagged with its `request_id`), `DescribeModel` and `GetBalance`, each served through `calls`.
    public func dataPlaneMethods(calls: DataPlaneCalls) -> [String: DataPlaneMethod] {
        // A streamed request is counted and traced as a unary Forward.
        let forward = calls.method("moemesh.v1.Router/Forward")
        return Dictionary(
            uniqueKeysWithValues: [
                calls.unary("/moemesh.v1.Router/Forward") { (request: Moemesh_V1_ForwardRequest, _) in
                    try await self.forward(request)
                },
                calls.unary("/moemesh.v1.Router/DescribeModel") { (_: Moemesh_V1_DescribeModelRequest, _) in
                    self.describe()
                },
                calls.unary("/moemesh.v1.Router/GetBalance") { (request: Moemesh_V1_GetBalanceRequest, _) in
                    try self.balance(request)
                },
                (
                    "/moemesh.v1.Router/ForwardStream",
                    .bidirectionalStream { context, stream in
                        DataPlaneCallStream<Moemesh_V1_ForwardRequest, Moemesh_V1_ForwardResponse>(
                            stream: stream,
                            refusal: { message, error in
                                .with {
                                    $0.requestID = message.requestID
                                    $0.error = Moemesh_V1_CallError(error)
                                }
                            },
                            start: { message in
                                .later {
                                    await self.streamedAnswer(
                                        message, metadata: context.metadata, calls: calls, method: forward)
                                }
                            })
                    }
                ),
            ])
    }

    /// One streamed request's answer, or its error, tagged with its id: served as a unary `Forward` is
    /// (`DataPlaneCalls.serve`: span, counters), under the message's own deadline (`timeout_ms`).
    func streamedAnswer(
        _ message: Moemesh_V1_ForwardRequest, metadata: Metadata, calls: DataPlaneCalls,
        method: DataPlaneCalls.Method
    ) async -> Moemesh_V1_ForwardResponse {
        var answer: Moemesh_V1_ForwardResponse
        do {
            let deadline = RequestDeadline.after(milliseconds: message.timeoutMs)
            answer = try await calls.serve(method, metadata: metadata, deadline: deadline, streamed: true) {
                try await RequestDeadline.enforce(deadline) { try await self.forward(message) }
            }
        } catch {
            answer = Moemesh_V1_ForwardResponse()
            answer.error = Moemesh_V1_CallError(error)
        }
        answer.requestID = message.requestID
        return answer
    }
}
