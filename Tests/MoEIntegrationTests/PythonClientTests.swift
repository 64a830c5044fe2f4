import MoECore
import MoEModel
import MoEInProcess
import MoEProcesses
import MoERuntime
import MoEServing
import MoETestSupport
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// Whether `python3` can import grpc_tools and numpy (scripts/test.sh installs them and sets
/// MOEMESH_REQUIRE_PYTHON=1, so that CI runs this suite rather than skipping it).
private let pythonClientRuns: Bool = {
    if getenv("MOEMESH_REQUIRE_PYTHON") != nil { return true }
    return system("python3 -c 'import grpc_tools, numpy' >/dev/null 2>&1") == 0
}()

@Suite(
    "gRPC from another language", .serialized,
    .enabled(if: pythonClientRuns, "python3 with grpcio-tools and numpy is not installed"))
struct PythonClientTests {
    static let repositoryRoot: String = {
        var path = #filePath
        for _ in 0..<3 { path = String(path[..<path.lastIndex(of: "/")!]) }
        return path
    }()

    @Test("the Python example client's Forward equals the in-process reference")
    func pythonForward() async throws {
        let model = try SmallModel(
            shape: .init(experts: 4, topK: 2, hiddenSize: 48, intermediateSize: 64, layers: 1), seed: 21)
        defer { model.remove() }
        let up = try await ChildProcess.start(
            name: "up", executable: MoemeshBinary.path,
            arguments: [
                "up", "--model", model.path, "--port", "0", "--coordinator-port", "0", "--log-level", "warning",
                "--parent-pid", String(getpid()),
            ])
        // If the test stops early, take the mesh down with it (the children follow their parent).
        defer { if up.pollExit() == nil { up.signal(SIGKILL) } }
        let router = try #require(await up.waitForReadyLine(role: "router", timeout: .seconds(120)))

        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let python = try await ChildProcess.start(
            name: "python", executable: "/usr/bin/env",
            arguments: [
                "python3", Self.repositoryRoot + "/examples/python/forward.py", "--router", router.description,
                "--layer", "0", "--tokens", "9", "--save", directory.file("py.safetensors"), "--stream", "12",
            ])
        var printed: [String] = []
        for await line in python.outputLines { printed.append(line) }
        #expect(await python.waitForExit(timeout: .seconds(60)) == 0)
        #expect(printed.first?.hasPrefix("mixtral: layer 0, 9 tokens, output (9, 48)") == true, "\(printed)")
        #expect(
            printed.last == "stream: 12 of 12 answers over one ForwardStream, each equal to the unary Forward",
            "\(printed)")

        let saved = try SafeTensorsFile(path: directory.file("py.safetensors"))
        let hidden = try saved.matrix("hidden_states")
        let expected = try await InProcessMoE(checkpoint: MoECheckpoint(path: model.path)).forward(
            layer: "0", hidden: hidden)
        #expect(relativeError(try saved.tensor("output").floats(), expected.output.values) <= 1e-5)
        #expect(try saved.tensor("topk_weights").floats() == expected.routing.topkWeights)
        #expect(await up.stop() == 0)
    }
}
