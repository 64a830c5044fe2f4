#if canImport(FoundationEssentials)
    import FoundationEssentials
#else
    import Foundation
#endif
import ArgumentParser
import Configuration
import MoEModel
import MoEProcesses
import Yams

/// Options from a YAML file (`--config FILE` or `$MOEMESH_CONFIG`) and from `MOEMESH_*` environment variables, put
/// in front of the command line's own: flags win over the environment, which wins over the file's section for the
/// command, which wins over its `all` section. swift-configuration's reader layers the sources; the result becomes
/// flags, so that ArgumentParser validates every value the same way, wherever it came from.
///
/// The file has a section per command (`router:`, `expert:`, `k8s render:` …) and `all:` for every command that has
/// the option; keys are long option names without `--`; `true` turns a flag on, a list repeats an option:
/// ```yaml
/// all:
///   log-level: info
/// router:
///   coordinator: coordinator:50050
///   expert-timeout-ms: 30000
/// ```
/// A variable is the option's name in capitals, `-` as `_`, after `MOEMESH_`: `MOEMESH_LOG_LEVEL=debug`.
enum ConfigurationSources {
    struct Failure: Error, CustomStringConvertible {
        let description: String
    }

    /// `arguments` (without the program name) with the file's and the environment's options inserted.
    static func expand(_ arguments: [String], environment: [String: String]) async throws -> [String] {
        var arguments = arguments
        var configPath = environment["MOEMESH_CONFIG"]
        if let index = arguments.firstIndex(where: { $0 == "--config" || $0.hasPrefix("--config=") }) {
            if arguments[index] == "--config" {
                guard index + 1 < arguments.count else {
                    throw Failure(description: "--config: expected a file, got nothing")
                }
                configPath = arguments[index + 1]
                arguments.removeSubrange(index...(index + 1))
            } else {
                configPath = String(arguments[index].dropFirst("--config=".count))
                arguments.remove(at: index)
            }
        }
        if arguments.contains("--help") || arguments.contains("-h") { return arguments }
        let invoked = try CommandDescription.of(Moemesh.self).invoked(by: arguments)
        let known = invoked.command.options

        // The first provider with a value wins; each is asked for the key [option].
        var providers: [any ConfigProvider] = [
            EnvironmentVariablesProvider(environmentVariables: environment)
                .mapKeys { AbsoluteConfigKey(["moemesh"] + $0.components) }
        ]
        if let configPath, !configPath.isEmpty {
            let file = try ConfigurationFile(path: configPath)
            providers.append(try file.provider(section: invoked.section, known: known))
        }
        let reader = ConfigReader(providers: providers)

        let given = Set(
            arguments.compactMap { argument -> String? in
                guard argument.hasPrefix("--") else { return nil }
                return String(argument.dropFirst(2).prefix { $0 != "=" })
            })
        var inserted: [String] = []
        for (name, takesValue) in known.sorted(by: { $0.key < $1.key }) where !given.contains(name) {
            let key = ConfigKey([name])
            // A list (from the file) repeats the option; a scalar is one value.
            guard let values = reader.string(forKey: key).map({ [$0] }) ?? reader.stringArray(forKey: key) else {
                continue
            }
            if takesValue {
                inserted += values.flatMap { ["--\(name)", $0] }
                continue
            }
            switch values.first?.lowercased() {
            case "true", "yes", "on", "1": inserted.append("--\(name)")
            case "false", "no", "off", "0": break
            default:
                throw Failure(
                    description:
                        "\(name) (MOEMESH_\(Self.variableName(name)) or the config file) is a flag: expected true or "
                        + "false, got \(values.joined(separator: ", "))")
            }
        }
        // After the subcommand's name, or first when the default command is implied.
        arguments.insert(contentsOf: inserted, at: invoked.named ? invoked.path.count : 0)
        return arguments
    }

    static func variableName(_ option: String) -> String { option.uppercased().replacing("-", with: "_") }

    /// This process's environment.
    static var processEnvironment: [String: String] {
        var result: [String: String] = [:]
        for text in ChildProcess.environment {
            if let equals = text.firstIndex(of: "=") {
                result[String(text[..<equals])] = String(text[text.index(after: equals)...])
            }
        }
        return result
    }
}

/// A command tree as ArgumentParser describes it publicly: the JSON that `--experimental-dump-help` prints, read
/// in process through `parseAsRoot` and `fullMessage(for:)`.
struct CommandDescription: Decodable {
    struct Argument: Decodable {
        struct Name: Decodable {
            let kind: String
            let name: String
        }
        let kind: String
        let names: [Name]?
    }

    let commandName: String
    let defaultSubcommand: String?
    let subcommands: [CommandDescription]?
    let arguments: [Argument]?

    /// `root`'s tree, subcommands included.
    static func of(_ root: any ParsableCommand.Type) throws -> CommandDescription {
        struct ToolInfo: Decodable { let command: CommandDescription }
        let text: String
        do {
            _ = try root.parseAsRoot(["--experimental-dump-help"])
            throw ConfigurationSources.Failure(description: "ArgumentParser did not describe the commands")
        } catch let failure as ConfigurationSources.Failure {
            throw failure
        } catch {
            text = root.fullMessage(for: error)
        }
        do {
            return try JSONDecoder().decode(ToolInfo.self, from: Data(text.utf8)).command
        } catch {
            throw ConfigurationSources.Failure(
                description: "ArgumentParser's description of the commands is not the expected JSON: \(error)")
        }
    }

    /// Long option names and whether each takes a value (`--help` and `--version` aside).
    var options: [String: Bool] {
        var options: [String: Bool] = [:]
        for argument in arguments ?? [] where argument.kind != "positional" {
            for name in argument.names ?? [] where name.kind == "long" && name.name != "help" && name.name != "version"
            {
                options[name.name] = argument.kind == "option"
            }
        }
        return options
    }

    /// A subcommand as invoked: its names from the root, its description, and whether the arguments named it (or it
    /// is the default command).
    struct Invocation {
        let path: [String]
        let command: CommandDescription
        let named: Bool

        /// The configuration file's section for the command: its names joined by spaces (`k8s render`).
        var section: String { path.joined(separator: " ") }
    }

    /// The subcommand named at the start of `arguments`, or the default one when none is named.
    func invoked(by arguments: [String]) -> Invocation {
        var path: [String] = []
        var command = self
        for argument in arguments {
            guard let next = command.subcommands?.first(where: { $0.commandName == argument }) else { break }
            path.append(argument)
            command = next
        }
        if path.isEmpty, let fallback = defaultSubcommand,
            let implied = subcommands?.first(where: { $0.commandName == fallback })
        {
            return Invocation(path: [fallback], command: implied, named: false)
        }
        return Invocation(path: path, command: command, named: true)
    }
}

/// A configuration file, parsed once: a mapping of command sections, each a mapping of option names to a value or a
/// list of values.
struct ConfigurationFile {
    let path: String
    private let sections: [(name: String, options: [(name: String, value: Node)])]

    /// Reads and parses `path`; refuses what is not a mapping of sections of `option: value` lines.
    init(path: String) throws {
        self.path = path
        let text: String
        do {
            text = String(decoding: try FileSystem.readFile(path), as: UTF8.self)
        } catch {
            throw ConfigurationSources.Failure(description: "--config: cannot read \(path): \(error)")
        }
        let root: Node?
        do { root = try Yams.compose(yaml: text) } catch {
            throw ConfigurationSources.Failure(description: "\(path): not valid YAML: \(error)")
        }
        guard let root else {
            sections = []
            return
        }
        guard let mapping = root.mapping else {
            throw ConfigurationSources.Failure(
                description: "\(path): expected a mapping of command sections, got \(Self.kind(of: root))")
        }
        sections = try mapping.map { key, entries in
            guard let name = key.string else {
                throw ConfigurationSources.Failure(
                    description: "\(path): section names must be strings, got \(Self.kind(of: key))")
            }
            guard let entries = entries.mapping else {
                throw ConfigurationSources.Failure(
                    description: "\(path): \(name): expected option: value lines, got \(Self.kind(of: entries))")
            }
            return (
                name,
                try entries.map { key, value in
                    guard let option = key.string else {
                        throw ConfigurationSources.Failure(
                            description: "\(path): \(name): option names must be strings, got \(Self.kind(of: key))")
                    }
                    return (option, value)
                }
            )
        }
    }

    /// The values for the command whose section is `section`, keyed [option]: its own section's, then `all`'s for
    /// the options it has. Refuses an option the command does not have in its own section, and a value that is
    /// neither a scalar nor a list of scalars; a null value is no value.
    func provider(section: String, known: [String: Bool]) throws -> InMemoryProvider {
        var values: [AbsoluteConfigKey: ConfigValue] = [:]
        for (name, options) in sections where name == section || name == "all" {
            for (option, value) in options {
                if name == section && known[option] == nil {
                    throw ConfigurationSources.Failure(
                        description:
                            "\(path): \(name): '\(option)' is not an option of moemesh \(name); its options: "
                            + known.keys.sorted().joined(separator: ", "))
                }
                let content: ConfigContent
                if let scalar = value.scalar {
                    guard value.null == nil else { continue }
                    content = .string(scalar.string)
                } else if let list = value.sequence, list.allSatisfy({ $0.scalar != nil }) {
                    content = .stringArray(list.compactMap { $0.scalar?.string })
                } else {
                    throw ConfigurationSources.Failure(
                        description:
                            "\(path): \(name): \(option): expected a value or a list of values, got "
                            + (value.mapping != nil ? "a mapping" : "a list holding more than values"))
                }
                // The command's own section wins over `all`.
                let key = AbsoluteConfigKey([option])
                guard known[option] != nil, name == section || values[key] == nil else { continue }
                values[key] = ConfigValue(content, isSecret: false)
            }
        }
        return InMemoryProvider(name: path, values: values)
    }

    /// What a node is, for messages: `a mapping`, `a list` or `'text'`.
    private static func kind(of node: Node) -> String {
        switch node {
        case .mapping: "a mapping"
        case .sequence: "a list"
        case .scalar(let scalar): "'\(scalar.string)'"
        case .alias: "an alias"
        }
    }
}
