"""What runs a bundle's model: one interface, and the runtimes behind it.

- :mod:`.base` — :class:`~.base.Backend` (``run``, ``io``, ``run_batched``); it knows no backend;
- :mod:`.registry` — backend name → the module that opens it, imported only when asked for;
- :mod:`.onnxruntime` — ONNX Runtime: sessions made in one place, the image and raw-pixel models;
- :mod:`.tensorrt` — TensorRT through Polygraphy: engines, their build plan and build, the lint.
"""
