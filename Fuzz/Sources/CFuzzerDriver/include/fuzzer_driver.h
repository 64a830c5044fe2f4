// Runs libFuzzer (the runtime that -sanitize=fuzzer links) from a program with its own main.
#include <stddef.h>
#include <stdint.h>

/// One input: `data` is never NULL (an empty input points at a zero-length buffer).
typedef int (*moemesh_fuzz_input)(const uint8_t *data, size_t size);

/// Parses libFuzzer's flags from the command line and fuzzes `input`; returns libFuzzer's exit status.
int moemesh_run_fuzzer(int argc, char **argv, moemesh_fuzz_input input);
