#if canImport(FoundationEssentials)
    import FoundationEssentials
#else
    import Foundation
#endif
import ArgumentParser
import Configuration
import MoEModel
import MoEProcesses
import SystemPackage
import Yams

/// Options from a YAML file (`--config FILE` or `$MOEMESH_CONFIG`) and from `MOEMESH_*` environment variables, put
/// in front of the command line's own: flags win over the environment, which wins over the file's section for the
/// command, which wins over its `all` section. swift-configuration reads and layers the sources; the result becomes
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
        let (path, command) = Self.command(in: arguments)
        let section = path.joined(separator: " ")
        let known = try Self.options(of: command)

        // The first provider with a value wins. Each is asked for the key [section, option]; the environment
        // answers it from MOEMESH_OPTION, the file's `all` section from all.option.
        var providers: [any ConfigProvider] = [
            EnvironmentVariablesProvider(environmentVariables: environment)
                .mapKeys { AbsoluteConfigKey(["moemesh", $0.components.last ?? ""]) }
        ]
        if let configPath, !configPath.isEmpty {
            try Self.checkFile(configPath, section: section, known: known)
            let file = try await FileProvider<YAMLSnapshot>(filePath: FilePath(configPath))
            providers += [file, file.mapKeys { AbsoluteConfigKey(["all", $0.components.last ?? ""]) }]
        }
        let reader = ConfigReader(providers: providers)

        let given = Set(
            arguments.compactMap { argument -> String? in
                guard argument.hasPrefix("--") else { return nil }
                return String(argument.dropFirst(2).prefix { $0 != "=" })
            })
        var inserted: [String] = []
        for (name, takesValue) in known.sorted(by: { $0.key < $1.key }) where !given.contains(name) {
            let key = ConfigKey([section, name])
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
        let named = arguments.first.map(Self.isSubcommand) ?? false
        arguments.insert(contentsOf: inserted, at: named ? path.count : 0)
        return arguments
    }

    static func variableName(_ option: String) -> String { option.uppercased().replacing("-", with: "_") }

    /// The subcommand path named at the start of `arguments` (the default command, `up`, when none is) and its type.
    static func command(in arguments: [String]) -> ([String], any ParsableCommand.Type) {
        var path: [String] = []
        var command: any ParsableCommand.Type = Moemesh.self
        for argument in arguments {
            guard let next = command.configuration.subcommands.first(where: { $0._commandName == argument }) else {
                break
            }
            path.append(argument)
            command = next
        }
        if path.isEmpty, let fallback = Moemesh.configuration.defaultSubcommand {
            return ([fallback._commandName], fallback)
        }
        return (path, command)
    }

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

    static func isSubcommand(_ name: String) -> Bool {
        Moemesh.configuration.subcommands.contains { $0._commandName == name }
    }

    /// Long option names of `command` and whether each takes a value, from ArgumentParser's description of the
    /// command (the JSON of `--experimental-dump-help`).
    static func options(of command: any ParsableCommand.Type) throws -> [String: Bool] {
        struct ToolInfo: Decodable {
            struct Command: Decodable { let arguments: [Argument]? }
            struct Argument: Decodable {
                struct Name: Decodable {
                    let kind: String
                    let name: String
                }
                let kind: String
                let names: [Name]?
            }
            let command: Command
        }
        let info = try JSONDecoder().decode(ToolInfo.self, from: Data(command._dumpHelp().utf8))
        var options: [String: Bool] = [:]
        for argument in info.command.arguments ?? [] where argument.kind != "positional" {
            for name in argument.names ?? [] where name.kind == "long" && name.name != "help" && name.name != "version"
            {
                options[name.name] = argument.kind == "option"
            }
        }
        return options
    }

    /// Refuses what swift-configuration would silently skip: a file that is not a mapping of command sections, an
    /// option the command does not have in its own section, a value that is neither a scalar nor a list of them.
    static func checkFile(_ path: String, section: String, known: [String: Bool]) throws {
        let text: String
        do {
            text = String(decoding: try FileSystem.readFile(path), as: UTF8.self)
        } catch {
            throw Failure(description: "--config: cannot read \(path): \(error)")
        }
        let root: Node?
        do { root = try Yams.compose(yaml: text) } catch {
            throw Failure(description: "\(path): not valid YAML: \(error)")
        }
        guard let root else { return }
        guard let sections = root.mapping else {
            throw Failure(description: "\(path): expected a mapping of command sections, got \(root)")
        }
        for (key, entries) in sections {
            guard let name = key.string else {
                throw Failure(description: "\(path): section names must be strings, got \(key)")
            }
            guard let entries = entries.mapping else {
                throw Failure(description: "\(path): \(name): expected option: value lines, got \(entries)")
            }
            guard name == section || name == "all" else { continue }
            for (key, value) in entries {
                guard let option = key.string else {
                    throw Failure(description: "\(path): \(name): option names must be strings, got \(key)")
                }
                if name == section && known[option] == nil {
                    throw Failure(
                        description:
                            "\(path): \(name): '\(option)' is not an option of moemesh \(name); its options: "
                            + known.keys.sorted().joined(separator: ", "))
                }
                let scalars = value.sequence.map { $0.allSatisfy { $0.scalar != nil } } ?? (value.scalar != nil)
                guard scalars else {
                    throw Failure(
                        description:
                            "\(path): \(name): \(option): expected a value or a list of values, got "
                            + (value.mapping != nil ? "a mapping" : "a list holding more than values"))
                }
            }
        }
    }
}
