/// A binary min-heap of timed events; events at the same time come out in the order they went in.
struct EventQueue<Payload> {
    private var entries: [(time: Double, order: Int, payload: Payload)] = []
    private var pushed = 0

    var isEmpty: Bool { self.entries.isEmpty }

    /// The earliest event, left in place.
    var first: (time: Double, payload: Payload)? { self.entries.first.map { ($0.time, $0.payload) } }

    mutating func push(_ payload: Payload, at time: Double) {
        self.entries.append((time, self.pushed, payload))
        self.pushed += 1
        var child = self.entries.count - 1
        while child > 0 {
            let parent = (child - 1) / 2
            guard self.before(child, parent) else { break }
            self.entries.swapAt(child, parent)
            child = parent
        }
    }

    mutating func pop() -> (time: Double, payload: Payload)? {
        guard let last = self.entries.popLast() else { return nil }
        guard !self.entries.isEmpty else { return (last.time, last.payload) }
        let first = self.entries[0]
        self.entries[0] = last
        var parent = 0
        while true {
            let left = 2 * parent + 1, right = left + 1
            var smallest = parent
            if left < self.entries.count && self.before(left, smallest) { smallest = left }
            if right < self.entries.count && self.before(right, smallest) { smallest = right }
            guard smallest != parent else { break }
            self.entries.swapAt(parent, smallest)
            parent = smallest
        }
        return (first.time, first.payload)
    }

    private func before(_ a: Int, _ b: Int) -> Bool {
        let (x, y) = (self.entries[a], self.entries[b])
        return x.time != y.time ? x.time < y.time : x.order < y.order
    }
}

/// A first-in, first-out queue of integers that reuses its storage.
struct IntQueue {
    private var items: [Int] = []
    private var head = 0

    var isEmpty: Bool { self.head == self.items.count }
    var count: Int { self.items.count - self.head }

    mutating func append(_ item: Int) { self.items.append(item) }

    mutating func popFirst() -> Int? {
        guard self.head < self.items.count else { return nil }
        let item = self.items[self.head]
        self.head += 1
        if self.head > 1024 && self.head * 2 > self.items.count {
            self.items.removeFirst(self.head)
            self.head = 0
        }
        return item
    }
}
