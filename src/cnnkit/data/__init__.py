"""Data: load a named dataset, folder or CSV list into memory, decode robustly, batch on device.

See docs/architecture.md ("Data contract"). Everything other packages need is re-exported here.
"""

from cnnkit.data.cache import default_cache_dir
from cnnkit.data.datasets import list_datasets, load_data, sample_path
from cnnkit.data.decode import (
    DEFAULT_MAX_PIXELS,
    IMAGE_EXTENSIONS,
    ImageDecodeError,
    decode_image,
    resize_image,
)
from cnnkit.data.imageset import DataSplits, FeatureSet, ImageSet
from cnnkit.data.loader import channel_stats, iterate_batches, num_batches
from cnnkit.data.named import default_data_root
from cnnkit.data.preprocess import RESIZE_POLICIES, Preprocessing
from cnnkit.data.sources import stratified_split

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "IMAGE_EXTENSIONS",
    "RESIZE_POLICIES",
    "DataSplits",
    "FeatureSet",
    "ImageDecodeError",
    "ImageSet",
    "Preprocessing",
    "channel_stats",
    "decode_image",
    "default_cache_dir",
    "default_data_root",
    "iterate_batches",
    "list_datasets",
    "load_data",
    "num_batches",
    "resize_image",
    "sample_path",
    "stratified_split",
]

# Batch augmentation on the device and the show-batch grid (augment.py, show.py).
from cnnkit.data.augment import (  # noqa: E402
    PRESETS as AUGMENT_PRESETS,
)
from cnnkit.data.augment import (
    AugmentConfig,
    BatchAugment,
    augment_config,
    augment_generator,
)
from cnnkit.data.show import save_batch_grid, show_batch  # noqa: E402

__all__ += [
    "AUGMENT_PRESETS",
    "AugmentConfig",
    "BatchAugment",
    "augment_config",
    "augment_generator",
    "save_batch_grid",
    "show_batch",
]
