"""Semantic segmentation: a class for every pixel. Data formats, inspection and mask-aware
augmentation (the contract is in ``cnnkit.tasks.segment.dataset``)."""
