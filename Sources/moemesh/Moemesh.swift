import ArgumentParser

/// `moemesh`: serve Mixture-of-Experts layers as a mesh of gRPC services.
@main
struct Moemesh: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Serve Mixture-of-Experts layers as a mesh of gRPC services.",
        subcommands: [Up.self, Router.self, Expert.self, Forward.self, Synth.self],
        defaultSubcommand: Up.self)
}
