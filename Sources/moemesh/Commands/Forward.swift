import ArgumentParser
import GRPCCore
import MoECore
import MoEModel
import MoEInProcess
import MoERouter
import MoERuntime
import MoEKernels
import MoEProto
import MoEServing

struct Forward: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run one MoE layer through a router: hidden states in, layer output and routing out.",
        discussion: """
            Reads the tensor 'hidden_states' ([T, H] or [B, S, H]) from --input (and 'input_ids', if present, as the \
            token ids), or makes --random T rows. Writes 'output' (same shape), 'topk_ids' and 'topk_weights' \
            ([..., k]) to --output. With --model, computes the layer in this process instead (CPU, f32: what a mesh \
            should answer) and also writes 'router_logits' ([..., E]).
            """)

    @Option(help: "The router, HOST:PORT.")
    var router: ServiceEndpoint = ServiceEndpoint(host: "127.0.0.1", port: 50051)

    @Option(help: "MoE layer name, as in the model's tensor names (e.g. 0).")
    var layer: String

    @Option(help: "safetensors file holding 'hidden_states'.")
    var input: String?

    @Option(help: "Send T random rows instead of --input.")
    var random: Int?

    @Option(help: "Dtype of the random rows: f32, bf16 or f16.")
    var dtype: DType = .f32

    @Option(help: "Seed of the random rows.")
    var seed: UInt64 = 1

    @Option(help: "safetensors file to write (output, topk_ids, topk_weights).")
    var output: String?

    @Option(help: "Token ids, comma-separated, one per token (hash routing).")
    var tokenIds: String?

    @Flag(help: "Print the request's balance telemetry.")
    var balance = false

    @Option(help: "Compute the layer in this process from this model folder (CPU, f32) instead of calling --router.")
    var model: String?

    @Option(
        help:
            "Model folder to check the answer against: the layer is computed in this process (CPU, f32) and the relative error ‖out − ref‖ / ‖ref‖ printed; exit 1 above --tolerance."
    )
    var compareModel: String?

    @Option(help: "Largest relative error --compare-model accepts (1e-2 fits experts on a GPU in bf16).")
    var tolerance: Double = 1e-2

    func validate() throws {
        guard (self.input == nil) != (self.random == nil) else {
            throw ValidationError("give exactly one of --input FILE or --random T")
        }
        if let random = self.random, random < 1 { throw ValidationError("--random: expected T ≥ 1, got \(random)") }
        if self.model != nil && self.compareModel != nil {
            throw ValidationError("--compare-model checks a router's answer: it cannot go with --model (no router)")
        }
    }

    @OptionGroup var token: TokenOptions
    @OptionGroup var tls: TLSOptions

    func run() async throws {
        do {
            try await self.forward()
        } catch let error as RPCError {
            throw CommandFailure("router at \(self.router) answered \(error.code): \(error.message)")
        }
    }

    private func forward() async throws {
        if let modelPath = self.model {
            let checkpoint = try MoECheckpoint(path: modelPath)
            let (hidden, tokenIDs) = try await self.hiddenStates { checkpoint.hiddenSize }
            let reference = try InProcessMoE(checkpoint: checkpoint, layers: [self.layer])
            let started = ContinuousClock.now
            let result = try await reference.forward(
                layer: self.layer, hidden: hidden.matrix(), request: Self.routingRequest(hidden, tokenIDs))
            self.report(hidden: hidden, routing: result.routing, time: ContinuousClock.now - started)
            print("computed in process: OpenBLAS \(BLASKernelSet.current), \(BLAS.threadCount) threads")
            if self.balance { self.printBalance(Moemesh_V1_BalanceStats(result.balance, layer: self.layer)) }
            try self.write(
                output: try Tensor(result.output, shape: hidden.shape), routing: result.routing, hidden: hidden,
                logits: result.logits)
            return
        }
        try await RouterClient.with(
            endpoint: self.router, serving: try self.tls.appliedToClient(self.token.applied(to: ServingConfiguration()))
        ) {
            client in
            let (hidden, tokenIDs) = try await self.hiddenStates { Int(try await client.describeModel().hiddenSize) }
            let callStarted = ContinuousClock.now
            let result = try await client.forward(
                layer: self.layer, hiddenStates: hidden, tokenIDs: tokenIDs, returnBalance: self.balance)
            self.report(hidden: hidden, routing: result.routing, time: ContinuousClock.now - callStarted)
            if let stats = result.balance { self.printBalance(stats) }
            if let modelPath = self.compareModel {
                try await self.compare(result.output, hidden: hidden, tokenIDs: tokenIDs, modelPath: modelPath)
            }
            try self.write(output: result.output, routing: result.routing, hidden: hidden, logits: nil)
        }
    }

    /// The request's rows: --input's 'hidden_states' (and 'input_ids'), or --random T rows of the model's width.
    private func hiddenStates(hiddenSize: () async throws -> Int) async throws -> (Tensor, [Int64]) {
        var tokenIDs = try self.tokenIds.map(Self.parseTokenIDs) ?? []
        guard let input = self.input else {
            let tokens = self.random!, width = try await hiddenSize()
            let values = ModelSynthesizer.uniform(count: tokens * width, scale: 1.7320508, seed: self.seed)
            return (try Tensor(shape: [tokens, width], floats: values, dtype: self.dtype), tokenIDs)
        }
        let file = try SafeTensorsFile(path: input)
        guard file.entries["hidden_states"] != nil else {
            throw ValidationError(
                "\(input) has no tensor 'hidden_states'; it has: \(file.entries.keys.sorted().joined(separator: ", "))")
        }
        if tokenIDs.isEmpty, let ids = file.entries["input_ids"] {
            tokenIDs = try Self.integers(file.bytes(of: ids), dtype: ids.dtype)
        }
        return (try file.tensor("hidden_states"), tokenIDs)
    }

    private static func routingRequest(_ hidden: Tensor, _ tokenIDs: [Int64]) -> RoutingRequest {
        RoutingRequest(shape: hidden.shape, tokenIDs: tokenIDs.isEmpty ? nil : tokenIDs)
    }

    private func report(hidden: Tensor, routing: RoutingDecision?, time: Duration) {
        let tokens = hidden.shape.dropLast().reduce(1, *)
        print(
            "layer \(self.layer): \(tokens) tokens × H=\(hidden.shape.last ?? 0) (\(hidden.dtype)) in \(DecimalFormat.milliseconds(time)) ms"
        )
        if let routing {
            let used = routing.tokensPerExpert.enumerated().filter { $0.element > 0 }
            print(
                "top-\(routing.topK) routing, tokens per expert: "
                    + used.map { "\($0.offset):\($0.element)" }.joined(separator: " "))
        }
    }

    private func printBalance(_ stats: Moemesh_V1_BalanceStats) {
        print(
            "balance: aux loss \(DecimalFormat.fixed(stats.auxLoss, 4)), z-loss \(DecimalFormat.fixed(stats.zLoss, 4)), "
                + "balancedness \(DecimalFormat.fixed(stats.balancedness, 4)), dropped slots \(stats.droppedSlots), "
                + "dead experts \(stats.deadExperts.map(String.init).joined(separator: " "))")
    }

    /// Writes --output: 'output', 'topk_ids', 'topk_weights' and, when known, 'router_logits'.
    private func write(output: Tensor, routing: RoutingDecision?, hidden: Tensor, logits: Matrix?) throws {
        guard let path = self.output else { return }
        let leading = Array(hidden.shape.dropLast())
        var entries = [SafeTensorsWriter.Entry(name: "output", tensor: output)]
        if let routing {
            entries.append(.init(name: "topk_ids", int32: routing.topkIDs, shape: leading + [routing.topK]))
            entries.append(
                .init(
                    name: "topk_weights",
                    tensor: try Tensor(shape: leading + [routing.topK], floats: routing.topkWeights)))
        }
        if let logits {
            entries.append(
                .init(
                    name: "router_logits", tensor: try Tensor(shape: leading + [logits.columns], floats: logits.values))
            )
        }
        try SafeTensorsWriter.write(entries, metadata: ["layer": self.layer], to: path)
        print("wrote \(path): \(entries.map { "\($0.name) \($0.shape)" }.joined(separator: ", "))")
    }

    /// Computes the layer in process and prints (and checks) the mesh's relative error against it.
    private func compare(_ output: Tensor, hidden: Tensor, tokenIDs: [Int64], modelPath: String) async throws {
        let reference = try InProcessMoE(checkpoint: try MoECheckpoint(path: modelPath), layers: [self.layer])
        let expected = try await reference.forward(
            layer: self.layer, hidden: hidden.matrix(), request: Self.routingRequest(hidden, tokenIDs)
        ).output
        let error = Matrix(rows: expected.rows, columns: expected.columns, values: output.floats()).relativeError(
            to: expected)
        let verdict = error <= self.tolerance ? "within" : "ABOVE"
        print("relative error against the in-process reference: \(error) (\(verdict) tolerance \(self.tolerance))")
        if !(error <= self.tolerance) { throw ExitCode(1) }
    }

    static func parseTokenIDs(_ text: String) throws -> [Int64] {
        try text.split(separator: ",").map { item in
            guard let value = Int64(item.filter { !$0.isWhitespace }) else {
                throw ValidationError("--token-ids: expected comma-separated integers, got '\(item)'")
            }
            return value
        }
    }

    /// Reads an I64 or I32 tensor's values.
    static func integers(_ bytes: UnsafeRawBufferPointer, dtype: SafeTensorsDType) throws -> [Int64] {
        switch dtype {
        case .i64:
            return (0..<(bytes.count / 8)).map {
                Int64(littleEndian: bytes.loadUnaligned(fromByteOffset: $0 * 8, as: Int64.self))
            }
        case .i32:
            return (0..<(bytes.count / 4)).map {
                Int64(Int32(littleEndian: bytes.loadUnaligned(fromByteOffset: $0 * 4, as: Int32.self)))
            }
        default: throw CommandFailure("input_ids: expected I64 or I32, got \(dtype.rawValue)")
        }
    }

}
