#include "fuzzer_driver.h"

int LLVMFuzzerRunDriver(int *argc, char ***argv, int (*callback)(const uint8_t *data, size_t size));

static moemesh_fuzz_input current_input;

static int one_input(const uint8_t *data, size_t size) {
    static const uint8_t empty[1] = {0};
    return current_input(data ? data : empty, size);
}

int moemesh_run_fuzzer(int argc, char **argv, moemesh_fuzz_input input) {
    current_input = input;
    return LLVMFuzzerRunDriver(&argc, &argv, one_input);
}
