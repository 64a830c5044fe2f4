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
        // A streamed call is counted and traced as a unary Compute.
        let compute = calls.method("moemesh.v1.Expert/Compute")
        return Dictionary(
            uniqueKeysWithValues: [
                calls.unary(
                    "/moemesh.v1.Expert/Compute",
                    now: { (request: Moemesh_V1_ComputeRequest, _) -> (() throws -> Moemesh_V1_ComputeResponse)? in
                        guard let slot = self.reserveNow() else { return nil }
                        return { try self.compute(request, in: slot) }
                    },
                    later: { request, _ in try await self.compute(request) }),
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
                        // Draining, the stream serves its router until the router stops calling: the router may
                        // have no other replica yet (every one draining at once when their coordinator died).
                        return DataPlaneCallStream<Moemesh_V1_ComputeStreamRequest, Moemesh_V1_ComputeStreamResponse>(
                            stream: stream, drain: .serveUntilIdle(.seconds(1)),
                            refusal: Moemesh_V1_ComputeStreamResponse.refusing,
                            start: { message in
                                guard !message.cancel else {
                                    cancellations.signal(message.callID)
                                    return .nothing
                                }
                                if let slot = self.reserveNow() {
                                    return .now {
                                        self.streamedAnswer(message, in: slot, calls: calls, method: compute)
                                    }
                                }
                                return .later {
                                    await self.streamedAnswer(
                                        message, cancellations: cancellations, calls: calls, method: compute)
                                }
                            })
                    }
                ),
            ])
    }
}

extension ExpertService {
    /// A streamed call answered on the transport's thread, in `slot`: served as a unary `Compute` is
    /// (`DataPlaneCalls.serveNow`), its error in the answer.
    func streamedAnswer(
        _ message: Moemesh_V1_ComputeStreamRequest, in slot: ComputeSlot, calls: DataPlaneCalls,
        method: DataPlaneCalls.Method
    ) -> Moemesh_V1_ComputeStreamResponse {
        var reply = Moemesh_V1_ComputeStreamResponse()
        reply.callID = message.callID
        var metadata = Metadata()
        for (key, value) in message.metadata { metadata.addString(value, forKey: key) }
        do {
            reply.compute = try calls.serveNow(
                method, metadata: metadata,
                deadline: RequestDeadline.after(milliseconds: message.timeoutMs), streamed: true
            ) { try self.compute(message.compute, in: slot) }
        } catch {
            reply.error = Moemesh_V1_CallError(error)
        }
        return reply
    }

    /// A streamed call answered in a task of the server's (the device was busy): served as a unary `Compute` is
    /// (`DataPlaneCalls.serve`: span, counters, deadline), with the message's metadata; nil when its caller cancelled
    /// it (a `cancel` message naming it).
    func streamedAnswer(
        _ message: Moemesh_V1_ComputeStreamRequest, cancellations: KeyedSignal<UInt64>, calls: DataPlaneCalls,
        method: DataPlaneCalls.Method
    ) async -> Moemesh_V1_ComputeStreamResponse? {
        let id = message.callID
        defer { cancellations.forget(id) }
        var reply = Moemesh_V1_ComputeStreamResponse()
        reply.callID = id
        do {
            var received = Metadata()
            for (key, value) in message.metadata { received.addString(value, forKey: key) }
            let metadata = received
            let deadline = RequestDeadline.after(milliseconds: message.timeoutMs)
            let computed = try await cancellations.run(unless: id) {
                try await calls.serve(method, metadata: metadata, deadline: deadline, streamed: true) {
                    try await RequestDeadline.enforce(deadline) { try await self.compute(message.compute) }
                }
            }
            guard let computed else { return nil }
            reply.compute = computed
        } catch {
            reply.error = Moemesh_V1_CallError(error)
        }
        return reply
    }
}
