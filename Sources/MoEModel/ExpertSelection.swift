import MoECore

/// Which experts of a model a service hosts: comma-separated `LAYER:EXPERTS` items, where LAYER is a layer name
/// or `*`, and EXPERTS is `*` (every expert, shared ones included), an index `N`, a range `A-B`, or `shared` (the
/// layer's shared expert). `*:*` hosts every expert; `*:3` hosts expert 3 of every layer.
public struct ExpertSelection: Sendable, Equatable, CustomStringConvertible {
    public struct Item: Sendable, Equatable {
        /// nil: every layer.
        public let layer: String?
        /// Routed experts chosen: nil for every one, an empty range for none.
        public let experts: Range<Int>?
        /// Whether the item names the shared expert (`shared`, or `*`).
        public let includesShared: Bool

        /// Whether the item names `address` (of a layer that has it).
        public func contains(_ address: ExpertAddress) -> Bool {
            guard self.layer == nil || self.layer == address.layer else { return false }
            return address.isShared ? self.includesShared : self.experts?.contains(address.expert) ?? true
        }
    }

    public let items: [Item]
    public let description: String

    public static let all = ExpertSelection(
        items: [Item(layer: nil, experts: nil, includesShared: true)], description: "*:*")

    init(items: [Item], description: String) {
        self.items = items
        self.description = description
    }

    /// Parses the text form; nil with a reason when it is malformed.
    public static func parse(_ text: String) -> Result<ExpertSelection, SelectionError> {
        var items: [Item] = []
        for part in text.split(separator: ",", omittingEmptySubsequences: false) {
            let fields = part.split(separator: ":", omittingEmptySubsequences: false)
            guard fields.count == 2, !fields[0].isEmpty, !fields[1].isEmpty else {
                return .failure(SelectionError(text: text, reason: "expected LAYER:EXPERTS, got '\(part)'"))
            }
            let layer = fields[0] == "*" ? nil : String(fields[0])
            let expertText = fields[1]
            var experts: Range<Int>? = nil
            if expertText == "shared" {
                items.append(Item(layer: layer, experts: 0..<0, includesShared: true))
                continue
            }
            if expertText != "*" {
                let bounds = expertText.split(separator: "-", omittingEmptySubsequences: false).map { Int($0) }
                guard (1...2).contains(bounds.count), bounds.allSatisfy({ $0 != nil && $0! >= 0 }),
                    bounds.first!! <= bounds.last!!
                else {
                    return .failure(
                        SelectionError(
                            text: text, reason: "expected *, N, A-B or shared for the experts, got '\(expertText)'"))
                }
                experts = bounds.first!!..<(bounds.last!! + 1)
            }
            items.append(Item(layer: layer, experts: experts, includesShared: experts == nil))
        }
        return .success(ExpertSelection(items: items, description: text))
    }

    /// The selected experts among `layers`.
    public func resolve(layers: [MoELayerSpec]) -> [ExpertAddress] {
        var selected = Set<ExpertAddress>()
        for item in self.items {
            for layer in layers where item.layer == nil || item.layer == layer.name {
                for address in layer.expertAddresses where item.contains(address) { selected.insert(address) }
            }
        }
        return selected.sorted()
    }
}

public struct SelectionError: Error, Sendable, Equatable, CustomStringConvertible {
    public let text: String
    public let reason: String
    /// What the text was meant to be ("expert selection", "precision").
    public var subject = "expert selection"
    public var description: String { "\(self.subject) '\(self.text)': \(self.reason)" }
}
