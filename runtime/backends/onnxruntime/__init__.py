"""ONNX Runtime: :mod:`.session` creates every session (providers, options, the one refusal); :mod:`.model` runs
the bundle's normalised image model and its raw-pixel models."""
