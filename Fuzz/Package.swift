// swift-tools-version:6.1
// libFuzzer targets for the parsers that read untrusted bytes: safetensors headers and shard indexes, config.json,
// wire tensors, and a whole decoded Forward request through gate, dispatch, experts and combine.
// Built with sanitizers in their own scratch path by scripts/fuzz.sh (not by the main package's `swift build`).
import PackageDescription

let package = Package(
    name: "MoEMeshFuzz",
    platforms: [.macOS(.v15)],
    dependencies: [.package(name: "MoEMesh", path: "..")],
    targets: [
        // libFuzzer's LLVMFuzzerRunDriver: each target's main hands it the function that takes one input.
        .target(name: "CFuzzerDriver"),
        .executableTarget(
            name: "FuzzSafeTensors",
            dependencies: ["CFuzzerDriver", .product(name: "MoEModel", package: "MoEMesh")]
        ),
        .executableTarget(
            name: "FuzzModelConfig",
            dependencies: ["CFuzzerDriver", .product(name: "MoEModel", package: "MoEMesh")]
        ),
        .executableTarget(
            name: "FuzzWireTensor",
            dependencies: [
                "CFuzzerDriver",
                .product(name: "MoECore", package: "MoEMesh"),
                .product(name: "MoEProto", package: "MoEMesh"),
                .product(name: "MoEWire", package: "MoEMesh"),
            ]
        ),
        .executableTarget(
            name: "FuzzForwardRequest",
            dependencies: [
                "CFuzzerDriver",
                .product(name: "MoECore", package: "MoEMesh"),
                .product(name: "MoEModel", package: "MoEMesh"),
                .product(name: "MoERuntime", package: "MoEMesh"),
                .product(name: "MoEInProcess", package: "MoEMesh"),
                .product(name: "MoEProto", package: "MoEMesh"),
                .product(name: "MoEWire", package: "MoEMesh"),
            ]
        ),
    ]
)
