/// What a request says about its tokens beyond their hidden states.
public struct RoutingRequest: Sendable {
    /// The shape as sent (`[T, H]` or `[B, S, H]`): sequences for capacity and expert choice.
    public var shape: [Int]?
    /// Token ids (hash routing).
    public var tokenIDs: [Int64]?
    /// Seed of this request's noise (noisy top-k); nil uses the policy's.
    public var noiseSeed: UInt64?

    public init(shape: [Int]? = nil, tokenIDs: [Int64]? = nil, noiseSeed: UInt64? = nil) {
        self.shape = shape
        self.tokenIDs = tokenIDs
        self.noiseSeed = noiseSeed
    }
}
