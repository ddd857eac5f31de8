"""Pictures of a run, no kernel needed: image strips, chromatograms and schedule figures."""
