"""Files for the servers a bundle is deployed to, written from a verified bundle alone (no torch, no onnx).

- :mod:`.deepstream` — nvinfer configs, labels, the INT8 cache and a deepstream-app pipeline;
- :mod:`.triton_repo` — a Triton model repository (:mod:`.triton_config` renders ``config.pbtxt``,
  :mod:`.triton_readme` the README beside each model).
"""
