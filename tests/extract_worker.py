"""One process of the multi-process extraction test: the real command line with the detector
replaced by the tests' stand-in (`test_extract.fake_extract`), so what runs is the process
wiring (jax.distributed, shares, barriers, merge).

    python tests/extract_worker.py EXTRACT_ARGS...
"""
import importlib
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402  pylint: disable=g-import-not-at-top

import vilbert_jax.detection as detection  # noqa: E402  pylint: disable=g-import-not-at-top
from test_extract import fake_extract  # noqa: E402  pylint: disable=g-import-not-at-top

detection.load_detector = lambda directory: ({"w": np.zeros(1, np.float32)}, None)
detection.detector_extract = lambda params, cfg, images, protocol: fake_extract(images)
extraction = importlib.import_module("vilbert_jax.detection.extract")
sys.exit(extraction.main(sys.argv[1:]))
