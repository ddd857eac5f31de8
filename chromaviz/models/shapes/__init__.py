"""The bundled shapes model: procedural captioned dataset, analytic checker, tokenizer, trainer and
the trained weights (``weights/shapes32``)."""

from .model import WEIGHTS, load_shapes

__all__ = ["WEIGHTS", "load_shapes"]
