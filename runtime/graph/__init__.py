"""What ringfold knows about a bundle's ONNX graphs, without the ``onnx`` package.

- :mod:`.onnx_subset` — the dozen ONNX protobuf messages the head rewrite needs, declared with protobuf alone;
- :mod:`.head_rewrite` — replace the classification head baked into a model (``ringfold relabel``);
- :mod:`.precision_policy` — the nodes every reduced-precision graph keeps in fp32 (export, TensorRT, lint).
"""
