"""The reference op inside onnxruntime: it returns what the reference computes, and Ctrl-C during a run is always
a KeyboardInterrupt, never an abort."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper, numpy_helper
from plugin_build import synthetic_onnx

from pipeline.common.onnx_io import ort_session
from pipeline.kernels.reference import ATTRIBUTES, PLUGIN_OP, window_attention_reference

SIZE = {"channels": 96, "height": 28, "width": 28}


@pytest.fixture(scope="module")
def four_blocks(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Alternating W-MSA / SW-MSA nodes; a batch of 4 runs in ~0.05 s, half of it in the Python op."""
    blocks = [{"window_size": 7, "shift_size": 3 * (i % 2), "num_heads": 3} for i in range(4)]
    return synthetic_onnx(tmp_path_factory.mktemp("reference_ort") / "four_blocks.onnx", blocks, **SIZE)


def tokens(batch: int) -> dict[str, np.ndarray]:
    shape = (batch, SIZE["height"] * SIZE["width"], SIZE["channels"])
    return {"tokens": np.random.default_rng(1).standard_normal(shape, np.float32)}


def test_session_output_is_the_reference(four_blocks: Path) -> None:
    """The op's output reaches onnxruntime as an array buffer (not the stock list): the same values."""
    model = onnx.load(str(four_blocks))
    weights = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    x = tokens(2)["tokens"]
    for b, node in enumerate(n for n in model.graph.node if n.op_type == PLUGIN_OP):
        attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute if a.name in ATTRIBUTES}
        qkv = x @ weights[f"qkv_w{b}"] + weights[f"qkv_b{b}"]
        x = window_attention_reference(qkv, weights[f"rel_bias{b}"], weights[f"qkv_b{b}"], **attributes)
        x = x @ weights[f"proj_w{b}"]
    np.testing.assert_allclose(ort_session(four_blocks).run(None, tokens(2))[0], x, rtol=0, atol=1e-5)


def test_run_outside_the_main_thread_and_handler_restored(four_blocks: Path) -> None:
    session, feed = ort_session(four_blocks), tokens(1)
    handler, options = signal.getsignal(signal.SIGINT), ort.RunOptions()
    expected = session.run(None, feed, options)[0]
    assert signal.getsignal(signal.SIGINT) is handler and not options.terminate
    with ThreadPoolExecutor(1) as pool:  # signal handlers can only be set from the main thread: left alone
        np.testing.assert_array_equal(pool.submit(session.run, None, feed).result()[0], expected)


# Each SIGINT must end the loop of runs through KeyboardInterrupt, then the next round starts; after the last
# round the child exits 130 like an interrupted CLI. An abort exits 134 (SIGABRT) and prints "terminate called".
CHILD = """
import sys
import numpy as np
from pipeline.common.onnx_io import ort_session

session = ort_session(sys.argv[1])
feed = {{"tokens": np.random.default_rng(1).standard_normal((4, {tokens}, {channels}), np.float32)}}
for _ in range({rounds}):
    print("running", flush=True)
    try:
        while True:
            session.run(None, feed)
    except KeyboardInterrupt:
        print("interrupted", flush=True)
sys.exit(130)
"""


def test_ctrl_c_at_random_moments_always_raises_keyboard_interrupt(four_blocks: Path) -> None:
    rounds, chooser = 8, random.Random(0)
    script = CHILD.format(rounds=rounds, tokens=SIZE["height"] * SIZE["width"], channels=SIZE["channels"])
    child = subprocess.Popen([sys.executable, "-c", script, str(four_blocks)], text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    watchdog = threading.Timer(60, child.kill)  # a hung child fails the test instead of blocking it
    watchdog.start()
    try:
        seen = []
        for _ in range(rounds):
            if child.stdout.readline().strip() != "running":
                break
            threading.Event().wait(chooser.uniform(0.05, 0.5))  # a few runs in: most signals land in the op
            child.send_signal(signal.SIGINT)
            seen.append(line := child.stdout.readline().strip())
            if line != "interrupted":
                break
        returncode = child.wait(timeout=30)
    finally:
        watchdog.cancel()
        child.kill()
    stderr = child.stderr.read()
    assert "terminate called" not in stderr
    assert (returncode, seen) == (130, ["interrupted"] * rounds), stderr


def test_an_error_inside_the_op_is_an_error_not_an_abort(tmp_path: Path) -> None:
    """A node whose attributes contradict its inputs: the reference raises inside onnxruntime, which used to abort
    the process (exit 134); now the run raises a PipelineError saying what is wrong. In a child process, so a
    regression fails this test instead of killing pytest."""
    bad = synthetic_onnx(tmp_path / "bad.onnx", [{"window_size": 7, "shift_size": 0, "num_heads": 5}], **SIZE)
    script = (
        "import sys, numpy as np\n"
        "from pipeline.common.errors import PipelineError\n"
        "from pipeline.common.onnx_io import ort_session\n"
        f"x = np.zeros((1, {SIZE['height'] * SIZE['width']}, {SIZE['channels']}), np.float32)\n"
        "try:\n"
        "    ort_session(sys.argv[1]).run(None, {'tokens': x})\n"
        "except PipelineError as error:\n"
        "    print(error)\n"
        "    sys.exit(2)\n")
    result = subprocess.run([sys.executable, "-c", script, str(bad)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "SwinWindowAttention reference op failed" in result.stdout and "num_heads=5 does not divide C=96" in \
        result.stdout

