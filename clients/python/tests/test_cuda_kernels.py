"""MoEMesh's CUDA backend without a GPU.

1. NVRTC (the nvidia-cuda-nvrtc-cu12 wheel, as the CUDA backend does at run time) compiles
   Sources/MoECUDA/expert_kernels.cu for Ampere and Hopper, and the PTX has every kernel the backend looks up;
   ptxas (nvidia-cuda-nvcc-cu12) assembles it for sm_80 and sm_90 without spills.
2. The same source compiled for the CPU (Tests/CUDAEmulation/cuda_emulation.h: a fiber per CUDA thread, warp
   shuffles emulated) computes what a NumPy restatement says: the weight-only int8/fp8 product for decode
   (`quantized_matmul`: per-channel and block scales, the 16-byte and the byte-at-a-time paths, token tiles, f32 and
   bf16 output), the widening to bf16 for prefill (`dequantize_to_bf16`, bit for bit), the bf16 conversion and the
   gated activation.
3. A CUDA device emulated on the CPU (Tests/CUDAEmulation/emulated_cuda.cpp stands in for libcuda, cuBLASLt and
   cuBLAS; NVRTC is the real one): `moemesh kernels check --device cuda` passes every case but the Mixtral-size ones
   (bf16, int8, fp8 against the CPU backend), `kernels bench` sets weight bandwidth against the device's peak, and
   a mesh of GPU experts in int8 and fp8 answers as the CPU does.

The real GPU runs them in scripts/gpu-verify.sh.
"""

import ctypes
import glob
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
SOURCE = os.path.join(REPO, "Sources", "MoECUDA", "expert_kernels.cu")
EMULATION = os.path.join(REPO, "Tests", "CUDAEmulation", "kernels_on_cpu.cpp")
FORMAT_INT8, FORMAT_E4M3 = 0, 1
# The kernels CUDADevice.compileKernels looks up.
KERNELS = [
    "f32_to_bf16", "bf16_to_f32", "gated_activation", "clamped_swiglu", "activation_in_place", "add_bias",
    "fill_uniform_bf16", "quantized_matmul", "dequantize_to_bf16", "fill_random_bytes",
]


def nvrtc_library():
    import nvidia.cuda_nvrtc

    directory = os.path.join(list(nvidia.cuda_nvrtc.__path__)[0], "lib")
    return ctypes.CDLL(sorted(glob.glob(os.path.join(directory, "libnvrtc.so.*")))[0])


def compile_to_ptx(architecture):
    """The PTX NVRTC makes of expert_kernels.cu for `architecture` (e.g. "compute_90"), as CUDADevice does."""
    nvrtc = nvrtc_library()
    with open(SOURCE, "rb") as file:
        source = file.read()
    program = ctypes.c_void_p()
    assert nvrtc.nvrtcCreateProgram(ctypes.byref(program), source, b"expert_kernels.cu", 0, None, None) == 0
    options = [f"--gpu-architecture={architecture}".encode(), b"-default-device"]
    status = nvrtc.nvrtcCompileProgram(program, len(options), (ctypes.c_char_p * len(options))(*options))
    size = ctypes.c_size_t()
    nvrtc.nvrtcGetProgramLogSize(program, ctypes.byref(size))
    log = ctypes.create_string_buffer(size.value + 1)
    nvrtc.nvrtcGetProgramLog(program, log)
    assert status == 0, log.value.decode()
    assert b"warning" not in log.value, log.value.decode()
    nvrtc.nvrtcGetPTXSize(program, ctypes.byref(size))
    ptx = ctypes.create_string_buffer(size.value)
    nvrtc.nvrtcGetPTX(program, ptx)
    nvrtc.nvrtcDestroyProgram(ctypes.byref(program))
    return ptx.value.decode()


@pytest.mark.parametrize("architecture", ["compute_80", "compute_90"])
def test_nvrtc_compiles_the_kernels(architecture):
    ptx = compile_to_ptx(architecture)
    entries = set(re.findall(r"\.entry (\w+)\(", ptx))
    assert set(KERNELS) <= entries, f"missing from the PTX: {set(KERNELS) - entries}"


@pytest.mark.parametrize("architecture", ["80", "90"])
def test_ptxas_assembles_the_kernels_without_spills(architecture, tmp_path):
    """ptxas (the nvidia-cuda-nvcc-cu12 wheel), as the driver does when it loads the PTX: no kernel spills to local
    memory, and the decode kernel fits 64 registers a thread (four blocks of 256 threads per SM: half occupancy)."""
    import nvidia.cuda_nvcc

    ptxas = os.path.join(list(nvidia.cuda_nvcc.__path__)[0], "bin", "ptxas")
    source = tmp_path / "expert_kernels.ptx"
    source.write_text(compile_to_ptx(f"compute_{architecture}"))
    result = subprocess.run(
        [ptxas, "-v", "--gpu-name", f"sm_{architecture}", str(source), "-o", str(tmp_path / "kernels.cubin")],
        capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    report = {}
    for name, properties, registers in re.findall(
            r"Compiling entry function '(\w+)'.*?\n(.*?bytes spill loads).*?Used (\d+) registers", result.stderr,
            re.DOTALL):
        report[name] = (properties, int(registers))
    assert set(KERNELS) <= set(report), result.stderr
    for name, (properties, registers) in report.items():
        assert "0 bytes spill stores, 0 bytes spill loads" in properties, (name, properties)
    assert report["quantized_matmul"][1] <= 64, report["quantized_matmul"]


def compile_for_the_cpu(source, library, *extra):
    """`source` (which includes expert_kernels.cu through cuda_emulation.h) as a shared library. CUDA code reads
    values through pointers of other types (uint4 as bf16), hence -fno-strict-aliasing."""
    compiler = shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")
    assert compiler, "a C++20 compiler (g++) is needed to run the CUDA kernels on the CPU"
    subprocess.run(
        [compiler, "-std=c++20", "-O2", "-fno-strict-aliasing", "-fPIC", "-shared", "-pthread", "-Wall", "-Werror",
         "-Wno-unknown-pragmas", *extra, "-o", str(library), source],
        check=True)


@pytest.fixture(scope="module")
def kernels(tmp_path_factory):
    library = tmp_path_factory.mktemp("cuda-emulation") / "libkernels_on_cpu.so"
    compile_for_the_cpu(EMULATION, library)
    return ctypes.CDLL(str(library))


@pytest.fixture(scope="module")
def emulated_cuda(tmp_path_factory):
    """The environment in which MoEMesh opens the emulated CUDA device (scripts/emulated-cuda.sh: a folder whose
    libcuda.so.1, libcublasLt.so.12 and libcublas.so.12 are the emulator and whose libnvrtc.so.12 is the wheel's)."""
    folder = tmp_path_factory.mktemp("emulated-cuda")
    printed = subprocess.run(
        [os.path.join(REPO, "scripts", "emulated-cuda.sh"), str(folder)], env=dict(os.environ, PYTHON=sys.executable),
        check=True, capture_output=True, text=True).stdout
    return dict(os.environ, **dict(line.split("=", 1) for line in printed.splitlines()))


def test_the_cuda_backend_passes_its_check_on_the_emulated_device(moemesh_binary, emulated_cuda):
    result = subprocess.run(
        [moemesh_binary, "kernels", "check", "--device", "cuda", "--skip-large"], env=emulated_cuda,
        capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "CUDA emulator (CPU)" in result.stdout.splitlines()[0]
    cases = [line for line in result.stdout.splitlines() if line.startswith(("ok ", "FAIL"))]
    assert cases and all(line.startswith("ok ") for line in cases)
    for precision in ("int8", "fp8"):
        names = [line for line in cases if line.startswith(f"ok   {precision} ")]
        assert len(names) >= 15, names  # token tiles, the bf16 copy, every form, blocks, odd widths, grouped step
    assert any("(grouped GEMM)" in line for line in cases)  # the emulator has cuBLAS's grouped GEMM
    assert re.search(rf"^{len(cases)} of {len(cases)} cases within", result.stdout, re.MULTILINE)


def test_kernels_bench_reports_weight_bandwidth_against_the_device_peak(moemesh_binary, emulated_cuda):
    """The emulated device reports an H100's memory (2,619 MHz × 5,120 bits: 3.35 TB/s); `kernels bench` prints each
    precision's weight TB/s over that peak, and `--expect-decode-fraction` (gpu-verify.sh's check) fails, naming the
    precision, when decode streams below it, as the CPU standing in for a GPU does."""
    command = [moemesh_binary, "kernels", "bench", "--device", "cuda", "--hidden", "64", "--intermediate", "128",
               "--tokens", "1,4", "--precisions", "bf16,int8", "--repeats", "2"]
    result = subprocess.run(command, env=emulated_cuda, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert " at 3.35 TB/s" in result.stdout.splitlines()[0]
    header = next(line for line in result.stdout.splitlines() if line.startswith("precision"))
    assert "weights TB/s" in header and "× peak" in header
    rows = [line.split() for line in result.stdout.splitlines() if line.startswith(("     bf16", "     int8"))]
    assert len(rows) == 4
    for row in rows:
        terabytes, of_peak = float(row[4]), float(row[5])
        assert of_peak == pytest.approx(terabytes / 3.352, abs=0.006)
    failing = subprocess.run(command + ["--expect-decode-fraction", "0.5"], env=emulated_cuda, capture_output=True,
                             text=True, timeout=600)
    assert failing.returncode == 1, failing.stdout + failing.stderr
    shortfalls = [line for line in failing.stdout.splitlines() if line.startswith("below the expected decode")]
    assert [line.split(": ")[1].split()[0] for line in shortfalls] == ["bf16", "int8"], failing.stdout
    assert all("at 1 tokens" in line and "expected at least 0.5" in line for line in shortfalls)


def test_a_mesh_of_gpu_experts_in_int8_and_fp8_answers_as_the_cpu_does(moemesh_binary, tiny_models, emulated_cuda):
    """`moemesh up --device cuda --precision …` on the emulated device: DescribeModel lists each expert's precision,
    and the answers stay within the quantisation error of the CPU's f32 mesh (fp8: e4m3's 3 mantissa bits)."""
    import moemesh
    from conftest import serving

    model = tiny_models["mixtral"]
    x = np.random.default_rng(8).standard_normal((2, 5, 32)).astype(np.float32)
    with serving(moemesh_binary, model) as address, moemesh.Client(address) as client:
        reference = {layer: client.forward(layer, x) for layer in ("0", "1")}
    plan = "*:*=int8,1:*=fp8,1:0=bf16"
    with serving(moemesh_binary, model, "--device", "cuda", "--precision", plan, env=emulated_cuda) as address:
        with moemesh.Client(address) as client:
            described = client.describe()
            answers = {layer: client.forward(layer, x) for layer in ("0", "1")}
    experts = sorted({expert for (_, expert) in described.precisions})
    assert described.precisions[("0", experts[0])] == {"int8": 1}
    assert described.precisions[("1", 0)] == {"bf16": 1}
    assert described.precisions[("1", experts[-1])] == {"fp8": 1}
    for layer, bound in (("0", 2e-2), ("1", 6e-2)):
        error = np.linalg.norm(answers[layer] - reference[layer]) / np.linalg.norm(reference[layer])
        assert 0 < error < bound, (layer, error)


def aligned(array):
    """A copy of `array` whose data starts on a 256-byte boundary, as cuMemAlloc's do (the kernels' vector loads)."""
    raw = np.zeros(array.nbytes + 256, dtype=np.uint8)
    offset = (-raw.ctypes.data) % 256
    view = raw[offset:offset + array.nbytes].view(array.dtype).reshape(array.shape)
    view[...] = array
    return view


def pointer(array):
    return ctypes.c_void_p(array.ctypes.data)


def bf16_bits(values):
    """f32 → bf16 bits, round to nearest even (NaN aside), as the kernels' float_to_bf16."""
    bits = np.asarray(values, dtype=np.float32).view(np.uint32).astype(np.uint64)
    return ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)


def bf16_values(bits):
    return (np.asarray(bits, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)


def e4m3_values(codes):
    """e4m3fn bytes → values: (−1)^s · 2^(e−7) · (1 + m/8), subnormal (−1)^s · 2^−6 · m/8."""
    codes = np.asarray(codes, dtype=np.uint8).astype(np.int64)
    sign = np.where(codes & 0x80, -1.0, 1.0)
    exponent, mantissa = (codes >> 3) & 0xF, codes & 7
    normal = sign * np.ldexp(1.0 + mantissa / 8.0, exponent - 7)
    subnormal = sign * np.ldexp(mantissa / 8.0, -6)
    return np.where(exponent == 0, subnormal, normal)


def random_codes(rng, shape, format):
    codes = rng.integers(0, 256, size=shape, dtype=np.uint8)
    if format == FORMAT_E4M3:
        codes[(codes & 0x7F) == 0x7F] -= 1  # no NaN codes: the quantiser never writes them
    return codes


def dequantized(codes, scales, format, block_rows, block_columns):
    levels = codes.view(np.int8).astype(np.float64) if format == FORMAT_INT8 else e4m3_values(codes)
    rows, columns = codes.shape
    expanded = np.repeat(np.repeat(scales, block_rows, axis=0)[:rows], block_columns, axis=1)[:, :columns]
    return levels, expanded


LAYOUTS = [
    # (name, rows, k, block rows, block columns): per output channel and block scales; k = 50 takes the kernel's
    # byte-at-a-time path (not a multiple of 16), blocks of 24 columns too.
    ("per-channel, 16-byte loads", 12, 96, 1, 96),
    ("4 x 32 blocks, 16-byte loads", 12, 96, 4, 32),
    ("per-channel, byte at a time", 9, 50, 1, 50),
    ("2 x 24 blocks, byte at a time", 9, 96, 2, 24),
]


@pytest.mark.parametrize("format", [FORMAT_INT8, FORMAT_E4M3], ids=["int8", "fp8"])
@pytest.mark.parametrize("layout", LAYOUTS, ids=[layout[0] for layout in LAYOUTS])
@pytest.mark.parametrize("tokens", [1, 3, 8, 9, 16])
def test_quantized_matmul_against_numpy(kernels, format, layout, tokens):
    _, rows, k, block_rows, block_columns = layout
    rng = np.random.default_rng(rows * 1000 + k * 10 + tokens + format)
    codes = aligned(random_codes(rng, (rows, k), format))
    scale_rows, scale_columns = -(-rows // block_rows), -(-k // block_columns)
    scales = aligned(rng.uniform(0.5, 2.0, size=(scale_rows, scale_columns)).astype(np.float32) / 64)
    x_bits = aligned(bf16_bits(rng.standard_normal((tokens, k)).astype(np.float32)))
    levels, expanded = dequantized(codes, scales.astype(np.float64), format, block_rows, block_columns)
    expected = bf16_values(x_bits).astype(np.float64) @ (levels * expanded).T
    for output_f32 in (1, 0):
        y = aligned(np.zeros((tokens, rows), dtype=np.float32 if output_f32 else np.uint16))
        # 2 blocks of 64 threads: 4 warps over the rows (a warp takes more than one row when rows > 4).
        kernels.emulate_quantized_matmul(
            2, 64, pointer(codes), pointer(scales), format, block_rows, block_columns, scale_columns,
            pointer(x_bits), tokens, rows, k, pointer(y), output_f32)
        got = y.astype(np.float64) if output_f32 else bf16_values(y).astype(np.float64)
        # f32 accumulation in another order than NumPy's f64: 1e-5 of the row's size; bf16 output: half a bf16 step.
        size = np.abs(bf16_values(x_bits)).astype(np.float64) @ np.abs(levels * expanded).T
        tolerance = 1e-5 * size if output_f32 else 2.0 ** -8 * np.abs(expected) + 1e-5 * size
        assert np.all(np.abs(got - expected) <= tolerance), f"output_f32={output_f32}"


@pytest.mark.parametrize("format", [FORMAT_INT8, FORMAT_E4M3], ids=["int8", "fp8"])
@pytest.mark.parametrize("k", [256, 30], ids=["four at a time", "one at a time"])
def test_dequantize_to_bf16_bit_for_bit(kernels, format, k):
    # Every byte value appears: the kernel's e4m3 decoding (bit placement times 2^120) is exact for all of them.
    rows, block_rows, block_columns = 8, 4, 8
    rng = np.random.default_rng(k + format)
    codes = aligned(random_codes(rng, (rows, k), format))
    codes.reshape(-1)[:256] = np.arange(256, dtype=np.uint8)[: codes.size]
    if format == FORMAT_E4M3:
        codes[(codes & 0x7F) == 0x7F] -= 1
    scale_columns = -(-k // block_columns)
    scales = aligned(rng.uniform(0.01, 3.0, size=(rows // block_rows, scale_columns)).astype(np.float32))
    out = aligned(np.zeros((rows, k), dtype=np.uint16))
    kernels.emulate_dequantize_to_bf16(
        3, 64, pointer(codes), pointer(scales), format, block_rows, block_columns, scale_columns, pointer(out), rows, k)
    levels, expanded = dequantized(codes, scales, format, block_rows, block_columns)
    # One f32 multiply (levels are exact in f32), then bf16 rounding: the same bits.
    expected = bf16_bits(levels.astype(np.float32) * expanded.astype(np.float32))
    np.testing.assert_array_equal(out, expected)


def test_e4m3_codes_decode_as_the_format_defines():
    # The restatement the tests above use, against the format's table of notable values.
    assert e4m3_values([0x00, 0x01, 0x08, 0x38, 0x7E, 0xFE, 0x80]).tolist() == [
        0.0, 2.0 ** -9, 2.0 ** -6, 1.0, 448.0, -448.0, 0.0]


def test_bf16_conversion_and_gated_activation(kernels):
    rng = np.random.default_rng(3)
    values = aligned(rng.standard_normal(64).astype(np.float32) * 3)
    out = aligned(np.zeros(64, dtype=np.uint16))
    kernels.emulate_f32_to_bf16(2, 32, pointer(values), pointer(out), ctypes.c_longlong(64))
    np.testing.assert_array_equal(out, bf16_bits(values))
    for width in (16, 12):  # eight columns a step, and the scalar path
        rows = 3
        a = aligned(bf16_bits(rng.standard_normal((rows, 2 * width)).astype(np.float32)))
        z = aligned(np.zeros((rows, width), dtype=np.uint16))
        kernels.emulate_gated_activation(2, 32, pointer(a), pointer(z), rows, width, 3)  # silu
        gate, up = bf16_values(a[:, :width]).astype(np.float64), bf16_values(a[:, width:]).astype(np.float64)
        expected = gate / (1 + np.exp(-gate)) * up
        np.testing.assert_allclose(bf16_values(z), expected, rtol=2.0 ** -8, atol=1e-6)
