/// How `moemesh bench` prints its results: a table for people, or one JSON object per line.
public enum BenchReport {
    public static func json(_ result: BenchResult) -> String {
        var fields: [(String, String)] = [
            ("shape", "\"\(result.name)\""), ("tokens", "\(result.tokens)"), ("clients", "\(result.clients)"),
            ("mesh_tokens_per_s", Format.fixed(result.meshTokensPerSecond, 1)),
            ("inprocess_tokens_per_s", Format.fixed(result.inprocessTokensPerSecond, 1)),
            ("ratio", Format.fixed(result.ratio, 3)),
            ("mesh_p50_us", Format.fixed(result.meshP50, 1)), ("mesh_p99_us", Format.fixed(result.meshP99, 1)),
            ("inprocess_p50_us", Format.fixed(result.inprocessP50, 1)),
            ("echo_p50_us", Format.fixed(result.echoP50, 1)),
            ("wire_bytes_per_token", Format.fixed(result.wireBytesPerToken, 1)),
            ("router_cpu_us_per_token", Format.fixed(result.routerCPUPerToken, 1)),
            ("expert_cpu_us_per_token", Format.fixed(result.expertCPUPerToken, 1)),
            ("overhead_us", Format.fixed(result.meshP50 - result.inprocessP50, 1)),
        ]
        if result.messagesPerToken > 0 {
            fields.append(("expert_messages_per_token", Format.fixed(result.messagesPerToken, 2)))
            fields.append(("experts_per_token", "\(result.expertsPerToken)"))
        }
        if let beyond = result.expertCPUBeyondFFNPerMessage {
            fields.append(("ffn_cpu_us_per_token", Format.fixed(result.ffnCPUPerToken, 1)))
            fields.append(("expert_cpu_beyond_ffn_us_per_message", Format.fixed(beyond, 1)))
        }
        if result.meshStreamP50 > 0 {
            fields.append(("mesh_stream_p50_us", Format.fixed(result.meshStreamP50, 1)))
            fields.append(("mesh_stream_p99_us", Format.fixed(result.meshStreamP99, 1)))
            fields.append(("echo_stream_p50_us", Format.fixed(result.echoStreamP50, 1)))
            fields.append(("router_cpu_us_per_token_stream", Format.fixed(result.routerCPUPerTokenStream, 1)))
            fields.append(("stream_overhead_us", Format.fixed(result.meshStreamP50 - result.inprocessP50, 1)))
            // The target: per-layer overhead on the stream path against a bare unary echo of the same payload.
            fields.append(
                (
                    "stream_overhead_over_unary_echo",
                    Format.fixed(
                        result.echoP50 > 0 ? (result.meshStreamP50 - result.inprocessP50) / result.echoP50 : 0, 2)
                ))
        }
        if let unbatched = result.unbatchedTokensPerSecond {
            fields.append(("unbatched_mesh_tokens_per_s", Format.fixed(unbatched, 1)))
            fields.append(
                ("batching_gain", Format.fixed(unbatched > 0 ? result.meshTokensPerSecond / unbatched : 0, 2)))
        }
        return "{" + fields.map { "\"\($0.0)\": \($0.1)" }.joined(separator: ", ") + "}"
    }

    public static func json(_ kernel: KernelResult) -> String {
        "{\"shape\": \"kernels\", \"tokens\": \(kernel.tokens), \"gate_us\": \(Format.fixed(kernel.gateMicroseconds, 1)), "
            + "\"dispatch_us\": \(Format.fixed(kernel.dispatchMicroseconds, 1)), \"combine_us\": \(Format.fixed(kernel.combineMicroseconds, 1)), "
            + "\"ffn_gflops\": \(Format.fixed(kernel.ffnGFLOPS, 1)), \"sgemm_gflops\": \(Format.fixed(kernel.sgemmGFLOPS, 1)), "
            + "\"ffn_over_sgemm\": \(Format.fixed(kernel.ffnOverSgemm, 3)), "
            + "\"ffn_weight_gb_per_s\": \(Format.fixed(kernel.ffnWeightGigabytesPerSecond, 2)), "
            + "\"sgemv_weight_gb_per_s\": \(Format.fixed(kernel.sgemvWeightGigabytesPerSecond, 2))}"
    }

    public static func json(_ fault: FaultResult) -> String {
        "{\"shape\": \"hung replica\", \"phase\": \"\(fault.phase)\", \"clients\": \(fault.clients), \"requests\": \(fault.requests), "
            + "\"lost\": \(fault.lost), \"requests_per_s\": \(Format.fixed(fault.requestsPerSecond, 1)), "
            + "\"throughput_vs_healthy\": \(Format.fixed(fault.throughputVsHealthy, 3)), \"p50_us\": \(Format.fixed(fault.p50, 1)), "
            + "\"p99_us\": \(Format.fixed(fault.p99, 1))}"
    }

    public static let faultHeader = ["phase", "clients", "requests", "lost", "req/s", "vs healthy", "p50 µs", "p99 µs"]

    public static func row(_ fault: FaultResult) -> [String] {
        [
            fault.phase, "\(fault.clients)", "\(fault.requests)", "\(fault.lost)",
            Format.fixed(fault.requestsPerSecond, 1),
            Format.fixed(fault.throughputVsHealthy, 3), Format.fixed(fault.p50, 0), Format.fixed(fault.p99, 0),
        ]
    }

    public static let layerHeader = [
        "shape", "T", "clients", "mesh tok/s", "in-proc tok/s", "ratio", "mesh p50 µs", "mesh p99 µs", "in-proc p50 µs",
        "echo p50 µs", "overhead µs", "overhead/echo", "stream p50 µs", "stream echo µs", "stream overhead µs",
        "stream overhead/echo", "msgs/tok", "wire B/tok", "router CPU µs/tok", "router CPU stream",
        "expert CPU µs/tok", "FFN CPU µs/tok", "expert beyond FFN µs/msg", "no-batch tok/s",
    ]

    public static func row(_ result: BenchResult) -> [String] {
        let overhead =
            result.echoP50 > 0 ? Format.fixed((result.meshP50 - result.inprocessP50) / result.echoP50, 2) : "-"
        return [
            result.name, "\(result.tokens)", "\(result.clients)", Format.fixed(result.meshTokensPerSecond, 0),
            Format.fixed(result.inprocessTokensPerSecond, 0), Format.fixed(result.ratio, 3),
            Format.fixed(result.meshP50, 0),
            Format.fixed(result.meshP99, 0), Format.fixed(result.inprocessP50, 0),
            result.echoP50 > 0 ? Format.fixed(result.echoP50, 0) : "-",
            Format.fixed(result.meshP50 - result.inprocessP50, 0), overhead,
            result.meshStreamP50 > 0 ? Format.fixed(result.meshStreamP50, 0) : "-",
            result.echoStreamP50 > 0 ? Format.fixed(result.echoStreamP50, 0) : "-",
            result.meshStreamP50 > 0 ? Format.fixed(result.meshStreamP50 - result.inprocessP50, 0) : "-",
            result.meshStreamP50 > 0 && result.echoP50 > 0
                ? Format.fixed((result.meshStreamP50 - result.inprocessP50) / result.echoP50, 2) : "-",
            result.messagesPerToken > 0
                ? "\(Format.fixed(result.messagesPerToken, 2)) (k=\(result.expertsPerToken))" : "-",
            result.wireBytesPerToken > 0 ? Format.fixed(result.wireBytesPerToken, 0) : "-",
            Format.fixed(result.routerCPUPerToken, 0),
            result.meshStreamP50 > 0 ? Format.fixed(result.routerCPUPerTokenStream, 0) : "-",
            Format.fixed(result.expertCPUPerToken, 0),
            result.ffnCPUPerToken > 0 ? Format.fixed(result.ffnCPUPerToken, 0) : "-",
            result.expertCPUBeyondFFNPerMessage.map { Format.fixed($0, 0) } ?? "-",
            result.unbatchedTokensPerSecond.map { Format.fixed($0, 0) } ?? "-",
        ]
    }

    public static let kernelHeader = [
        "T", "gate µs", "dispatch µs", "combine µs", "FFN GFLOP/s", "sgemm GFLOP/s", "FFN/sgemm", "FFN weight GB/s",
        "sgemv GB/s",
    ]

    public static func row(_ kernel: KernelResult) -> [String] {
        [
            "\(kernel.tokens)", Format.fixed(kernel.gateMicroseconds, 1), Format.fixed(kernel.dispatchMicroseconds, 1),
            Format.fixed(kernel.combineMicroseconds, 1), Format.fixed(kernel.ffnGFLOPS, 1),
            Format.fixed(kernel.sgemmGFLOPS, 1),
            Format.fixed(kernel.ffnOverSgemm, 3), Format.fixed(kernel.ffnWeightGigabytesPerSecond, 1),
            Format.fixed(kernel.sgemvWeightGigabytesPerSecond, 1),
        ]
    }

    /// A table with right-aligned columns.
    public static let transportHeader = [
        "transport", "call", "payload B", "round trips", "p50 µs", "p99 µs", "CPU µs/round trip", "p50/floor",
    ]

    public static func row(_ row: TransportBenchmark.Row) -> [String] {
        [
            row.transport, row.call, "\(row.payloadBytes)", "\(row.roundTrips)", Format.fixed(row.p50),
            Format.fixed(row.p99), Format.fixed(row.cpuPerRoundTrip), Format.fixed(row.overFloor, 2),
        ]
    }

    public static let overloadHeader = [
        "load", "offered/s", "answered", "goodput/s", "goodput/capacity", "answered p50 ms", "answered p99 ms",
        "refused", "refused p50 ms", "other failures", "router peak MiB",
    ]

    public static func row(_ row: OverloadBenchmark.Row) -> [String] {
        [
            "\(Format.fixed(row.multiple, 1))×", Format.fixed(row.offeredPerSecond, 0), "\(row.answered)",
            Format.fixed(row.goodputPerSecond, 0), Format.fixed(row.goodputOverCapacity, 2),
            Format.fixed(row.answeredP50 / 1000, 1), Format.fixed(row.answeredP99 / 1000, 1), "\(row.refused)",
            Format.fixed(row.refusedP50 / 1000, 2),
            row.failures.isEmpty
                ? "0"
                : row.failures.sorted { $0.value > $1.value }.map { "\($0.key): \($0.value)" }.joined(separator: ", "),
            Format.fixed(row.routerPeakMiB, 0),
        ]
    }

    public static func table(header: [String], rows: [[String]]) -> String {
        let widths = header.indices.map { column in ([header] + rows).map { $0[column].count }.max() ?? 0 }
        return ([header] + rows).map { row in
            row.indices.map { Format.pad(row[$0], widths[$0]) }.joined(separator: "  ")
        }.joined(separator: "\n")
    }
}
