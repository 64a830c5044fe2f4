import Testing

@testable import MoECore

@Suite("keyed signals")
struct KeyedSignalTests {
    /// Each streamed call waits on its own key while it runs; once the calls have ended, nothing is left behind
    /// (each used to leave an empty entry: ~500 bytes a request in a long-lived expert stream).
    @Test("operations that finish before their key is signalled leave nothing behind")
    func finishedOperationsLeaveNothing() async throws {
        let signal = KeyedSignal<UInt64>(remembering: true)
        for key in UInt64(1)...200 {
            let answer = try await signal.run(unless: key) { key * 2 }
            #expect(answer == key * 2)
            signal.forget(key)
        }
        #expect(signal.trackedKeys == 0)
    }

    @Test("a signal ends the operation waiting for its key, and a remembered one the next waiter")
    func signalsEndOperations() async throws {
        let signal = KeyedSignal<UInt64>(remembering: true)
        signal.signal(7)  // before anyone waits: remembered
        // An operation that ends only when cancelled: iterating a stream that is never given an element.
        let (never, keepOpen) = AsyncStream<Int>.makeStream()
        defer { keepOpen.finish() }
        let cancelled = try await signal.run(unless: 7) { () async -> Int in
            for await _ in never {}
            return 1
        }
        #expect(cancelled == nil)
        #expect(signal.trackedKeys == 0)
    }
}
