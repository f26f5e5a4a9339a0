"""Image generation with GANs: DCGAN and its class-conditional variant, sample grids, and the
Fréchet / kernel distances on offline EfficientNet-Lite0 features (fd_lite0, kid_lite0)."""
