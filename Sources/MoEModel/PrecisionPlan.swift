import MoECore

/// Which precision each hosted expert's weights are stored in: comma-separated `SELECTOR=PRECISION` items, where
/// SELECTOR is one `LAYER:EXPERTS` item of `ExpertSelection` and PRECISION is f32, bf16, int8 or fp8; later items win
/// (`'*:*=int8,0:3=bf16'`: every expert int8 except expert 3 of layer 0). A bare precision (`int8`) means `*:*=…`.
/// Experts no item names get the device's default (CPU: f32, CUDA: bf16).
public struct PrecisionPlan: Sendable, Equatable, CustomStringConvertible {
    public struct Item: Sendable, Equatable {
        public let selection: ExpertSelection
        public let precision: WeightPrecision
    }

    public let items: [Item]
    public let description: String

    /// No item: every expert at the device's default.
    public static let deviceDefault = PrecisionPlan(items: [], description: "")

    /// Parses the text form.
    public static func parse(_ text: String) -> Result<PrecisionPlan, SelectionError> {
        let precisions = WeightPrecision.allCases.map(\.rawValue).joined(separator: ", ")
        var items: [Item] = []
        for part in text.split(separator: ",", omittingEmptySubsequences: false) {
            let fields = part.split(separator: "=", omittingEmptySubsequences: false)
            let selectorText = fields.count == 1 ? "*:*" : String(fields[0])
            guard (1...2).contains(fields.count), let precision = WeightPrecision(rawValue: String(fields.last!)) else {
                return .failure(
                    SelectionError(
                        text: text,
                        reason: "expected LAYER:EXPERTS=PRECISION (PRECISION: \(precisions)), got '\(part)'",
                        subject: "precision"))
            }
            switch ExpertSelection.parse(selectorText) {
            case .success(let selection) where selection.items.count == 1:
                items.append(Item(selection: selection, precision: precision))
            case .success:
                return .failure(
                    SelectionError(
                        text: text, reason: "one LAYER:EXPERTS per item, got '\(part)'", subject: "precision"))
            case .failure(let error):
                return .failure(SelectionError(text: text, reason: error.reason, subject: "precision"))
            }
        }
        return .success(PrecisionPlan(items: items, description: text))
    }

    /// The precision the plan gives `address` (an expert of the model), or nil where no item names it.
    public func precision(of address: ExpertAddress) -> WeightPrecision? {
        self.items.last { $0.selection.items[0].contains(address) }?.precision
    }

    /// Every precision the plan names.
    public var namedPrecisions: Set<WeightPrecision> { Set(self.items.map(\.precision)) }
}
