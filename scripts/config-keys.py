#!/usr/bin/env python3
"""Writes the configuration reference (docs/configuration.md) from `moemesh <command> --experimental-dump-help`: every option of
every command, as a YAML key (under the command's section), a MOEMESH_* variable and a flag.

Usage: scripts/config-keys.py path/to/moemesh [--check]   (--check: fail if docs/configuration.md differs)"""
import json, subprocess, sys
from pathlib import Path

COMMANDS = ["up", "coordinator", "router", "expert", "demo", "status", "top", "admin prune", "admin restore",
            "admin drain", "forward", "health", "bench", "synth", "k8s render"]
BEGIN, END = "<!-- config-keys:begin -->", "<!-- config-keys:end -->"

def table(binary, command):
    info = json.loads(subprocess.run([binary, *command.split(), "--experimental-dump-help"], check=True,
                                     capture_output=True, text=True).stdout)["command"]
    rows = []
    for argument in info.get("arguments", []):
        name = (argument.get("preferredName") or {}).get("name")
        if not argument.get("shouldDisplay", True) or argument.get("kind") == "positional" or name in (None, "help", "version"):
            continue
        value = "flag" if argument["kind"] == "flag" else ("list" if argument.get("isRepeating") else "value")
        default = argument.get("defaultValue", "")
        if argument["kind"] == "flag":
            default = "false"
        text = argument.get("abstract", "").replace("|", "\\|").replace("\n", " ")
        env = "MOEMESH_" + name.upper().replace("-", "_")
        rows.append(f"| `{name}` | {value} | {('`' + default + '`') if default else '—'} | `{env}` | {text} |")
    return f"**`{command}`** — {info.get('abstract', '')}\n\n| key | kind | default | variable | meaning |\n|---|---|---|---|---|\n" + "\n".join(rows)

def main():
    binary, check = sys.argv[1], "--check" in sys.argv
    body = "\n\n".join(table(binary, command) for command in COMMANDS)
    readme = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"
    text = readme.read_text()
    start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    updated = text[:start] + "\n" + body + "\n" + text[end:]
    if check:
        if updated != text:
            sys.exit("docs/configuration.md differs from the commands' options: run scripts/config-keys.py")
        print("docs/configuration.md matches the commands")
    else:
        readme.write_text(updated)

main()
