import ArgumentParser
import MoEModel
import MoEProcesses
import MoEServing
import Yams

#if canImport(Glibc)
    import Glibc
#endif

/// Options from a YAML file (`--config FILE` or `$MOEMESH_CONFIG`) and from `MOEMESH_*` environment variables, put
/// in front of the command line's own: flags win over the environment, which wins over the file.
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
    static func expand(_ arguments: [String], environment: [String: String]) throws -> [String] {
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
        let (path, command) = Self.command(in: arguments)
        if arguments.contains("--help") || arguments.contains("-h") { return arguments }
        let known = Self.options(of: command)
        var values: [String: [String]] = [:]
        if let configPath, !configPath.isEmpty {
            let sections = try Self.read(configPath)
            for (section, entries) in sections where section == "all" || section == path.joined(separator: " ") {
                for (key, value) in entries {
                    guard let takesValue = known[key] else {
                        if section == "all" { continue }
                        throw Failure(
                            description:
                                "\(configPath): \(section): '\(key)' is not an option of moemesh \(section); its options: \(known.keys.sorted().joined(separator: ", "))"
                        )
                    }
                    // A command's own section wins over `all`.
                    if section == "all" && values[key] != nil { continue }
                    values[key] = try Self.arguments(
                        key: key, value: value, takesValue: takesValue, source: "\(configPath): \(section)")
                }
            }
        }
        for (key, takesValue) in known {
            let variable = "MOEMESH_" + key.uppercased().replacing("-", with: "_")
            guard let value = environment[variable] else { continue }
            values[key] = try Self.arguments(
                key: key, value: .scalar(.init(value)), takesValue: takesValue, source: variable)
        }
        let given = Set(
            arguments.compactMap { argument -> String? in
                guard argument.hasPrefix("--") else { return nil }
                return String(argument.dropFirst(2).prefix { $0 != "=" })
            })
        let inserted = values.filter { !given.contains($0.key) }.sorted { $0.key < $1.key }.flatMap(\.value)
        // After the subcommand's name, or first when the default command is implied.
        let named = arguments.first.map(Self.isSubcommand) ?? false
        arguments.insert(contentsOf: inserted, at: named ? path.count : 0)
        return arguments
    }

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

    /// Long option names of `command` and whether each takes a value, read from its help.
    static func options(of command: any ParsableCommand.Type) -> [String: Bool] {
        var options: [String: Bool] = [:]
        for line in command.helpMessage(columns: 10_000).split(separator: "\n") {
            guard let match = line.firstMatch(of: /^\s+(?:-\w, )?--([a-z0-9][a-z0-9-]*)( <[^>]+>)?/) else { continue }
            let name = String(match.1)
            if name != "help" && name != "version" { options[name] = match.2 != nil }
        }
        return options
    }

    static func read(_ path: String) throws -> [(String, [(String, Node)])] {
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
        guard let root else { return [] }
        guard let mapping = root.mapping else {
            throw Failure(description: "\(path): expected a mapping of command sections, got \(root)")
        }
        return try mapping.map { key, value in
            guard let section = key.string else {
                throw Failure(description: "\(path): section names must be strings, got \(key)")
            }
            guard let entries = value.mapping else {
                throw Failure(description: "\(path): \(section): expected option: value lines, got \(value)")
            }
            return (
                section,
                try entries.map { key, value in
                    guard let name = key.string else {
                        throw Failure(description: "\(path): \(section): option names must be strings, got \(key)")
                    }
                    return (name, value)
                }
            )
        }
    }

    static func arguments(key: String, value: Node, takesValue: Bool, source: String) throws -> [String] {
        let scalars: [String]
        switch value {
        case .scalar(let scalar): scalars = [scalar.string]
        case .sequence(let sequence):
            scalars = try sequence.map { item in
                guard case .scalar(let scalar) = item else {
                    throw Failure(description: "\(source): \(key): expected a list of values, got \(item)")
                }
                return scalar.string
            }
        default: throw Failure(description: "\(source): \(key): expected a value or a list of values, got \(value)")
        }
        if takesValue { return scalars.flatMap { ["--\(key)", $0] } }
        switch scalars.first?.lowercased() {
        case "true", "yes", "on", "1": return ["--\(key)"]
        case "false", "no", "off", "0": return []
        default:
            throw Failure(
                description:
                    "\(source): \(key) is a flag: expected true or false, got \(scalars.joined(separator: ", "))")
        }
    }
}
