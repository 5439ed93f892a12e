# Swin Transformer -> TensorRT. `make engine VARIANT=T` runs the pipeline, `make test` the tests.
# Both set up .venv from this repository's own pinned files first.

VARIANT   ?= T
PRECISION ?= fp16
BATCH     ?= 1,8,32
BACKEND   ?= auto
SM        ?= 86
# plugin: the SwinWindowAttention plugin; tensorrt: TensorRT's own fused attention (no plugin library, own folder).
ATTENTION ?= plugin
PYTHON    ?= $(shell command -v python3.11 || command -v python3)
VENV      := .venv
PY        := $(VENV)/bin/python
STAMP     := $(VENV)/.installed
JOBS      ?= $(shell nproc 2>/dev/null || echo 2)
# JetPack and NVIDIA's containers install TensorRT's Python bindings system-wide: let the venv see them there.
SYSTEM_TENSORRT := $(shell $(PYTHON) -c "import tensorrt" 2>/dev/null && echo yes)
VENV_ARGS ?= $(if $(SYSTEM_TENSORRT),--system-site-packages)
# TensorRT-RTX (the rtx extra) has x86_64 wheels only: elsewhere (Jetson, aarch64) the venv goes without it.
EXTRAS     = $(if $(filter x86_64,$(shell uname -m)),test$(comma)rtx,test)
# The model: VARIANT, and for a detection backbone FEATURES=1 (its four stage maps) and IMG_SIZE=HxW (e.g. 800x1333).
MODEL_ARGS = --variant $(VARIANT) $(if $(FEATURES),--features-only) $(if $(IMG_SIZE),--img-size $(IMG_SIZE))
# BUILD_DIR unset: the pipeline names the folder after the model (build/swin_t, build/swin_t_features_800x1333,
# build/swin_t_trtattn), so different models never share one.
OUT_DIR_ARGS = $(if $(BUILD_DIR),--out-dir $(BUILD_DIR))
MAX_BATCH  = $(lastword $(subst $(comma), ,$(BATCH)))
comma     := ,

.PHONY: venv onnx engine triton triton-serve triton-load test lint plugin clean bench profile format device-wheels kernel-resources

# The TensorRT plugin, its CUDA kernel (C ABI) and the host reference; see plugins/swin_window_attention/README.md.
plugin: venv
	cmake -S . -B build/plugin -DCMAKE_BUILD_TYPE=Release -DSWIN_PYTHON=$(abspath $(PY))
	cmake --build build/plugin -j$(JOBS)

venv: $(STAMP)

$(STAMP): pyproject.toml requirements/constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV_ARGS) $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c requirements/constraints.txt -e '.[$(EXTRAS)]'
	@touch $@

onnx: venv
	$(PY) -m pipeline onnx $(MODEL_ARGS) --max-batch $(MAX_BATCH) --attention $(ATTENTION) $(OUT_DIR_ARGS) \
		$(if $(CHECKPOINT),--checkpoint $(CHECKPOINT))

# Every stage into $(BUILD_DIR): export, surgery, check, precision (FP16 / INT8 calibration), engine build
# (TensorRT when installed with a GPU, else TensorRT-RTX ahead of time for SM), verification. Stages whose
# inputs are unchanged are reused. IMAGES: verification photos (default: a quarter of CALIB_DIR, held out of
# calibration; docs/design.md §5d); ENGINE_ARGS: more flags of `python -m pipeline engine`.
engine: venv $(if $(filter tensorrt,$(ATTENTION)),,plugin)
	$(PY) -m pipeline engine $(MODEL_ARGS) --precision $(PRECISION) --batch $(BATCH) \
		--backend $(BACKEND) --sm $(SM) --attention $(ATTENTION) $(OUT_DIR_ARGS) \
		$(if $(CHECKPOINT),--checkpoint $(CHECKPOINT)) $(if $(CALIB_DIR),--calib-dir $(CALIB_DIR)) \
		$(if $(CALIB_SAMPLES),--calib-samples $(CALIB_SAMPLES)) $(if $(IMAGES),--images $(IMAGES)) $(ENGINE_ARGS)

# A Triton Inference Server model repository in TRITON_DIR from the engine `make engine` wrote for VARIANT and
# PRECISION into BUILD_DIR (it builds none: a missing engine is an error that says which `make engine` to run).
# Its README.md has the tritonserver command and the client's. TRITON_ARGS: more flags of `python -m pipeline
# triton` (e.g. --engines a.engine b.engine for several compute capabilities, --instances 2). TRITON_BACKEND=python:
# the CPU verification route instead (the engine's typed ONNX on onnxruntime with the reference op, same contract;
# installs tritonserver and numpy<2 for its Python backend into build/serving once, requirements/serving.txt).
TRITON_DIR ?= build/triton
TRITON_BACKEND ?= tensorrt
triton: venv
	$(PY) -m pipeline triton $(MODEL_ARGS) --attention $(ATTENTION) --precision $(PRECISION) \
		$(if $(BUILD_DIR),--engine-dir $(BUILD_DIR)) --triton-backend $(TRITON_BACKEND) \
		--out $(TRITON_DIR) $(TRITON_ARGS)

# Serve TRITON_DIR (written with TRITON_BACKEND=python) with build/serving's tritonserver on 127.0.0.1:8000 (HTTP)
# and :8001 (gRPC) until Ctrl-C: the CPU verification route, no GPU needed.
triton-serve: venv
	$(PY) -m pipeline.serving.tritonserver $(TRITON_DIR)

# Throughput and p50/p95/p99 latency of TRITON_MODEL served at TRITON_URL (gRPC) at concurrency 1, 4, 8: warm-up, then
# a LOAD_SECONDS window each, tritonclient's async API; build/bench/triton_load_<model>_<UTC time>.json.
TRITON_URL   ?= localhost:8001
TRITON_MODEL ?= swin_t
LOAD_SECONDS ?= 10
triton-load: venv
	$(PY) -m pipeline.serving.triton_load --url $(TRITON_URL) --model $(TRITON_MODEL) --seconds $(LOAD_SECONDS) \
		$(if $(LOAD_SIZE),--img-size $(LOAD_SIZE))

# Every deployment path this machine can run, side by side: build/bench/bench_<v>_<device>_<UTC time>.{json,md,png}
# (git-ignored, never overwritten); `python -m benchmarks.report --commit <json>` copies one to benchmarks/results/.
# BATCH, only when given, sets every path's batches (defaults: GPU 1,8,32,64; CPU 1,8). BENCH_ARGS: more flags.
# No dependency on `plugin`: a CPU-only run need not compile CUDA; the TensorRT paths then say to run `make plugin`.
bench: venv
	$(PY) -m benchmarks.bench $(MODEL_ARGS) --precision $(PRECISION) \
		$(if $(filter command line environment,$(origin BATCH)),--batch $(BATCH)) $(BENCH_ARGS)

# TensorRT's per-layer times of the plugin engine and the native one (needs TensorRT and a GPU; says so otherwise).
profile: venv
	$(PY) -m benchmarks.profile $(MODEL_ARGS) --precision $(PRECISION) $(if $(BUILD_DIR),--out $(BUILD_DIR)/profile.json)

# For a lent GPU machine without network (benchmarks/device_check.py): the pinned packages its image lacks, as
# wheels for its Python 3.12, into .whl/ (git-ignored), which the device run carries and installs.
device-wheels: venv
	$(PY) -m benchmarks.device_check --download-wheels

# Registers, shared memory, spills and occupancy of every kernel and Triton image for ARCH (default 90 87 89), read
# from the compiled libraries without a GPU; exits 1 when a kernel spills to local memory.
kernel-resources: venv
	$(PY) -m benchmarks.kernel_resources $(if $(ARCH),--arch $(ARCH))

test: lint
	$(PY) -m pytest -q tests

# ruff over the Python, clang-format (.clang-format) over our C++/CUDA: `make format` applies it.
lint: venv
	$(PY) -m ruff check .
	$(VENV)/bin/clang-format --dry-run -Werror --style=file $(FORMAT_FILES)

# clang-format (.clang-format) over the project's own C++/CUDA; the pinned clang-format comes with the test extra.
CLANG_FORMAT ?= $(firstword $(wildcard $(VENV)/bin/clang-format) $(shell command -v clang-format))
FORMAT_FILES  = $(wildcard plugins/swin_window_attention/*.h plugins/swin_window_attention/*.cpp \
                           plugins/swin_window_attention/*.cu) deploy/trt_runner.cpp
format:
	@test -n "$(CLANG_FORMAT)" || { echo "clang-format not found: run 'make venv' (the test extra pins it), or" \
		"'$(PY) -m pip install -c requirements/constraints.txt clang-format'" >&2; exit 1; }
	$(CLANG_FORMAT) -i --style=file $(FORMAT_FILES)

clean:
	rm -rf build
