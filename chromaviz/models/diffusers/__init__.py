"""diffusers pipelines as chromaviz models: the adapter (pixel and latent UNets, text encoders,
guidance), latent previews, and the text-to-pixels pipeline class of the shapes model."""
