// swift-tools-version:6.1
import PackageDescription

let package = Package(
    name: "MoEMesh",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "moemesh", targets: ["moemesh"]),
        .library(name: "MoECore", targets: ["MoECore"]),
        .library(name: "MoEKernels", targets: ["MoEKernels"]),
        .library(name: "MoECUDA", targets: ["MoECUDA"]),
        .library(name: "MoEModel", targets: ["MoEModel"]),
        .library(name: "MoERuntime", targets: ["MoERuntime"]),
        .library(name: "MoEInProcess", targets: ["MoEInProcess"]),
        .library(name: "MoEProto", targets: ["MoEProto"]),
        .library(name: "MoEWire", targets: ["MoEWire"]),
        .library(name: "MoEDataPlane", targets: ["MoEDataPlane"]),
        .library(name: "MoEServing", targets: ["MoEServing"]),
        .library(name: "MoEExpert", targets: ["MoEExpert"]),
        .library(name: "MoERouter", targets: ["MoERouter"]),
        .library(name: "MoEStatusViews", targets: ["MoEStatusViews"]),
        .library(name: "MoEPolicy", targets: ["MoEPolicy"]),
        .library(name: "MoECoordinator", targets: ["MoECoordinator"]),
        .library(name: "MoEProcesses", targets: ["MoEProcesses"]),
        .library(name: "MoELocalMesh", targets: ["MoELocalMesh"]),
    ],
    dependencies: [
        .package(url: "https://github.com/grpc/grpc-swift-2", from: "2.4.3"),
        .package(url: "https://github.com/grpc/grpc-swift-nio-transport", from: "2.9.2"),
        .package(url: "https://github.com/grpc/grpc-swift-protobuf", from: "2.4.1"),
        .package(url: "https://github.com/apple/swift-protobuf", from: "1.39.0", traits: []),
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-numerics", from: "1.1.1"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/async-http-client", from: "1.37.0"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-nio-ssl", from: "2.37.6"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.2.2"),
        .package(url: "https://github.com/apple/swift-distributed-tracing", from: "1.7.3"),
        .package(url: "https://github.com/swift-otel/swift-otel", from: "1.6.0"),
        .package(url: "https://github.com/swiftlang/swift-subprocess", from: "1.0.2", traits: []),
        .package(url: "https://github.com/apple/swift-system", from: "1.8.1"),
        .package(url: "https://github.com/apple/swift-certificates", from: "1.21.1"),
        .package(url: "https://github.com/apple/swift-crypto", from: "4.5.2"),
        .package(url: "https://github.com/apple/swift-asn1", from: "1.7.4"),
        .package(url: "https://github.com/apple/swift-configuration", from: "1.4.0"),
    ],
    targets: [
        // Pure Swift, no I/O: tensors, gates and routing, dispatch plans, combine.
        .target(
            name: "MoECore",
            dependencies: [.product(name: "RealModule", package: "swift-numerics")]
        ),
        // glibc's <malloc.h>, for MemoryTuning.
        .systemLibrary(name: "CMalloc"),
        // System library: OpenBLAS's CBLAS interface.
        .systemLibrary(
            name: "COpenBLAS",
            providers: [.apt(["libopenblas-dev"])]
        ),
        // CUDA driver, cuBLAS(Lt) and NVRTC declarations, opened with dlopen at run time (nothing links CUDA).
        .target(name: "CCUDA", linkerSettings: [.linkedLibrary("dl")]),
        // gRPC's C++ core (Debian's libgrpc++) behind a C interface: generic servers and calls over byte buffers.
        .target(
            name: "CGRPCBridge",
            linkerSettings: [
                .linkedLibrary("grpc++"), .linkedLibrary("grpc"), .linkedLibrary("gpr"),
                .linkedLibrary("absl_synchronization"),
            ]
        ),
        // Weight-only bf16/int8 matrix products with f32 activations: scalar, AVX2 and AVX-512 paths, chosen at run time.
        .target(name: "CQuantKernels"),
        // Expert FFN kernels on the CPU: OpenBLAS and the direct kernels of CQuantKernels; the backend protocol.
        .target(
            name: "MoEKernels",
            dependencies: [
                "MoECore", "COpenBLAS", "CMalloc", "CQuantKernels",
                .product(name: "RealModule", package: "swift-numerics"),
            ]
        ),
        // The CUDA backend beside it: driver, cuBLASLt and NVRTC loaded at run time (nothing links CUDA).
        .target(
            name: "MoECUDA",
            dependencies: ["MoECore", "MoEKernels", "CCUDA", "CMalloc", "CQuantKernels"],
            exclude: ["expert_kernels.cu"]
        ),
        // Model folders: safetensors, Hugging Face config.json, architecture adapters, synthetic models.
        .target(name: "MoEModel", dependencies: ["MoECore"]),
        // The MoE layer pipeline shared by the router and the in-process reference: gate, dispatch plan, the executor
        // protocol, combine. No kernels: a router's dependency closure holds no OpenBLAS, quantised kernels or CUDA.
        .target(
            name: "MoERuntime",
            dependencies: ["MoECore", "MoEModel", .product(name: "RealModule", package: "swift-numerics")]
        ),
        // The layer computed in this process (the reference the mesh is measured and checked against) and the
        // quantisation report: the pipeline over the CPU kernels.
        .target(name: "MoEInProcess", dependencies: ["MoECore", "MoEKernels", "MoEModel", "MoERuntime"]),
        // Pure policy, no I/O: the autoscaling rule, the placement planner and the fleet simulator that runs them
        // (`moemesh simulate` runs the very code the coordinator runs).
        .target(
            name: "MoEPolicy",
            dependencies: ["MoECore", "MoEModel", .product(name: "RealModule", package: "swift-numerics")]
        ),
        // Generated protobuf and gRPC code (scripts/generate-protos.sh).
        .target(
            name: "MoEProto",
            dependencies: [
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
                .product(name: "GRPCCore", package: "grpc-swift-2"),
                .product(name: "GRPCProtobuf", package: "grpc-swift-protobuf"),
            ]
        ),
        // The wire mapping: protobuf messages ↔ core values (tensors, expert keys, call errors), validated once.
        .target(
            name: "MoEWire",
            dependencies: ["MoECore", "MoEProto", .product(name: "GRPCCore", package: "grpc-swift-2")]
        ),
        // The data plane's transport: servers, channels and calls on gRPC's C++ core (CGRPCBridge), in Swift terms.
        .target(
            name: "MoEDataPlane",
            dependencies: ["CGRPCBridge", "MoECore", .product(name: "GRPCCore", package: "grpc-swift-2")]
        ),
        // What every service shares: transport settings, lifecycle, health, metrics, tracing, the HTTP endpoint.
        .target(
            name: "MoEServing",
            dependencies: [
                "MoECore", "MoEProto", "MoEDataPlane", "CMalloc",
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
                .product(name: "GRPCCore", package: "grpc-swift-2"),
                .product(name: "GRPCProtobuf", package: "grpc-swift-protobuf"),
                .product(name: "GRPCNIOTransportHTTP2", package: "grpc-swift-nio-transport"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "Tracing", package: "swift-distributed-tracing"),
                .product(name: "Instrumentation", package: "swift-distributed-tracing"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
            ]
        ),
        .target(
            name: "MoEExpert",
            dependencies: [
                "MoECore", "MoEKernels", "MoECUDA", "MoEModel", "MoEProto", "MoEWire", "MoEServing", "MoEDataPlane",
                .product(name: "Tracing", package: "swift-distributed-tracing"),
                .product(name: "GRPCCore", package: "grpc-swift-2"),
                .product(name: "GRPCNIOTransportHTTP2", package: "grpc-swift-nio-transport"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
            ]
        ),
        .target(
            name: "MoERouter",
            dependencies: [
                "MoECore", "MoEModel", "MoERuntime", "MoEProto", "MoEWire", "MoEServing", "MoEDataPlane",
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
                .product(name: "Tracing", package: "swift-distributed-tracing"),
                .product(name: "GRPCCore", package: "grpc-swift-2"),
                .product(name: "GRPCNIOTransportHTTP2", package: "grpc-swift-nio-transport"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
            ]
        ),
        // The coordinator's status for people: tables and JSON (`moemesh status`, `top`), the HTML status page.
        .target(
            name: "MoEStatusViews",
            dependencies: ["MoECore", "MoEPolicy", "MoECoordinator", "MoEServing"]
        ),
        // Registry of replicas, topology stream, autoscaling, drains, cold starts; scalers: none, Kubernetes, any.
        .target(
            name: "MoECoordinator",
            dependencies: [
                "MoECore", "MoEModel", "MoEPolicy", "MoEProto", "MoEWire", "MoEServing",
                .product(name: "GRPCCore", package: "grpc-swift-2"),
                .product(name: "GRPCNIOTransportHTTP2", package: "grpc-swift-nio-transport"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
            ]
        ),
        // Child processes (swift-subprocess): `moemesh` role processes started by a mesh, a bench or a test.
        .target(
            name: "MoEProcesses",
            dependencies: [
                "MoECore",
                .product(name: "Subprocess", package: "swift-subprocess"),
                .product(name: "SystemPackage", package: "swift-system"),
            ]
        ),
        // A mesh of local processes: `LocalProcessScaler` (replicas as child processes) and `LocalMesh` (`moemesh up`).
        .target(
            name: "MoELocalMesh",
            dependencies: [
                "MoECore", "MoEModel", "MoEProto", "MoEServing", "MoECoordinator", "MoEStatusViews", "MoEProcesses",
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // `moemesh bench`: the mesh against the in-process reference, with the echo and sgemm floors.
        .target(
            name: "MoEBench",
            dependencies: [
                "MoECore", "MoEDataPlane", "CGRPCBridge", "MoEKernels", "MoEModel", "MoERuntime", "MoEInProcess",
                "MoEProto", "MoEWire",
                "MoEServing",
                "MoECoordinator", "MoEPolicy", "MoEStatusViews",
                "MoEProcesses", "MoELocalMesh",
                .product(name: "GRPCCore", package: "grpc-swift-2"),
                .product(name: "GRPCNIOTransportHTTP2", package: "grpc-swift-nio-transport"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .executableTarget(
            name: "moemesh",
            dependencies: [
                "MoECore", "MoEKernels", "MoECUDA", "MoEModel", "MoERuntime", "MoEInProcess", "MoEServing",
                "MoEDataPlane", "MoEExpert", "MoERouter", "MoECoordinator",
                "MoEPolicy", "MoEStatusViews",
                "MoEProcesses", "MoELocalMesh", "MoEProto", "MoEWire",
                "MoEBench",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Yams", package: "Yams"),
                .product(name: "Configuration", package: "swift-configuration"),
                .product(name: "SystemPackage", package: "swift-system"),
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "SwiftASN1", package: "swift-asn1"),
                .product(name: "OTel", package: "swift-otel"),
                .product(name: "GRPCCore", package: "grpc-swift-2"),
                .product(name: "GRPCNIOTransportHTTP2", package: "grpc-swift-nio-transport"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // Helpers shared by the test targets (temporary folders, small models, child processes).
        .target(
            name: "MoETestSupport",
            dependencies: ["MoECore", "MoEModel", "MoERuntime", "MoEServing", "MoEProcesses"],
            path: "Tests/MoETestSupport"
        ),
        .testTarget(
            name: "MoECoreTests",
            dependencies: ["MoECore", .product(name: "RealModule", package: "swift-numerics")]
        ),
        .testTarget(
            name: "MoEKernelsTests",
            dependencies: ["MoECore", "MoEKernels", "MoECUDA", .product(name: "RealModule", package: "swift-numerics")]
        ),
        .testTarget(
            name: "MoEDataPlaneTests",
            dependencies: ["MoEDataPlane", .product(name: "GRPCCore", package: "grpc-swift-2")]
        ),
        .testTarget(name: "MoEPolicyTests", dependencies: ["MoECore", "MoEModel", "MoEPolicy"]),
        .testTarget(
            name: "MoEModelTests",
            dependencies: ["MoECore", "MoEKernels", "MoEModel", "MoERuntime", "MoEInProcess", "MoETestSupport"]
        ),
        .testTarget(
            name: "MoEServiceTests",
            dependencies: [
                "MoECore", "MoEModel", "MoERuntime", "MoEInProcess", "MoEProto", "MoEWire", "MoEServing", "MoEExpert",
                "MoERouter", "MoEDataPlane", "MoETestSupport",
                .product(name: "GRPCCore", package: "grpc-swift-2"),
                .product(name: "GRPCNIOTransportHTTP2", package: "grpc-swift-nio-transport"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "Tracing", package: "swift-distributed-tracing"),
                .product(name: "InMemoryTracing", package: "swift-distributed-tracing"),
            ]
        ),
        .testTarget(
            name: "MoECoordinatorTests",
            dependencies: [
                "MoECore", "MoEModel", "MoEPolicy", "MoEProto", "MoEWire", "MoEServing", "MoECoordinator",
                "MoELocalMesh",
                "MoEStatusViews", "MoETestSupport",
                .product(name: "GRPCCore", package: "grpc-swift-2"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ]
        ),
        .testTarget(
            name: "MoEIntegrationTests",
            dependencies: [
                "MoECore", "MoEKernels", "MoECUDA", "MoEModel", "MoERuntime", "MoEInProcess", "MoEProto", "MoEWire",
                "MoEServing", "MoERouter", "MoECoordinator", "MoEStatusViews", "MoEProcesses", "MoELocalMesh",
                "MoETestSupport",
                .product(name: "GRPCCore", package: "grpc-swift-2"),
                .product(name: "GRPCNIOTransportHTTP2", package: "grpc-swift-nio-transport"),
            ]
        ),
    ],
    cxxLanguageStandard: .cxx17
)
