"""TensorRT through Polygraphy; no module here imports tensorrt or polygraphy when it is imported.

In import order: :mod:`.stack` (the imports, versions and log), :mod:`.cuda` (the GPU, through
libcudart or nvidia-smi), :mod:`.calibration` (the INT8 calibration cache's text), :mod:`.engines`
(which engines this machine may run), :mod:`.plan` (options → build plan, every refusal),
:mod:`.runner` (run an engine), :mod:`.build` (the plan through Polygraphy, ``--register``),
:mod:`.trtexec` (the plan as a trtexec line) and :mod:`.lint` (``ringfold check``).
"""
