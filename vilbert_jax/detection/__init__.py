"""The bottom-up-attention Faster R-CNN region feature extractor in JAX (see README.md here).

    import vilbert_jax as vj
    cfg = vj.detection.DetectorConfig.from_yaml("config.yaml")
    params = vj.convert.frcnn_to_flax(vj.convert.load_state_dict("pytorch_model.bin"), cfg)
    regions = vj.detection.extract(params, cfg, [image_bgr_uint8])  # list[RegionFeatures]

``vj.detection.extract`` is the function; the module of the same name is the command-line
driver (``python -m vilbert_jax.detection.extract``), whose module object forwards calls to
``detector_extract`` so the name keeps working after the driver is imported.
"""

from vilbert_jax.detection.checkpoint import load_detector, save_detector
from vilbert_jax.detection.config import DetectorConfig
from vilbert_jax.detection.inference import extract, region_outputs
from vilbert_jax.detection.model import FasterRCNN
from vilbert_jax.detection.selection import Protocol, get_protocol

detector_extract = extract

__all__ = ["DetectorConfig", "FasterRCNN", "Protocol", "detector_extract", "extract",
           "get_protocol", "load_detector", "region_outputs", "save_detector"]
