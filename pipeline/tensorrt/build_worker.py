"""``python -m pipeline.tensorrt.build_worker REQUEST``: the child process in which ``pipeline.tensorrt.build`` runs a
TensorRT-RTX build, with what must be set at process start: ``LD_LIBRARY_PATH`` for the ONNX parser's unversioned
library and ``POLYGRAPHY_USE_TENSORRT_RTX=1`` for Polygraphy's loaders.

Ctrl-C reaches the child too (the terminal signals the whole process group). Until the build has installed its own
handler, an interrupt is only recorded, so one that lands while the child is still importing ends it quietly with
status 130 instead of printing an import traceback under the parent's ``interrupted:`` line.
"""

import signal
import sys

_interrupted: list[int] = []
signal.signal(signal.SIGINT, lambda signum, frame: _interrupted.append(signum))

from pipeline.tensorrt.build import child_main  # noqa: E402  (after the handler: imports take a second)

sys.exit(child_main(sys.argv[1], interrupted=_interrupted))
