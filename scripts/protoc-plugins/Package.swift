// swift-tools-version:6.1
// Builds the two protoc plugins used by scripts/generate-protos.sh, from the same package versions
// that the main package depends on, so that regenerating the committed code is reproducible.
import PackageDescription

let package = Package(
    name: "protoc-plugins",
    dependencies: [
        .package(url: "https://github.com/apple/swift-protobuf", exact: "1.39.0"),
        .package(url: "https://github.com/grpc/grpc-swift-protobuf", exact: "2.4.1"),
    ]
)
