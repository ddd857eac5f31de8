"""diffusers pipelines as chromaviz models: the adapter (``from_pipeline``, ``load_pipeline``), the
denoisers of UNet pipelines (pixel and latent UNets, text encoders, guidance) and of transformer
pipelines (SD3, Flux.1, PixArt-Σ, Sana), latent previews, and the text-to-pixels pipeline class of the shapes
model. Any other text-to-image pipeline is recorded as it runs by
:func:`chromaviz.sampling.pipeline_call.record_pipeline`."""
