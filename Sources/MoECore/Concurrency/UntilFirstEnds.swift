/// Runs `first` and `second` at once and returns when either ends, the other cancelled and awaited: a wait bounded
/// by a time limit or a stop signal, as one structured call.
public func untilFirstEnds(
    _ first: @escaping @Sendable () async -> Void, _ second: @escaping @Sendable () async -> Void
) async {
    await withTaskGroup(of: Void.self) { group in
        group.addTask { await first() }
        group.addTask { await second() }
        await group.next()
        group.cancelAll()
    }
}
