/// Waits until `condition` holds, checking it every millisecond, for at most `limit`; returns whether it held.
///
/// For a state no event announces (a queue's depth inside a library type). It orders nothing by time: the test goes on
/// as soon as the state is reached, and `limit` only turns a broken feature into a failure instead of a hang. The
/// pause between checks matters: a `Task.yield()` loop can starve lower-priority tasks of the cooperative pool,
/// among them those the test waits for.
public func eventually(within limit: Duration = .seconds(60), _ condition: () -> Bool) async -> Bool {
    let deadline = ContinuousClock.now + limit
    while !condition() {
        guard ContinuousClock.now < deadline else { return false }
        try? await Task.sleep(for: .milliseconds(1))
    }
    return true
}
