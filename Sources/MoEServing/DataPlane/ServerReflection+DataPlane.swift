import GRPCCore
import MoEDataPlane
import MoEProto

extension ServerReflection {
    /// `ServerReflectionInfo` of both versions on a data-plane server: one response per request, in order.
    public var dataPlaneMethods: [String: DataPlaneMethod] {
        Dictionary(
            uniqueKeysWithValues: Self.methods.map { method in
                (
                    method,
                    DataPlaneMethod.bidirectionalStream { _, stream in
                        ReflectionStream(reflection: self, stream: stream)
                    }
                )
            })
    }
}

/// One `ServerReflectionInfo` call.
private struct ReflectionStream: DataPlaneStreamHandler {
    let reflection: ServerReflection
    let stream: DataPlaneServerStream

    func receive(_ message: UnsafeRawBufferPointer) {
        let request: Grpc_Reflection_V1_ServerReflectionRequest
        do {
            request = try DataPlaneCalls.decode(Grpc_Reflection_V1_ServerReflectionRequest.self, Array(message))
        } catch {
            return self.stream.finish(error)
        }
        do {
            self.stream.write(try self.reflection.answer(request).serializedBytes())
        } catch {
            self.stream.finish(
                RPCError(code: .internalError, message: "reflection: could not encode the answer: \(error)"))
        }
    }

    func inputEnded() { self.stream.finish() }

    func cancelled() {}
}
