import Dispatch
import MoECore
import MoEKernels
import Synchronization

/// One expert's rows in a `Compute` call (a call carries one, or several for a replica hosting several of a batch's
/// experts).
struct ExpertPart: Sendable {
    let address: ExpertAddress
    let rows: Matrix
}

/// Runs `Compute` calls off Swift's cooperative pool, in steps: a free worker takes every call waiting and runs their
/// parts together, as one grouped step where the backend has one (CUDA: a grouped GEMM per projection), else one after
/// another. At most `workers` steps run at once (CPU: one, as each already uses every BLAS thread; CUDA: one per
/// stream, so that steps overlap). Calls that arrive while every worker is busy wait for the next step, which batches
/// them: no timer, no added latency when idle.
final class ComputeSteps: Sendable {
    private struct Call {
        let id: UInt64
        let parts: [ExpertPart]
        let continuation: CheckedContinuation<Result<[Matrix], ExpertError>, Never>
    }

    private struct State {
        var waiting: [Call] = []
        var running = 0
        var nextID: UInt64 = 0
    }

    private let state = Mutex(State())
    private let workers: Int
    private let grouped: (any GroupedExpertStep)?
    private let cache: ExpertCache<ExpertAddress>
    private let queue = DispatchQueue(label: "moemesh.expert.compute", attributes: .concurrent)
    /// Announced when calls start or stop waiting for a step.
    let changes = StateChanges()

    init(backend: any ExpertBackend, cache: ExpertCache<ExpertAddress>) {
        self.workers = max(1, backend.concurrency)
        self.grouped = backend.groupedStep
        self.cache = cache
    }

    /// Calls waiting for a step (not counting those a step runs now).
    var waitingCalls: Int { self.state.withLock { $0.waiting.count } }

    /// `FFN_address(rows)` of each part, in order, or why the call failed (an expert could not be loaded, the device
    /// failed, the caller left while the call waited for a step: `cancelled`, and it is not computed).
    func run(_ parts: [ExpertPart]) async -> Result<[Matrix], ExpertError> {
        let address = parts[0].address
        let id = self.state.withLock { state in
            state.nextID &+= 1
            return state.nextID
        }
        return await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                let (startWorker, cancelled) = self.state.withLock { state -> (Bool, Bool) in
                    if Task.isCancelled { return (false, true) }
                    state.waiting.append(Call(id: id, parts: parts, continuation: continuation))
                    guard state.running < self.workers else { return (false, false) }
                    state.running += 1
                    return (true, false)
                }
                if cancelled { continuation.resume(returning: .failure(.cancelled(address))) }
                self.changes.changed()
                if startWorker { self.queue.async { self.work() } }
            }
        } onCancel: {
            let call = self.state.withLock { state -> Call? in
                guard let index = state.waiting.firstIndex(where: { $0.id == id }) else { return nil }
                return state.waiting.remove(at: index)
            }
            call?.continuation.resume(returning: .failure(.cancelled(address)))
            self.changes.changed()
        }
    }

    /// Takes a worker's slot for a call to run on the calling thread, when one is free and no call waits (a decode
    /// call on the transport's thread: no hop to a worker and back); false when the call must wait its turn (`run`).
    /// A taken slot is given back by `runReserved`.
    func reserve() -> Bool {
        self.state.withLock { state in
            guard state.waiting.isEmpty, state.running < self.workers else { return false }
            state.running += 1
            return true
        }
    }

    /// Gives back a slot `reserve` took: calls that came meanwhile then run as the next step, on a worker.
    func release() {
        let more = self.state.withLock { state in
            if state.waiting.isEmpty { state.running -= 1 }
            return !state.waiting.isEmpty
        }
        if more { self.queue.async { self.work() } }
    }

    /// `run` on this thread, in the slot `reserve` took, which it gives back.
    func runReserved(_ parts: [ExpertPart]) -> Result<[Matrix], ExpertError> {
        defer { self.release() }
        return self.kernels(for: parts).flatMap { Self.forward(parts, on: $0) }
    }

    /// The parts' kernels (loaded under a memory budget), or the first that could not be loaded.
    private func kernels(for parts: [ExpertPart]) -> Result<[any ExpertKernel], ExpertError> {
        var kernels: [any ExpertKernel] = []
        kernels.reserveCapacity(parts.count)
        for part in parts {
            do { kernels.append(try self.cache.kernel(for: part.address)) } catch {
                return .failure(.loadFailed(part.address, reason: "\(error)"))
            }
        }
        return .success(kernels)
    }

    /// Each part through its kernel, one after another.
    private static func forward(_ parts: [ExpertPart], on kernels: [any ExpertKernel]) -> Result<[Matrix], ExpertError>
    {
        var outputs: [Matrix] = []
        outputs.reserveCapacity(parts.count)
        for (part, kernel) in zip(parts, kernels) {
            do { outputs.append(try kernel.forward(part.rows)) } catch {
                return .failure(.computeFailed(part.address, reason: "\(error)"))
            }
        }
        return .success(outputs)
    }

    /// Takes every waiting call and runs it as one step, until none waits.
    private func work() {
        while true {
            let calls = self.state.withLock { state in
                let calls = state.waiting
                state.waiting = []
                if calls.isEmpty { state.running -= 1 }
                return calls
            }
            if calls.isEmpty { return }
            self.changes.changed()
            self.step(calls)
        }
    }

    private func step(_ calls: [Call]) {
        var ready: [(call: Call, kernels: [any ExpertKernel])] = []
        for call in calls {
            switch self.kernels(for: call.parts) {
            case .success(let kernels): ready.append((call, kernels))
            case .failure(let error): call.continuation.resume(returning: .failure(error))
            }
        }
        let items = ready.flatMap { item in zip(item.kernels, item.call.parts).map { (kernel: $0, rows: $1.rows) } }
        if let grouped = self.grouped, items.count > 1 {
            do {
                var outputs = try grouped.forward(items)[...]
                for item in ready {
                    item.call.continuation.resume(returning: .success(Array(outputs.prefix(item.kernels.count))))
                    outputs = outputs.dropFirst(item.kernels.count)
                }
            } catch {
                for item in ready {
                    item.call.continuation.resume(
                        returning: .failure(.computeFailed(item.call.parts[0].address, reason: "\(error)")))
                }
            }
            return
        }
        for item in ready { item.call.continuation.resume(returning: Self.forward(item.call.parts, on: item.kernels)) }
    }
}

/// A slot of the device taken for one call run on the calling thread (`ExpertService.reserveNow`): used once, or
/// given back when dropped unused.
public final class ComputeSlot: Sendable {
    private let steps: ComputeSteps
    private let used = Atomic<Bool>(false)

    init(steps: ComputeSteps) { self.steps = steps }

    /// Marks the slot used (its user gives it back); false when it already was.
    func use() -> Bool { !self.used.exchange(true, ordering: .acquiringAndReleasing) }

    deinit { if !self.used.load(ordering: .acquiring) { self.steps.release() } }
}
