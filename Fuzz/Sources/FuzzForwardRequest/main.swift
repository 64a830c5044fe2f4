import CFuzzerDriver
import Dispatch
#if canImport(Glibc)
    import Glibc
#endif
import MoECore
import MoEInProcess
import MoEModel
import MoEProto
import MoERuntime
import MoEWire
import Synchronization

/// A `ForwardRequest` as the router receives it, through the router's own steps on the in-process mesh: decoded
/// and validated (`decodeInput`), routed under one of several policies (the input's first byte picks it), dispatched
/// to the experts, combined. The model is `MOEMESH_FUZZ_MODEL` (default: the golden Qwen2-MoE fixture, which has a
/// shared expert and two shards). A request must be answered (a finite `[T, H]` output, one row per token) or
/// refused with an `InputError` or `RoutingError`.
func fuzzForwardRequest(_ start: UnsafePointer<UInt8>, _ count: Int) -> CInt {
    guard count >= 1 else { return 0 }
    let policies = FuzzedMesh.shared.policies
    let policy = policies[Int(start[0]) % policies.count]
    guard
        let request = try? Moemesh_V1_ForwardRequest(
            serializedBytes: Array(UnsafeBufferPointer(start: start + 1, count: count - 1))),
        let moe = FuzzedMesh.shared.meshes[policy],
        let pipeline = moe.pipelines[request.layer],
        let (rows, routing) = try? request.decodeInput(hiddenSize: pipeline.spec.hiddenSize)
    else { return 0 }
    let outcome = waitFor { try await pipeline.forward(rows.matrix, request: routing, executor: moe.executor) }
    switch outcome {
    case .success(let result):
        precondition(result.output.rows == rows.matrix.rows && result.output.columns == rows.matrix.columns)
    case .failure(let error):
        precondition(error is RoutingError, "unexpected error \(error)")
    }
    return 0
}

/// The model loaded once, with one in-process mesh per routing policy.
private struct FuzzedMesh: Sendable {
    static let shared = FuzzedMesh()

    let policies: [String] = [
        "model", "noisy", "hash", "expert-choice", "capacity-spill", "capacity-drop", "masked", "top-2", "hierarchical",
    ]
    let meshes: [String: InProcessMoE]

    init() {
        let path = getenv("MOEMESH_FUZZ_MODEL").map { String(cString: $0) } ?? "Tests/Fixtures/golden/qwen2_moe-f32"
        let checkpoint: MoECheckpoint
        do { checkpoint = try MoECheckpoint(path: path) } catch {
            fatalError("MOEMESH_FUZZ_MODEL: cannot load \(path): \(error)")
        }
        var meshes: [String: InProcessMoE] = [:]
        for name in self.policies {
            let policy: RoutingPolicy
            switch name {
            case "noisy": policy = RoutingPolicy(strategy: .noisyTopK(noiseStd: 0.5), seed: 7)
            case "hash": policy = RoutingPolicy(strategy: .hash)
            case "expert-choice": policy = RoutingPolicy(strategy: .expertChoice(capacityFactor: 1))
            case "capacity-spill": policy = RoutingPolicy(capacity: CapacityLimit(factor: 1, overflow: .spill))
            case "capacity-drop": policy = RoutingPolicy(capacity: CapacityLimit(factor: 0.5, overflow: .drop))
            case "masked": policy = RoutingPolicy(maskedExperts: [0])
            case "top-2": policy = RoutingPolicy(strategy: .topTwo(secondExpert: .random), seed: 7)
            case "hierarchical":
                policy = RoutingPolicy(strategy: .hierarchical(.init(groups: 2, keptGroups: 1, groupScore: .max)))
            default: policy = .model
            }
            meshes[name] = try! InProcessMoE(checkpoint: checkpoint, policy: { _ in policy })
        }
        self.meshes = meshes
    }
}

/// Runs async work to completion from libFuzzer's synchronous callback.
private func waitFor<T: Sendable>(_ work: @escaping @Sendable () async throws -> T) -> Result<T, any Error> {
    let outcome = Mutex<Result<T, any Error>?>(nil)
    let done = DispatchSemaphore(value: 0)
    Task {
        let result: Result<T, any Error>
        do { result = .success(try await work()) } catch { result = .failure(error) }
        outcome.withLock { $0 = result }
        done.signal()
    }
    done.wait()
    return outcome.withLock { $0! }
}

exit(moemesh_run_fuzzer(CommandLine.argc, CommandLine.unsafeArgv) { data, size in fuzzForwardRequest(data!, size) })
